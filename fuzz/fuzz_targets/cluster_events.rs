#![no_main]
//! The check lives in `muxchat::fuzzing::cluster_events`, shared with the corpus replay in `cargo test`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| muxchat::fuzzing::cluster_events(data));
