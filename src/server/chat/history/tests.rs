//! The history ring's own tests: budgets, eviction, plans, epochs.

use super::epochs::mix;
use super::*;
use crate::codec::{decode, Decoded};

const E: u64 = 0xfeed;
const MORE: u8 = history_status::MORE;
const GAP: u8 = history_status::GAP;
const NEW_EPOCH: u8 = history_status::NEW_EPOCH;

fn limits(per_room: usize, max_bytes: usize, reply_cap: u16) -> Limits {
    Limits {
        per_room,
        max_bytes,
        reply_cap,
    }
}

/// A history with one room holding seqs `1..=n` ("m1", "m2", ...).
fn room_with(n: u64, l: Limits) -> (History, RingId) {
    let mut h = History::new(l);
    let id = h.open();
    for seq in 1..=n {
        h.store(id, "#r", seq, 1000 + seq, "ann", &format!("m{seq}"));
    }
    (h, id)
}

/// The seqs (and texts) of the frames a plan sends, decoded.
fn sent(h: &History, id: RingId, plan: &Plan) -> Vec<u64> {
    let (a, b) = h.frames(id, plan);
    let bytes = [a, b].concat();
    let mut seqs = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let Decoded::Frame(f, used) = decode(rest, u32::MAX) else {
            panic!("stored bytes are whole frames");
        };
        match ServerMessage::decode(f.code, f.payload).unwrap() {
            ServerMessage::HistoryMessage {
                room,
                seq,
                time_ms,
                from,
                text,
            } => {
                assert_eq!((room, from), ("#r", "ann"));
                assert_eq!(time_ms, 1000 + seq);
                assert_eq!(text, format!("m{seq}"));
                seqs.push(seq);
            }
            other => panic!("unexpected {other:?}"),
        }
        rest = &rest[used..];
    }
    assert_eq!(seqs.len() as u64, plan.count);
    seqs
}

fn ask(h: &History, id: RingId, epoch: u64, after: u64, limit: u16, newest: u64) -> (Vec<u64>, u8) {
    let plan = h.plan(
        id,
        E,
        &Request {
            epoch,
            after_seq: after,
            limit,
            newest,
        },
    );
    (sent(h, id, &plan), plan.status)
}

