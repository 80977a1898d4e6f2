//! Replays the committed fuzz corpus on stable Rust, so `cargo test` catches
//! a regression in any parser the fuzzers cover without libFuzzer or a
//! nightly compiler. Each file of `fuzz/corpus/NAME/` goes through the same
//! check the fuzz target `NAME` runs (`fuzz/scenarios/NAME.rs`, included
//! here as a module; the library's `fuzzing` feature, which its hooks
//! need, is on for tests through the dev-dependency in Cargo.toml).

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

#[path = "../fuzz/scenarios/mod.rs"]
mod scenarios;

use scenarios::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    files.sort();
    files
}

#[test]
fn every_corpus_file_passes_its_check() {
    for (name, check) in TARGETS {
        let files = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(
            files.len() >= 10,
            "fuzz/corpus/{name} holds {} files: commit a corpus",
            files.len()
        );
        for file in files {
            let data = fs::read(&file).expect("readable corpus file");
            if panic::catch_unwind(|| check(&data)).is_err() {
                panic!("fuzz target {name} fails on {}", file.display());
            }
        }
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    // A target added to fuzz/ but not to scenarios::TARGETS would never be
    // replayed here: refuse that.
    for file in files_in(&fuzz_dir().join("fuzz_targets")) {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(name, _)| *name == stem),
            "fuzz/fuzz_targets/{stem}.rs has no entry in fuzz/scenarios/mod.rs's TARGETS"
        );
        let source = fs::read_to_string(&file).unwrap();
        assert!(
            source.contains(&format!("scenarios::{stem}::check(")),
            "fuzz/fuzz_targets/{stem}.rs should call scenarios::{stem}::check"
        );
    }
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

/// One encoded frame of every message, both directions.
fn sample_frames() -> Vec<Vec<u8>> {
    use muxchat::codec::{ClientMessage as C, ErrorCode, ServerMessage as S};
    let client = [
        C::Hello {
            version: 1,
            nick: "alice",
        },
        C::Join { room: "#lobby" },
        C::Leave { room: "#lobby" },
        C::Say {
            room: "#lobby",
            text: "hi é",
        },
        C::Whisper {
            nick: "bob",
            text: "psst",
        },
        C::Nick { nick: "carol" },
        C::ListRooms,
        C::ListUsers { room: "#lobby" },
        C::Ping { token: 7 },
        C::Pong { token: u64::MAX },
        C::Quit { reason: "bye" },
        C::Stats,
        C::History {
            room: "#lobby",
            epoch: 0x1234_5678_9abc_def0,
            after_seq: 17,
            limit: 20,
        },
    ];
    let server = [
        S::error(ErrorCode::NotInRoom, 103, "not in #x"),
        S::Welcome {
            version: 1,
            nick: "alice",
            server: "muxchatd 0.1",
            heartbeat_ms: 30_000,
            max_payload: 65536,
        },
        S::Joined {
            room: "#lobby",
            nick: "alice",
        },
        S::Left {
            room: "#lobby",
            nick: "alice",
            reason: "gone",
        },
        S::Message {
            room: "#lobby",
            seq: 42,
            from: "bob",
            text: "hello",
        },
        S::WhisperFrom {
            from: "bob",
            text: "psst",
        },
        S::NickChanged { old: "a", new: "b" },
        S::RoomList(vec![("#a", 1), ("#b", 2)]),
        S::UserList {
            room: "#a",
            nicks: vec!["x", "y"],
        },
        S::Ping { token: 1 },
        S::Pong { token: 2 },
        S::Shutdown {
            grace_ms: 5000,
            reason: "restart",
        },
        S::Bye { reason: "quit" },
        S::StatsReply(vec![("uptime_ms", 5), ("rooms", 0)]),
        S::RoomState {
            room: "#lobby",
            epoch: 9,
            last_seq: 120,
            first_held: 21,
        },
        S::HistoryMessage {
            room: "#lobby",
            seq: 100,
            time_ms: 1_764_547_200_000,
            from: "bob",
            text: "earlier",
        },
        S::HistoryEnd {
            room: "#lobby",
            epoch: 9,
            newest: 120,
            status: 3,
        },
    ];
    let mut frames = Vec::new();
    for m in &client {
        let mut out = Vec::new();
        m.encode(&mut out);
        frames.push(out);
    }
    for m in &server {
        let mut out = Vec::new();
        m.encode(&mut out);
        frames.push(out);
    }
    frames
}

