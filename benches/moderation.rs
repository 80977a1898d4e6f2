//! Moderation's costs on the loop (issue 21): the ban check on every JOIN
//! and HELLO, and writing the `--state-file`.
//!
//! Run with `cargo bench --bench moderation` (about 40 s).
//!
//! - `ban_match/none`: [`BanSet::matching`] on an empty set, for 256
//!   sessions (account or guest, IPv4 or IPv6) that no ban matches: the
//!   floor.
//! - `ban_match/100k_mixed`: the same sessions against 100,000
//!   server-wide bans: 40,000 accounts, 39,000 exact nicks, 1,000 nick
//!   globs (prefix, suffix and a few loose ones), 10,000 IPv4 and 10,000
//!   IPv6 networks of several lengths. Goal: the check stays a small part
//!   of what a JOIN or HELLO costs (within 10% of no bans for the daemon's
//!   hot path).
//! - `ban_match/100k_hit`: sessions that a ban matches (one per kind).
//! - `state_file/serialize_10k`: all of a state with 10,000 bans (100
//!   rooms of 50, 5,000 server-wide) into bytes at once.
//! - `state_file/write_10k`: a whole atomic write of it (serialize,
//!   temporary file, fsync, rename, fsync of the directory; both files:
//!   the rooms and the server-wide bans), in a directory under `target/`.
//! - `state_file/room_change_100k`: what a room's change costs to write
//!   with 100,000 server-wide bans held (100 rooms of 50 bans): the rooms'
//!   file alone, as the daemon writes it now...
//! - `state_file/both_files_100k`: ...and both files, which is what every
//!   change cost while version 1 kept both parts in one file.
//!
//! Before criterion runs, `step profile` lines print the longest single
//! [`StateWriter::step`] of each kind with the default budget over 20
//! writes: what one loop iteration stalls for when the write is chunked.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use muxchat::codec::names::NameKey;
use muxchat::server::moderation::bans::{Ban, BanSet, MAX_SERVER_BANS};
use muxchat::server::moderation::room_state::RoomStates;
use muxchat::server::moderation::state_file::{self, StateWriter, Step, StepBudget};

/// A small deterministic generator (no rand crate in the daemon's deps).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
}

fn ban(mask: String) -> Ban {
    Ban {
        mask: mask.parse().unwrap_or_else(|e| panic!("{mask}: {e}")),
        by: "admin".into(),
        reason: "spam".into(),
        until_ms: 0,
    }
}

fn mixed_bans(n: usize) -> BanSet {
    let mut r = Lcg(7);
    let mut set = BanSet::new(MAX_SERVER_BANS);
    let accounts = n * 40 / 100;
    let globs = 1_000.min(n);
    let nets = n * 20 / 100;
    let nicks = n - accounts - globs - nets;
    for i in 0..accounts {
        let _ = set.insert(ban(format!("account:acct-{i}-{}", r.word(4))));
    }
    for i in 0..nicks {
        let _ = set.insert(ban(format!("nick:{}{i}", r.word(5))));
    }
    for i in 0..globs {
        let w = r.word(4);
        let _ = set.insert(ban(match i % 100 {
            0 => format!("nick:*{w}{i}*"),
            k if k % 2 == 0 => format!("nick:{w}{i}*"),
            _ => format!("nick:*{w}{i}?"),
        }));
    }
    // Truncated networks collide now and then: draw until enough are new.
    let mut i = 0;
    let target = set.len() + nets;
    while set.len() < target {
        let (a, b, c) = (r.next() % 223 + 1, r.next() % 256, r.next() % 256);
        let _ = set.insert(ban(if i % 2 == 0 {
            let len = [16, 24, 32][i % 3];
            format!("ip:{a}.{b}.{c}.{}/{len}", r.next() % 256)
        } else {
            let len = [32, 48, 64, 128][i % 4];
            format!("ip:2001:{a:x}:{b:x}:{c:x}::{:x}/{len}", r.next() % 65536)
        }));
        i += 1;
    }
    assert_eq!(set.len(), n, "generated masks collided");
    set
}

/// Sessions no generated ban matches: accounts and guests, v4 and v6.
fn sessions() -> Vec<(Option<String>, String, IpAddr)> {
    let mut r = Lcg(99);
    (0..256)
        .map(|i| {
            let nick = format!("user{i}{}", r.word(3));
            let account = (i % 2 == 0).then(|| nick.clone());
            let nick = if account.is_some() {
                nick
            } else {
                format!("~{nick}")
            };
            let ip: IpAddr = if i % 4 < 2 {
                format!("198.18.{}.{}", r.next() % 256, r.next() % 256)
            } else {
                format!("fd00::{:x}", r.next() % 65536)
            }
            .parse()
            .unwrap();
            (account, nick, ip)
        })
        .collect()
}