fn seqs(r: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

#[test]
fn stored_frames_are_exactly_what_the_codec_encodes() {
    let mut h = History::new(Limits::default());
    let id = h.open();
    let long = "é".repeat(40_000); // 80,000 bytes: cut like the codec cuts
    let cases = [
        ("#lobby", "bob", "hello"),
        ("#x", "a", "ünïcødé ✓"),
        ("#y", "z", &long[..]),
    ];
    for (i, (room, from, text)) in cases.iter().enumerate() {
        let seq = i as u64 + 1;
        h.store(id, room, seq, 1_764_547_200_000 + seq, from, text);
        let plan = Plan {
            from_seq: seq,
            count: 1,
            status: 0,
        };
        let (a, b) = h.frames(id, &plan);
        let mut want = Vec::new();
        ServerMessage::HistoryMessage {
            room,
            seq,
            time_ms: 1_764_547_200_000 + seq,
            from,
            text,
        }
        .encode(&mut want);
        assert_eq!([a, b].concat(), want);
    }
}

#[test]
fn every_status_for_the_rooms_epoch() {
    // Held 11..=30 (per-room bound 20), newest 30, cap 10.
    let (h, id) = room_with(30, limits(20, 1 << 20, 10));
    assert_eq!((h.first_held(id), h.last_held(id)), (11, 30));
    // 0: complete.
    assert_eq!(ask(&h, id, E, 25, 0, 30), (seqs(26..=30), 0));
    assert_eq!(ask(&h, id, E, 10, 0, 20), (seqs(11..=20), 0));
    // 1: more (the limit cut it).
    assert_eq!(ask(&h, id, E, 12, 5, 30), (seqs(13..=17), MORE));
    // 2: gap (11 is the oldest held; 6..=10 are gone).
    assert_eq!(ask(&h, id, E, 5, 0, 15), (seqs(11..=15), GAP));
    // 3: gap and more.
    assert_eq!(ask(&h, id, E, 5, 0, 30), (seqs(11..=20), GAP | MORE));
    // 4: new epoch, nothing else.
    assert_eq!(ask(&h, id, E + 1, 5, 0, 30), (vec![], NEW_EPOCH));
    assert_eq!(ask(&h, id, E + 1, 30, 1, 30), (vec![], NEW_EPOCH));
    // Nothing asked for: complete.
    assert_eq!(ask(&h, id, E, 30, 0, 30), (vec![], 0));
    assert_eq!(ask(&h, id, E, 99, 0, 30), (vec![], 0));
    // Everything asked for is gone: a gap and nothing sent.
    assert_eq!(ask(&h, id, E, 0, 0, 10), (vec![], GAP));
}

#[test]
fn never_above_the_sessions_newest() {
    let (h, id) = room_with(10, limits(100, 1 << 20, 100));
    // The session joined at seq 6: 7..=10 came live.
    assert_eq!(ask(&h, id, E, 2, 0, 6), (seqs(3..=6), 0));
    assert_eq!(ask(&h, id, 0, 0, 0, 6), (seqs(1..=6), 0));
    assert_eq!(ask(&h, id, 0, 0, 0, 0), (vec![], 0));
    // A session that joined before anything was said: nothing.
    assert_eq!(ask(&h, id, E, 0, 0, 0), (vec![], 0));
}

#[test]
fn epoch_zero_sends_the_newest_and_says_whether_older_are_held() {
    let (h, id) = room_with(30, limits(20, 1 << 20, 10));
    // after_seq is ignored; never GAP.
    assert_eq!(ask(&h, id, 0, 0, 0, 30), (seqs(21..=30), MORE));
    assert_eq!(ask(&h, id, 0, 29, 3, 30), (seqs(28..=30), MORE));
    assert_eq!(ask(&h, id, 0, 0, 0, 15), (seqs(11..=15), 0));
    assert_eq!(ask(&h, id, 0, 0, 5, 15), (seqs(11..=15), 0));
    assert_eq!(ask(&h, id, 0, 0, 4, 15), (seqs(12..=15), MORE));
    // Newest older than anything held: nothing, and complete.
    assert_eq!(ask(&h, id, 0, 0, 0, 10), (vec![], 0));
    // An empty room.
    let (h, id) = room_with(0, limits(20, 1 << 20, 10));
    assert_eq!(ask(&h, id, 0, 0, 0, 0), (vec![], 0));
}

#[test]
fn limit_zero_means_the_cap_and_no_limit_passes_it() {
    let (h, id) = room_with(100, limits(100, 1 << 20, 25));
    assert_eq!(ask(&h, id, E, 0, 0, 100), (seqs(1..=25), MORE));
    assert_eq!(ask(&h, id, E, 0, u16::MAX, 100), (seqs(1..=25), MORE));
    assert_eq!(ask(&h, id, E, 0, 7, 100), (seqs(1..=7), MORE));
    assert_eq!(ask(&h, id, E, 75, 0, 100), (seqs(76..=100), 0));
    assert_eq!(ask(&h, id, E, 74, 0, 100), (seqs(75..=99), MORE));
    // A cap of 0 is taken as 1.
    let (h, id) = room_with(3, limits(100, 1 << 20, 0));
    assert_eq!(h.limits().reply_cap, 1);
    assert_eq!(ask(&h, id, E, 0, 0, 3), (seqs(1..=1), MORE));
}

#[test]
fn per_room_zero_holds_nothing() {
    let (h, id) = room_with(50, limits(0, 1 << 20, 100));
    assert_eq!((h.first_held(id), h.held(id), h.held_bytes()), (0, 0, 0));
    assert_eq!(ask(&h, id, E, 0, 0, 50), (vec![], GAP));
    assert_eq!(ask(&h, id, E, 50, 0, 50), (vec![], 0));
    assert_eq!(ask(&h, id, 0, 0, 0, 50), (vec![], 0));
    assert_eq!(ask(&h, id, 7, 0, 0, 50), (vec![], NEW_EPOCH));
}

#[test]
fn reply_appends_the_frames_then_history_end() {
    let (h, id) = room_with(5, limits(100, 1 << 20, 100));
    let mut out = OutBuf::default();
    let req = Request {
        epoch: E,
        after_seq: 2,
        limit: 0,
        newest: 5,
    };
    let plan = h.reply(id, "#r", E, &req, &mut out);
    let mut bytes = Vec::new();
    out.write_to(&mut bytes).unwrap();
    let (a, b) = h.frames(id, &plan);
    let frames = [a, b].concat();
    assert_eq!(&bytes[..frames.len()], &frames[..]);
    let Decoded::Frame(f, used) = decode(&bytes[frames.len()..], u32::MAX) else {
        panic!("HISTORY_END follows");
    };
    assert_eq!(used, bytes.len() - frames.len());
    assert_eq!(
        ServerMessage::decode(f.code, f.payload).unwrap(),
        ServerMessage::HistoryEnd {
            room: "#r",
            epoch: E,
            newest: 5,
            status: 0
        }
    );
    assert_eq!(sent(&h, id, &plan), seqs(3..=5));
}

#[test]
fn the_ring_wraps_and_keeps_consecutive_frames() {
    let (mut h, id) = room_with(0, limits(7, 1 << 20, 7));
    for seq in 1..=1000 {
        // Varying sizes move the wrap point around.
        let text = format!("m{seq}");
        h.store(id, "#r", seq, 1000 + seq, "ann", &text);
        let lo = seq.saturating_sub(6).max(1);
        assert_eq!(ask(&h, id, E, lo - 1, 0, seq), (seqs(lo..=seq), 0));
        for k in lo..=seq {
            assert_eq!(ask(&h, id, E, k - 1, 1, seq).0, vec![k]);
        }
    }
    // Stable capacity: the ring stopped growing once full.
    assert!(h.heap_bytes() < 4096, "{}", h.heap_bytes());
}

#[test]
fn a_seq_that_does_not_follow_restarts_the_ring() {
    let (mut h, id) = room_with(5, limits(100, 1 << 20, 100));
    h.store(id, "#r", 9, 1009, "ann", "m9");
    assert_eq!((h.first_held(id), h.last_held(id), h.held(id)), (9, 9, 1));
    assert_eq!(ask(&h, id, E, 5, 0, 9), (vec![9], GAP));
    h.store(id, "#r", 3, 1003, "ann", "m3");
    assert_eq!((h.first_held(id), h.last_held(id)), (3, 3));
    assert_eq!(h.held_messages(), 1);
}

/// Bytes one stored "mN" message from "ann" in "#r" is charged.
fn cost(seq: u64) -> usize {
    HEADER_LEN + 2 + 2 + 8 + 8 + 2 + 3 + 2 + format!("m{seq}").len() + INDEX_BYTES
}

#[test]
fn budget_evicts_the_least_recently_active_rooms_oldest_first() {
    // Three rooms, 4 messages each of seq 1..=4 (cost 37 + 4 = 41 B).
    assert_eq!(cost(1), 41);
    let mut h = History::new(limits(100, 12 * 41, 100));
    let [a, b, c] = [h.open(), h.open(), h.open()];
    for seq in 1..=4 {
        for id in [a, b, c] {
            h.store(id, "#r", seq, 1000 + seq, "ann", &format!("m{seq}"));
        }
    }
    assert_eq!(h.held_bytes(), 12 * 41);
    assert_eq!(h.evicted(), 0);
    // Activity order now (oldest first): a, b, c. b speaks: a, c, b.
    h.store(b, "#r", 5, 1005, "ann", "m5");
    assert_eq!([h.held(a), h.held(b), h.held(c)], [3, 5, 4]);
    assert_eq!(h.first_held(a), 2);
    // Two more from c: a gives up its oldest two.
    for seq in 5..=6 {
        h.store(c, "#r", seq, 1000 + seq, "ann", &format!("m{seq}"));
    }
    assert_eq!([h.held(a), h.held(b), h.held(c)], [1, 5, 6]);
    // a empties and leaves the list; then b (least recent) pays.
    for seq in 7..=9 {
        h.store(c, "#r", seq, 1000 + seq, "ann", &format!("m{seq}"));
    }
    assert_eq!([h.held(a), h.held(b), h.held(c)], [0, 3, 9]);
    assert_eq!((h.first_held(a), h.first_held(b)), (0, 3));
    assert_eq!(h.evicted(), 6);
    assert!(h.held_bytes() <= 12 * 41);
    // a speaks again: it is now the most recent, b pays.
    h.store(a, "#r", 5, 1005, "ann", "m5");
    assert_eq!([h.held(a), h.held(b), h.held(c)], [1, 2, 9]);
    // Asking about evicted seqs says GAP.
    assert_eq!(ask(&h, b, E, 0, 0, 5), (seqs(4..=5), GAP));
    // A room alone over the budget evicts its own oldest.
    let mut h = History::new(limits(100, 3 * 41, 100));
    let solo = h.open();
    for seq in 1..=9 {
        h.store(solo, "#r", seq, 1000 + seq, "ann", &format!("m{seq}"));
    }
    assert_eq!((h.first_held(solo), h.last_held(solo)), (7, 9));
    // A frame above the whole budget is not held.
    let mut h = History::new(limits(100, 40, 100));
    let tiny = h.open();
    h.store(tiny, "#r", 1, 1001, "ann", "m1");
    assert_eq!(
        (h.held(tiny), h.held_bytes(), h.first_held(tiny)),
        (0, 0, 0)
    );
}

#[test]
fn close_gives_back_the_budget_and_the_slot() {
    let mut h = History::new(limits(100, 1 << 20, 100));
    let a = h.open();
    let b = h.open();
    for seq in 1..=10 {
        h.store(a, "#r", seq, 0, "ann", "x");
        h.store(b, "#r", seq, 0, "ann", "x");
    }
    let half = h.held_bytes() / 2;
    h.close(a);
    assert_eq!(h.held_bytes(), half);
    assert_eq!(h.held_messages(), 10);
    let again = h.open();
    assert_eq!(h.held(again), 0);
    h.close(b);
    h.close(again);
    assert_eq!((h.held_bytes(), h.held_messages()), (0, 0));
    assert_eq!((h.head, h.tail), (NIL, NIL));
}

#[test]
fn byte_ring_wraps_grows_and_shrinks_in_order() {
    let mut r = ByteRing::default();
    r.reserve_exact(8);
    r.write(b"abcdef");
    r.drain_front(4);
    r.write(b"ghijkl"); // wraps: "ef" at the end, "ghijkl" over the front
    assert_eq!(r.range(0, 8), (&b"efgh"[..], &b"ijkl"[..]));
    assert_eq!(r.range(3, 5), (&b"h"[..], &b"i"[..]));
    assert_eq!(r.range(1, 3), (&b"fg"[..], &b""[..]));
    assert_eq!(r.range(5, 7), (&b"jk"[..], &b""[..]));
    r.reserve_exact(10);
    assert_eq!(
        (r.capacity(), r.range(0, 8)),
        (18, (&b"efghijkl"[..], &b""[..]))
    );
    r.drain_front(6);
    r.shrink_to(3);
    assert_eq!((r.capacity(), r.len(), r.range(0, 2).0), (3, 2, &b"kl"[..]));
}

#[test]
fn epochs_are_non_zero_and_distinct() {
    let mut e = Epochs::with_seed(0);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100_000 {
        let x = e.next_epoch();
        assert_ne!(x, 0);
        assert!(seen.insert(x), "epoch {x} repeated");
    }
    // A seed whose first mix is 0 skips it: mix(0) is 0.
    assert_eq!(mix(0), 0);
    let mut z = Epochs::with_seed(u64::MAX); // counter 1 -> mix(0)
    assert_ne!(z.next_epoch(), 0);
    // Two daemons (or a restart) draw unrelated seeds.
    let (mut r1, mut r2) = (Epochs::new(), Epochs::new());
    assert_ne!(r1.next_epoch(), r2.next_epoch());
}
