#![no_main]
//! The check lives in `fuzz/scenarios/v3_payloads.rs`, shared with the corpus replay in `cargo test`.

use libfuzzer_sys::fuzz_target;

// Every target includes all the scenarios; this one runs one.
#[allow(dead_code)]
#[path = "../scenarios/mod.rs"]
mod scenarios;

fuzz_target!(|data: &[u8]| scenarios::v3_payloads::check(data));
