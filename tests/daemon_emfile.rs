//! Running out of file descriptors: accept must neither spin nor stall.
//!
//! The daemon runs under a hard RLIMIT_NOFILE of 40 with `--max-clients`
//! far above it, so it is the descriptor limit, not the client limit, that
//! bites. Connections past it must get ERROR(SERVER_FULL) (through the
//! reserve-descriptor trick), the daemon must stay idle rather than spin on
//! a listener it cannot drain, and it must serve again once descriptors
//! are free.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use common::{cpu_ticks, Client, Daemon};
use muxchat::codec::{ClientMessage, ErrorCode, ServerMessage};

const FD_LIMIT: libc::rlim_t = 40;

#[test]
fn out_of_descriptors_turns_clients_away_without_spinning_and_recovers() {
    let mut cmd = Daemon::command(&["--max-clients", "1000"]);
    cmd.env("RUST_LOG", "error").stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing
    // else between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let d = Daemon::spawn(cmd);
    let addr = d.addr;

    // Register clients until the daemon says it is full.
    let mut held = Vec::new();
    let mut turned_away = 0;
    for i in 0..(FD_LIMIT as usize + 20) {
        let mut c = Client::connect(addr);
        let nick = format!("fd{i}");
        c.send(&ClientMessage::Hello {
            version: 1,
            nick: &nick,
        });
        let r = c.recv();
        match r.msg() {
            ServerMessage::Welcome { .. } => held.push(c),
            ServerMessage::Error { error, .. } => {
                assert_eq!(ErrorCode::from_u16(error), Some(ErrorCode::ServerFull));
                c.expect_closed();
                turned_away += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        turned_away >= 15,
        "expected the descriptor limit to turn clients away, only {turned_away} were"
    );
    assert!(held.len() >= 20, "only {} clients were served", held.len());

    // With the limit reached and clients still connected, the daemon must
    // sleep, not spin on the listener.
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(d.pid()) - before;
    assert!(
        spent < 50,
        "daemon used {spent} ticks of CPU in 2 s while idle"
    );

    // Free descriptors: new clients are served again.
    held.truncate(held.len() - 5);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::connect(addr);
    c.send(&ClientMessage::Hello {
        version: 1,
        nick: "again",
    });
    match c.recv().msg() {
        ServerMessage::Welcome { nick, .. } => assert_eq!(nick, "again"),
        other => panic!("expected WELCOME after descriptors were freed, got {other:?}"),
    }
    // The clients served before are still alive.
    let first = &mut held[0];
    first.send(&ClientMessage::Ping { token: 7 });
    assert!(matches!(
        first.recv().msg(),
        ServerMessage::Pong { token: 7 }
    ));
}
