//! The checks behind the fuzz targets, shared by two callers: the
//! cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly flags, run by hand)
//! and `tests/fuzz_corpus.rs`, which replays every committed corpus file on
//! stable Rust in `cargo test`. Both include this folder as a module
//! (`#[path]`); it is not part of the library.
//!
//! Each check takes arbitrary bytes, turns them into a scenario, and panics
//! when the code under test disagrees with what the check expects. A check
//! never panics for a reason the input controls other than a real bug, so
//! any panic the fuzzer finds is one.
//!
//! The checks use the library's public API plus the hooks that only the
//! `fuzzing` feature compiles (`Chat::check_invariants`,
//! `Cluster::detached`, the parsers' own `fuzz_check`s, ...): the release
//! build has none of them.
//!
//! To add a target: write `NAME.rs` here with `pub fn check(data: &[u8])`,
//! list it in [`TARGETS`], add `fuzz/fuzz_targets/NAME.rs` and its `[[bin]]`
//! entry in `fuzz/Cargo.toml`, and commit a corpus in `fuzz/corpus/NAME/`
//! (see `fuzz/README.md`).

pub mod ban_mask;
pub mod chat_state;
pub mod cluster_events;
pub mod frame_decode;
pub mod history;
pub mod http_head;
pub mod message_decode;
pub mod proxy_header;
pub mod resp;
mod sessions;
pub mod state_file;
pub mod token_parse;
pub mod v3_payloads;
pub mod ws_frames;

/// A fuzz target's check: panics on a bug, returns on anything else.
pub type Check = fn(&[u8]);

/// Every fuzz target by name, with its check. `tests/fuzz_corpus.rs` replays
/// `fuzz/corpus/NAME/*` through each, and fails if a target in
/// `fuzz/fuzz_targets/` is missing here or has no corpus.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", frame_decode::check),
    ("message_decode", message_decode::check),
    ("http_head", http_head::check),
    ("ws_frames", ws_frames::check),
    ("history", history::check),
    ("chat_state", chat_state::check),
    ("resp", resp::check),
    ("cluster_events", cluster_events::check),
    ("proxy_header", proxy_header::check),
    ("ban_mask", ban_mask::check),
    ("state_file", state_file::check),
    ("token_parse", token_parse::check),
    ("v3_payloads", v3_payloads::check),
];

/// A small reader over the fuzz input: every take succeeds, yielding zeros
/// once the input runs out, so a scenario never fails to build.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }
}
