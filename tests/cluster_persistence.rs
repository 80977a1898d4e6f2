//! History that survives a restart of everything (docs/OPERATIONS.md,
//! "History that survives a restart"): one node with `--redis` on a Redis
//! with `appendonly yes`. The daemon stops (SIGTERM, its drain), Redis
//! stops (SIGTERM: it writes its append-only file), Redis starts again on
//! the same directory, the daemon starts again: the room's HISTORY still
//! has every message, under the same epoch, and seq goes on from where it
//! was.
//!
//! Needs Debian's redis-server (the cluster tests' fixture names it).

mod cluster_support;
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::*;
use common::Daemon;
use muxchat::codec::ClientMessage;

/// A redis-server with `appendonly yes` in a directory of the test's own,
/// stopped with SIGTERM (so it finishes its file) by PID.
struct DurableRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl DurableRedis {
    #[track_caller]
    fn start() -> DurableRedis {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: apt-get install redis-server (.ci/run installs it)"
        );
        let dir = std::env::temp_dir().join(format!("muxchat-aof-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut r = DurableRedis {
            child: None,
            port: 0,
            dir,
        };
        for _ in 0..5 {
            r.port = free_port();
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `self.port` over `self.dir`; false if it
    /// exited or did not answer PING within 10 s.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REDIS_SERVER}: {e}"));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if redis_command(addr, &["PING"]).as_deref() == Some("+PONG") {
                self.child = Some(child);
                return true;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as `systemctl stop redis` sends, and waits for the exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("redis runs");
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "redis-server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port and directory.
    #[track_caller]
    fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node as OPERATIONS.md starts it: the room outlives its last member.
fn node_on(redis: &DurableRedis) -> Daemon {
    node(
        &redis.url(),
        &["--node-name", "solo", "--room-ttl-ms", "600000"],
    )
}

/// SIGTERM and the drain, as `systemctl stop muxchatd` does.
fn stop(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(20)).expect("daemon exit");
    assert!(status.success(), "{status:?}");
}

#[test]
fn history_and_seq_survive_restarting_the_daemon_and_an_appendonly_redis() {
    let mut redis = DurableRedis::start();
    let d = node_on(&redis);
    let mut alice = register2(&d, "alice");
    let before = join2(&mut alice, "#keep");
    let texts: Vec<String> = (1..=5).map(|i| format!("kept {i}")).collect();
    let mut said = Vec::new();
    say_all(&mut alice, "#keep", &texts, &mut said);
    let seqs: Vec<u64> = said.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=5).collect::<Vec<_>>(), "{said:?}");
    drop(alice);
    stop(d);

    redis.terminate();
    assert!(
        std::fs::read_dir(&redis.dir)
            .expect("the Redis directory")
            .next()
            .is_some(),
        "Redis wrote no append-only file in {}",
        redis.dir.display()
    );
    redis.start_again();

    let d = node_on(&redis);
    let mut bob = register_eventually(&d, 2, "bob", Duration::from_secs(20));
    let after = join2(&mut bob, "#keep");
    assert_eq!(after.epoch, before.epoch, "the room came back as itself");
    assert_eq!(after.last_seq, 5, "seq is where it was");
    let answer = history(&mut bob, "#keep", after.epoch, 0, 100);
    let got: Vec<(u64, &str, &str)> = answer
        .messages
        .iter()
        .map(|m| (m.seq, m.from.as_str(), m.text.as_str()))
        .collect();
    let want: Vec<(u64, &str, &str)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64 + 1, "alice", t.as_str()))
        .collect();
    assert_eq!(got, want);
    // And seq goes on.
    bob.send(&ClientMessage::Say {
        room: "#keep",
        text: "after the restart",
    });
    let next = wait_message(&mut bob, "after the restart");
    assert_eq!(next.seq, 6);
}
