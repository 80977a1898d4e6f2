//! What history costs in memory: 10,000 rooms x 100 held messages of 64
//! bytes, measured as exact heap bytes (a counting allocator) and as the
//! process's RSS. Prints the figures; `--release --nocapture` for the
//! numbers quoted in docs:
//!
//! ```sh
//! cargo test --release --test history_memory -- --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use muxchat::net::OutBuf;
use muxchat::server::chat::history::{History, Limits, Request, RingId, INDEX_BYTES};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const ROOMS: usize = 10_000;
const PER_ROOM: usize = 100;
const TEXT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Fills `ROOMS` rooms round-robin, `rounds` messages each; returns the
/// history, the rooms' handles and the seconds the stores took.
fn fill(limits: Limits, rounds: u64) -> (History, Vec<RingId>, f64) {
    let names: Vec<String> = (0..ROOMS).map(|i| format!("#room-{i:05}")).collect();
    let mut h = History::new(limits);
    let ids: Vec<_> = (0..ROOMS).map(|_| h.open()).collect();
    let t = Instant::now();
    for seq in 1..=rounds {
        for (i, id) in ids.iter().enumerate() {
            h.store(
                *id,
                &names[i],
                seq,
                1_764_547_200_000 + seq,
                "user-0001",
                TEXT,
            );
        }
    }
    (h, ids, t.elapsed().as_secs_f64())
}

#[test]
fn ten_thousand_rooms_of_a_hundred_messages() {
    assert_eq!(TEXT.len(), 64);
    // The frame: header 8, room 2+11, seq 8, time 8, from 2+9, text 2+64.
    let frame = 8 + 13 + 8 + 8 + 11 + 66;
    let held = ROOMS * PER_ROOM * (frame + INDEX_BYTES);

    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = rss_bytes();
    let limits = Limits {
        per_room: PER_ROOM,
        max_bytes: 256 << 20,
        reply_cap: 100,
    };
    // Two rounds past the bound: every ring has wrapped.
    let rounds = PER_ROOM as u64 + 2;
    let (h, ids, secs) = fill(limits, rounds);
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let rss = rss_bytes().saturating_sub(rss0);
    assert_eq!(h.held_messages(), ROOMS * PER_ROOM);
    assert_eq!(h.held_bytes(), held);
    assert_eq!(h.evicted(), 0);
    let per_msg = heap as f64 / (ROOMS * PER_ROOM) as f64;
    println!(
        "history: {ROOMS} rooms x {PER_ROOM} messages of 64 B ({frame} B frames): \
         held {} B, heap {} B ({per_msg:.1} B/message, heap_bytes() {}), RSS +{} B; \
         {:.0} ns per store",
        held,
        heap,
        h.heap_bytes(),
        rss,
        secs * 1e9 / (ROOMS as f64 * rounds as f64),
    );
    // Slack: at most an eighth over the held bytes, plus the rooms' own
    // structs (about 100 B each).
    assert!(
        heap <= held + held / 8 + ROOMS * 200,
        "heap {heap} B for {held} B held"
    );

    // A HISTORY of 100 messages (epoch 0, what a client asks on joining):
    // one plan, two slice copies at most, one HISTORY_END.
    let mut out = OutBuf::default();
    let t = Instant::now();
    let replies = 10_000;
    let mut sent = 0;
    for i in 0..replies {
        let req = Request {
            epoch: 0,
            after_seq: 0,
            limit: 0,
            newest: rounds,
        };
        let id = ids[i % ROOMS];
        let plan = h.reply(id, "#room", 1, &req, &mut out);
        assert_eq!((plan.count, plan.status), (100, 0));
        sent += out.pending();
        out.discard();
    }
    println!(
        "HISTORY of 100 held messages: {:.0} ns per reply ({} B each)",
        t.elapsed().as_secs_f64() * 1e9 / replies as f64,
        sent / replies
    );
    drop(h);

    // Under the default budget (64 MiB), the same load holds what fits.
    let (h, _, _) = fill(
        Limits {
            max_bytes: 64 << 20,
            ..limits
        },
        rounds,
    );
    println!(
        "history at --history-memory 64 MiB: {} messages held ({} B), {} evicted, heap {} B",
        h.held_messages(),
        h.held_bytes(),
        h.evicted(),
        h.heap_bytes()
    );
    assert!(h.held_bytes() <= 64 << 20);
    assert!(h.held_bytes() > (64 << 20) - (frame + INDEX_BYTES));
    assert!(h.evicted() > 0);
}
