//! `--closes-per-iteration`: a crowd hanging up at once is handled a few
//! sessions an iteration, oldest first, and nothing of it is lost: every
//! member still gets each LEFT, every nick is free again, and a session
//! that stays is served meanwhile.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Daemon, WAIT};
use muxchat::codec::{code, ServerMessage};

#[test]
fn a_crowd_hanging_up_is_reaped_in_batches_and_every_left_arrives() {
    let d = Daemon::start(&["--closes-per-iteration", "2", "--rate", "0"]);
    let mut watcher = d.register("watcher");
    watcher.join("#crowd");
    let mut crowd = Vec::new();
    for i in 0..40 {
        let nick = format!("c{i}");
        let mut c = d.register(&nick);
        c.join("#crowd");
        crowd.push(c);
    }
    // JOINED of each newcomer, then the crowd leaves at once.
    for _ in 0..40 {
        watcher.recv_code(code::JOINED);
    }
    drop(crowd);
    let mut left = HashSet::new();
    while left.len() < 40 {
        let r = watcher
            .try_recv(WAIT)
            .unwrap_or_else(|| panic!("only {} LEFT of 40", left.len()));
        if let ServerMessage::Left { nick, .. } = r.msg() {
            assert!(left.insert(nick.to_string()), "LEFT twice for {nick}");
        }
    }
    // Every nick is free again, and the watcher is still served.
    let _again = d.register("c0");
    let _last = d.register("c39");
    watcher.assert_alive();
    watcher.expect_silence(Duration::from_millis(200));
}
