//! Helpers for the `muxchat` client tests: the client as a process with
//! piped stdin and stdout ([`Chat`]), and a TCP proxy between it and the
//! daemon ([`Proxy`]) that can cut connections, refuse new ones, freeze a
//! connection silently, or point at another daemon (a restart).
//!
//! The proxy uses plain threads: it is test code, not the daemon.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a client test waits for a line it expects.
pub const WAIT: Duration = Duration::from_secs(15);

/// A `muxchat` process with piped stdin and a thread collecting its stdout.
pub struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line seen so far, for failure messages and counting.
    pub seen: Vec<String>,
}

impl Chat {
    /// Starts `muxchat` connected straight to `daemon`.
    pub fn start(daemon: &crate::common::Daemon, args: &[&str]) -> Chat {
        Chat::start_at(&daemon.addr.to_string(), args)
    }

    /// Starts `muxchat --connect ADDR ARGS...`.
    pub fn start_at(addr: &str, args: &[&str]) -> Chat {
        Chat::start_with_env(addr, args, &[])
    }

    /// Starts `muxchat --connect ADDR ARGS...` with extra environment
    /// variables (and without an inherited `MUXCHAT_TOKEN`).
    pub fn start_with_env(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_muxchat"))
            .env_remove("MUXCHAT_TOKEN")
            .envs(env.iter().copied())
            .arg("--connect")
            .arg(addr)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn muxchat");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Chat {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Types one line.
    #[track_caller]
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to muxchat's stdin");
        stdin.flush().expect("flush");
    }

    /// Waits for a printed line equal to `want`, skipping others.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        self.expect_where(want, |l| l == want);
    }

    /// Waits for a printed line that satisfies `pred`.
    #[track_caller]
    pub fn expect_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "muxchat never printed {what:?}; it printed {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Collects whatever is printed within `quiet` (for "nothing more").
    pub fn settle(&mut self, quiet: Duration) {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.seen.push(line);
        }
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "muxchat did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its stderr, once it has exited.
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One proxied connection: the client's socket and the daemon's.
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    frozen: Arc<AtomicBool>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    /// New connections are accepted and closed at once.
    down: AtomicBool,
    stop: AtomicBool,
    pairs: Mutex<Vec<Pair>>,
    /// Daemon-side sockets of frozen pairs, kept open and unread.
    zombies: Mutex<Vec<TcpStream>>,
}

/// A TCP proxy on 127.0.0.1 in front of a daemon.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            pairs: Mutex::new(Vec::new()),
            zombies: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if sh.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = *sh.target.lock().unwrap();
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let frozen = Arc::new(AtomicBool::new(false));
                pump(&client, &upstream, frozen.clone());
                pump(&upstream, &client, frozen.clone());
                sh.pairs.lock().unwrap().push(Pair {
                    client,
                    upstream,
                    frozen,
                });
            }
        });
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `ADDR` for `muxchat --connect`.
    pub fn connect_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts every live connection: both ends see the connection close.
    pub fn cut_all(&self) {
        for p in self.shared.pairs.lock().unwrap().drain(..) {
            let _ = p.client.shutdown(Shutdown::Both);
            let _ = p.upstream.shutdown(Shutdown::Both);
        }
    }

    /// Cuts every live connection on the client's side only: the daemon's
    /// side stays open and silent, as after a drop nobody noticed, until
    /// the daemon's heartbeat gives up on it.
    pub fn freeze_client_side(&self) {
        for p in self.shared.pairs.lock().unwrap().drain(..) {
            p.frozen.store(true, Ordering::SeqCst);
            let _ = p.client.shutdown(Shutdown::Both);
            self.shared.zombies.lock().unwrap().push(p.upstream);
        }
    }

    /// While down, new connections are accepted and closed at once.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// New connections go to `target` from now on.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        for z in self.shared.zombies.lock().unwrap().drain(..) {
            let _ = z.shutdown(Shutdown::Both);
        }
        // Wake the acceptor so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// Copies `from` to `to` on a thread until either ends. The end is passed
/// on (a FIN for a FIN) unless the pair is frozen.
fn pump(from: &TcpStream, to: &TcpStream, frozen: Arc<AtomicBool>) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if !frozen.load(Ordering::SeqCst) {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
}

/// How many printed lines end with `suffix`.
pub fn count_ending(lines: &[String], suffix: &str) -> usize {
    lines.iter().filter(|l| l.ends_with(suffix)).count()
}