/// Writes seed inputs for the targets to `fuzz/corpus-raw/NAME/` (ignored
/// by git), the starting point of a fuzzing run; see fuzz/README.md.
#[test]
#[ignore = "writes seed files; run by hand before fuzzing"]
fn write_seed_corpus() {
    let raw = fuzz_dir().join("corpus-raw");
    let write = |target: &str, name: String, data: &[u8]| {
        let dir = raw.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    let frames = sample_frames();
    for (i, f) in frames.iter().enumerate() {
        // message_decode: 0x80 then the raw code, then the payload.
        let mut m = vec![0x80];
        m.extend_from_slice(&f[..2]);
        m.extend_from_slice(&f[8..]);
        write("message_decode", format!("seed-{i}"), &m);
    }
    // frame_decode: max payload selector, a chunk plan, a stream.
    let stream: Vec<u8> = frames.concat();
    for (i, (sel, plan)) in [
        (2u8, vec![0u8]),
        (2, vec![6, 0x80 | 20, 127]),
        (1, vec![2, 9]),
        (0, vec![0x83]),
        (3, vec![50, 1]),
        (8, vec![7]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = vec![sel, plan.len() as u8 - 1];
        d.extend_from_slice(&plan);
        d.extend_from_slice(&stream[..stream.len() * (i + 1) / 6]);
        write("frame_decode", format!("seed-{i}"), &d);
    }
    // history: limits (per room, budget / 8, reply cap), then operations
    // (op, pick, args): open rooms, store runs of messages, query them.
    for (i, limits) in [[5u8, 120, 3], [11, 255, 0], [3, 20, 7], [0, 50, 2]]
        .into_iter()
        .enumerate()
    {
        let mut d = limits.to_vec();
        for _ in 0..3 {
            d.extend_from_slice(&[0, 0]);
        }
        for n in 0..40u8 {
            d.extend_from_slice(&[0x42, n % 3, n.wrapping_mul(37)]);
            if n % 5 == 4 {
                d.extend_from_slice(&[3, n % 3, n, n.wrapping_mul(11), n % 7]);
            }
        }
        d.extend_from_slice(&[0x02, 1, 9, 1, 0, 3, 0, 0, 0, 0, 0x22, 0, 4]);
        write("history", format!("seed-{i}"), &d);
    }
}

#[test]
fn every_fuzz_bin_has_its_own_table() {
    // `name = ` alone is not enough: a [[bin]] that lost its header once
    // made two targets' keys one table, which cargo-fuzz refuses to load.
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let table = format!("[[bin]]\nname = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"\n");
        assert!(
            manifest.contains(&table),
            "fuzz/Cargo.toml should hold, as its own table:\n{table}"
        );
    }
    assert_eq!(manifest.matches("[[bin]]").count(), TARGETS.len());
    assert_eq!(manifest.matches("\nname = ").count(), TARGETS.len() + 1);
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn hooks_for_the_fuzzers_are_left_out_of_the_release_library() {
    // A hook the scenarios use (hidden from the docs, or a parser's
    // `fuzz_check`) compiled without the feature would ship in every
    // release build: each needs `feature = "fuzzing"` among its attributes.
    const GATE: &str = "feature = \"fuzzing\"";
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut hooks = 0;
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if *line != "#[doc(hidden)]" && !line.starts_with("pub fn fuzz_check(") {
                continue;
            }
            hooks += 1;
            // The attributes (and docs) around it, up to the item.
            let attribute = |l: &&&str| l.starts_with("#[") || l.starts_with("///");
            let above = lines[..i].iter().rev().take_while(attribute);
            let below = lines[i + 1..].iter().take_while(attribute);
            assert!(
                above.chain(below).any(|l| l.contains(GATE)),
                "{}:{}: a hook for the fuzzers without #[cfg(feature = \"fuzzing\")]",
                file.display(),
                i + 1
            );
        }
    }
    assert!(hooks > 0, "no hooks found: is this test still looking?");
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("features = [\"fuzzing\"]"),
        "fuzz/Cargo.toml should turn on muxchat's fuzzing feature"
    );
}

#[test]
fn resp_corpus_reaches_every_outcome() {
    // The replay above only proves the check holds; this proves the
    // corpus exercises it: every kind of value, a wait and a reset.
    use muxchat::codec::resp::{parse, Limits, Parse, Value};
    let mut seen = std::collections::BTreeSet::new();
    for file in files_in(&fuzz_dir().join("corpus").join("resp")) {
        let data = fs::read(&file).unwrap();
        let Some(stream) = data.get(2..) else {
            continue;
        };
        let limits = Limits {
            max_bulk: usize::from(data[0] & 63),
            max_elements: usize::from(data[1] & 31),
            max_depth: usize::from(data[0] >> 6),
        };
        let mut rest = stream;
        let end = loop {
            let v = match parse(rest, &limits) {
                Parse::Done(v, used) => {
                    rest = &rest[used..];
                    v
                }
                Parse::Incomplete => break "incomplete",
                Parse::Invalid(_) => break "invalid",
            };
            seen.insert(match v {
                Value::Simple(_) => "simple",
                Value::Error(_) => "error",
                Value::Int(_) => "int",
                Value::Bulk(_) => "bulk",
                Value::Nil => "nil",
                Value::Array(a) if a.iter().any(|i| i.as_array().is_some()) => "nested",
                Value::Array(_) => "array",
            });
        };
        seen.insert(end);
    }
    let all = [
        "simple",
        "error",
        "int",
        "bulk",
        "nil",
        "array",
        "nested",
        "incomplete",
        "invalid",
    ];
    assert_eq!(seen, all.into_iter().collect());
}
