//! Regression: the read budget must hold under a sustained flood.
//!
//! A session that hit its per-iteration read budget is carried over and
//! read again next iteration. It was read twice when it also had a fresh
//! event (once for the event, once for the carry-over), and put back on the
//! carried list twice, so its share grew by one budget every iteration and
//! starved everyone else. With `--trace-events` the daemon logs one
//! "reads took" line per session read; this test floods one session and
//! checks that no session is read twice between two poll wake-ups.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::{Client, Daemon};
use muxchat::codec::{code, ClientMessage};

#[test]
fn a_flooding_session_gets_one_read_budget_per_iteration() {
    let mut cmd = Daemon::command(&["--max-outbuf", "67108864", "--trace-events"]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd);
    let addr = d.addr;
    // Collect the trace on a thread so the daemon never blocks on stderr.
    let mut stderr = d.take_stderr().expect("stderr piped");
    let trace = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });

    let mut sender = Client::connect(addr);
    sender.send(&ClientMessage::Hello {
        version: 1,
        nick: "flood",
    });
    sender.recv_code(code::WELCOME);
    sender.send(&ClientMessage::Join { room: "#f" });
    sender.recv_code(code::JOINED);

    // 4 MB of SAYs in one go: far more than one read budget (256 KiB), so
    // the daemon must carry the sender over many iterations.
    let text = "y".repeat(4000);
    let mut flood = Vec::new();
    for _ in 0..1000 {
        ClientMessage::Say {
            room: "#f",
            text: &text,
        }
        .encode(&mut flood);
    }
    let mut writer = sender.stream.try_clone().unwrap();
    let send = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &flood));
    // Read our own echoes so the daemon's output to us keeps moving.
    let mut echoes = 0;
    while echoes < 1000 {
        let r = sender
            .try_recv(Duration::from_secs(20))
            .expect("echoes stopped");
        if r.code == code::MESSAGE {
            echoes += 1;
        }
    }
    send.join().unwrap().unwrap();

    d.kill();
    let trace = trace.join().unwrap();

    let mut read_this_wakeup = HashSet::new();
    let (mut reads, mut carried) = (0, 0);
    for line in trace.lines() {
        if line.contains("poll woke:") {
            read_this_wakeup.clear();
        } else if line.contains("reads took") {
            reads += 1;
            if line.contains("budget spent") {
                carried += 1;
            }
            let start = line.find("Token(").expect("a token in the read line");
            let end = start + line[start..].find(')').expect("end of the token");
            let token = line[start..=end].to_string();
            assert!(
                read_this_wakeup.insert(token.clone()),
                "{token} was read twice in one loop iteration:\n{line}"
            );
        }
    }
    assert!(reads > 10, "expected many reads in the trace, saw {reads}");
    assert!(
        carried > 5,
        "the flood never hit the read budget ({carried} times)"
    );
}
