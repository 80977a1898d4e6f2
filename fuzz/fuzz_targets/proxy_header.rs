#![no_main]
//! The check lives in `muxchat::fuzzing::proxy_header`, shared with the corpus replay in `cargo test`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| muxchat::fuzzing::proxy_header(data));