fn bench_match(c: &mut Criterion) {
    let empty = BanSet::new(MAX_SERVER_BANS);
    let full = mixed_bans(100_000);
    let people = sessions();
    for (account, nick, ip) in &people {
        assert!(
            full.matching(account.as_deref(), nick, *ip).is_none(),
            "{nick} {ip} is banned"
        );
    }
    let mut g = c.benchmark_group("ban_match");
    for (name, set) in [("none", &empty), ("100k_mixed", &full)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0;
                for (account, nick, ip) in &people {
                    hits += set
                        .matching(black_box(account.as_deref()), black_box(nick), *ip)
                        .is_some() as u32;
                }
                hits
            })
        });
    }
    let listed: Vec<Ban> = full.list().cloned().collect();
    let pick = |prefix: &str| {
        listed
            .iter()
            .find(|b| b.mask.to_string().starts_with(prefix))
    };
    let acct = pick("account:").unwrap().mask.to_string()["account:".len()..].to_string();
    let exact = pick("nick:").unwrap().mask.to_string()["nick:".len()..].to_string();
    let hits: Vec<(Option<String>, String, IpAddr)> = vec![
        (Some(acct), "x".into(), "198.18.0.1".parse().unwrap()),
        (None, exact, "198.18.0.1".parse().unwrap()),
    ];
    g.bench_function("100k_hit", |b| {
        b.iter(|| {
            let mut found = 0;
            for (account, nick, ip) in &hits {
                found += full
                    .matching(black_box(account.as_deref()), black_box(nick), *ip)
                    .is_some() as u32;
            }
            assert_eq!(found, 2);
            found
        })
    });
    g.finish();
}

fn state_10k() -> (RoomStates, BanSet) {
    let mut r = Lcg(3);
    let mut rooms = RoomStates::new(u64::MAX);
    for room in 0..100 {
        let key = NameKey::new(&format!("#room-{room}")).unwrap();
        let s = rooms.entry(key);
        s.set_topic("a topic of a reasonable length, like most", "alice", 1)
            .unwrap();
        s.grant("alice").unwrap();
        for i in 0..50 {
            rooms
                .ban(key, ban(format!("nick:{}{i}*", r.word(5))))
                .unwrap();
        }
    }
    let server = mixed_bans(5_000);
    (rooms, server)
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-moderation");
    std::fs::create_dir_all(&dir).expect("create target/bench-moderation");
    dir
}

/// The longest step of each kind over 20 chunked writes.
fn step_profile(rooms: &RoomStates, server: &BanSet) {
    let path = bench_dir().join("state-steps.json");
    let mut writer = StateWriter::new(&path);
    let mut longest = [Duration::ZERO; 5];
    let mut steps = 0;
    let mut bytes = 0;
    for round in 0..20u64 {
        writer.mark_dirty();
        bytes = 0;
        loop {
            let phase = writer.phase() as usize;
            let start = Instant::now();
            let step = writer
                .step(round * 10_000, rooms, server, StepBudget::default())
                .expect("write");
            longest[phase] = longest[phase].max(start.elapsed());
            steps += 1;
            match step {
                // Both files: the rooms', then the server bans'.
                Step::Written(n) => {
                    bytes += n;
                    if !writer.is_dirty() {
                        break;
                    }
                }
                Step::Working => {}
                Step::Idle => panic!("idle while dirty"),
            }
        }
    }
    eprintln!(
        "step profile (10,000 bans, {bytes} bytes in two files, {} steps for both, default budget), \
         longest step of each kind over 20 writes: start+first serialize {:?}, \
         serialize {:?}, write {:?}, fsync {:?}, rename+fsync dir {:?}",
        steps / 20,
        longest[0],
        longest[1],
        longest[2],
        longest[3],
        longest[4],
    );
}

fn bench_state_file(c: &mut Criterion) {
    let (rooms, server) = state_10k();
    step_profile(&rooms, &server);
    let mut g = c.benchmark_group("state_file");
    g.bench_function("serialize_10k", |b| {
        b.iter(|| {
            state_file::rooms_bytes(black_box(&rooms)).len()
                + state_file::server_bans_bytes(black_box(&server)).len()
        })
    });
    let path = bench_dir().join("state.json");
    let mut writer = StateWriter::new(&path);
    let mut now = 0u64;
    g.bench_function("write_10k", |b| {
        b.iter(|| {
            writer.mark_dirty();
            now += 10_000;
            writer.flush_all(now, &rooms, &server).expect("write")
        })
    });
    let server = mixed_bans(100_000);
    let path = bench_dir().join("state-100k.json");
    let mut writer = StateWriter::new(&path);
    g.bench_function("room_change_100k", |b| {
        b.iter(|| {
            writer.mark_rooms_dirty();
            now += 10_000;
            writer.flush_all(now, &rooms, &server).expect("write")
        })
    });
    g.bench_function("both_files_100k", |b| {
        b.iter(|| {
            writer.mark_dirty();
            now += 10_000;
            writer.flush_all(now, &rooms, &server).expect("write")
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_match, bench_state_file
}
criterion_main!(benches);
