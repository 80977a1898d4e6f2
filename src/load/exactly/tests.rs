//! The exactly-once bookkeeping's unit tests: bit sets, a sender's
//! resends, the check across senders and members, the HELLO with a token.
//! Apart so the bookkeeping itself reads in one sitting.

use super::*;
use crate::codec::{decode, Decoded};

fn stamp(publisher: u32, count: u32) -> Stamp {
    Stamp {
        sent_ns: 1,
        publisher,
        count,
    }
}

fn text(publisher: u32, count: u32) -> Vec<u8> {
    let mut v = Vec::new();
    stamp(publisher, count).write(&mut v, 40);
    v
}

fn sent_ids(out: &mut OutBuf) -> Vec<u64> {
    let mut bytes = out.pending_bytes().to_vec();
    out.consume(bytes.len());
    let mut ids = Vec::new();
    while let Decoded::Frame(f, n) = decode(&bytes, 1 << 20) {
        match ClientV3::decode(f.code, f.payload).unwrap() {
            ClientV3::Say { msg_id, .. } => ids.push(msg_id),
            other => panic!("{other:?}"),
        }
        bytes.drain(..n);
    }
    ids
}

#[test]
fn bitsets_count_and_compare() {
    let mut a = BitSet::default();
    assert!(a.insert(3) && a.insert(200) && !a.insert(3));
    assert_eq!(a.len(), 2);
    let mut b = BitSet::default();
    b.insert(3);
    assert_eq!(a.missing_from(&b), 1);
    assert_eq!(b.missing_from(&a), 0);
    assert!(a.contains(200) && !a.contains(201));
}

#[test]
fn a_sender_resends_after_a_drop_and_tells_dedup_from_new() {
    let (mut s, mut out, mut scratch) = (Sender::default(), OutBuf::default(), Vec::new());
    for count in 0..4 {
        assert!(s.say(&mut out, &mut scratch, "#r", stamp(0, count), 40));
    }
    assert_eq!(sent_ids(&mut out), [1, 2, 3, 4]);
    // 1 answered before the drop.
    assert_eq!(
        s.result(1, 10, 0, 0, &mut out),
        Answer::Accepted { dedup: false }
    );
    // The drop: 2, 3, 4 go again; the rejoin's ROOM_STATE said 11.
    assert_eq!(s.resend_all(&mut out), 3);
    assert_eq!(sent_ids(&mut out), [2, 3, 4]);
    // 2 had been taken (seq 11): deduplicated. 3 is new (seq 12).
    assert_eq!(
        s.result(2, 11, 0, 11, &mut out),
        Answer::Accepted { dedup: true }
    );
    assert_eq!(
        s.result(3, 12, 0, 11, &mut out),
        Answer::Accepted { dedup: false }
    );
    // 4: UNAVAILABLE, sent again at once, then refused.
    assert_eq!(
        s.result(4, 0, ErrorCode::Unavailable as u16, 11, &mut out),
        Answer::Again
    );
    assert_eq!(sent_ids(&mut out), [4]);
    assert_eq!(
        s.result(4, 0, ErrorCode::RateLimited as u16, 11, &mut out),
        Answer::Refused
    );
    assert_eq!(s.result(4, 0, 0, 11, &mut out), Answer::Unknown);
    assert_eq!(s.accepted.len(), 3);
    assert_eq!(s.waiting(), 0);
}

#[test]
fn the_check_finds_missing_and_duplicated_msg_ids() {
    let mut accepted = BitSet::default();
    for id in 1..=5 {
        accepted.insert(id);
    }
    let senders = [SenderEnd {
        room: 0,
        publisher: 7,
        accepted,
    }];
    let member = |counts: &[u32], alive: bool| {
        let mut seen = Seen::default();
        for &c in counts {
            seen.saw(&text(7, c));
        }
        MemberEnd::new(0, alive, seen)
    };
    // Exactly once.
    let ok = check(&senders, &[member(&[0, 1, 2, 3, 4], true)]);
    assert_eq!(
        (ok.accepted, ok.expected, ok.missing, ok.duplicates),
        (5, 5, 0, 0)
    );
    // One missing (msg_id 3), one twice (msg_id 1), one unconfirmed (6).
    let bad = check(&senders, &[member(&[0, 0, 1, 3, 4, 5], true)]);
    assert_eq!((bad.missing, bad.duplicates, bad.unconfirmed), (1, 1, 1));
    // A member cut for good is not owed anything; another room's
    // member is not checked against this publisher.
    let cut = check(&senders, &[member(&[], false)]);
    assert_eq!((cut.expected, cut.missing), (0, 0));
    let mut other = member(&[], true);
    other.room = 1;
    assert_eq!(check(&senders, &[other]).missing, 0);
}

#[test]
fn runs_interleaved_publishers_and_repeats_are_all_counted() {
    let mut seen = Seen::default();
    let ids = [
        (1, 0),
        (1, 1),
        (9, 0),
        (1, 2),
        (9, 1),
        (1_000_000, 5),
        (9, 1),
    ];
    for (p, c) in ids {
        seen.saw(&text(p, c));
    }
    // A long run across word boundaries, then part of it again.
    for c in 100..300 {
        seen.saw(&text(1, c));
    }
    for c in 250..260 {
        seen.saw(&text(1, c));
    }
    let seen = MemberEnd::new(0, true, seen).seen;
    assert_eq!(seen.of(1).map(BitSet::len), Some(3 + 200));
    assert!(seen
        .of(1)
        .is_some_and(|b| b.contains(101) && b.contains(300)));
    assert_eq!(seen.of(9).map(BitSet::len), Some(2));
    assert!(seen.of(1_000_000).is_some_and(|b| b.contains(6)));
    assert_eq!(seen.of(2), None);
    assert_eq!(seen.duplicates, 1 + 10);
}

#[test]
fn a_range_insert_counts_what_was_there() {
    let mut b = BitSet::default();
    assert_eq!(b.insert_range(60, 200), 0);
    assert_eq!(b.len(), 140);
    assert!(!b.contains(59) && b.contains(60) && b.contains(199) && !b.contains(200));
    b.insert(300);
    assert_eq!(b.insert_range(0, 64), 4);
    assert_eq!(b.insert_range(128, 192), 64);
    assert_eq!(b.insert_range(5, 5), 0);
    assert_eq!(b.len(), 201);
}

#[test]
fn hello_carries_the_token_and_the_kept_key() {
    let mut x = Exact {
        token: TokenText("t.o.k".into()),
        ..Exact::default()
    };
    assert_eq!(format!("{:?}", x.token), "<5 bytes>");
    x.welcome(&ServerV3::Welcome {
        version: 3,
        nick: "a",
        server: "s",
        heartbeat_ms: 1,
        max_payload: 1,
        account: "a",
        role: 1,
        session_key: Secret("k1"),
        token_exp_ms: 0,
    });
    let mut out = OutBuf::default();
    x.hello(&mut out);
    let bytes = out.pending_bytes().to_vec();
    let Decoded::Frame(f, _) = decode(&bytes, 1 << 20) else {
        panic!()
    };
    assert_eq!(
        ClientV3::decode(f.code, f.payload).unwrap(),
        ClientV3::Hello {
            version: 3,
            nick: "",
            token: Secret("t.o.k"),
            session_key: Secret("k1")
        }
    );
}
