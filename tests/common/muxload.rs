//! Running `muxload` against a daemon and reading its one-line JSON
//! report (tests/muxload.rs, tests/muxload_v3.rs).

use std::fmt::Display;
use std::process::{Command, Output};

/// `muxload --connect ADDR --json --quiet ARGS`, run to its end.
pub fn muxload(addr: impl Display, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(addr.to_string())
        .args(["--json", "--quiet"])
        .args(args)
        .output()
        .expect("run muxload")
}

/// The number after `"key":` in a one-line JSON object, searching after
/// the text `within` (e.g. `"loss":`) when given. Enough for muxload's
/// flat, fixed-shape line; not a general JSON parser.
#[track_caller]
pub fn field(json: &str, within: &str, key: &str) -> f64 {
    let from = if within.is_empty() {
        0
    } else {
        json.find(within)
            .unwrap_or_else(|| panic!("no {within} in {json}"))
    };
    let needle = format!("\"{key}\":");
    let at = json[from..]
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + from
        + needle.len();
    let num: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// The JSON line of a successful run.
#[track_caller]
pub fn json_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "muxload failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line expected: {stdout}"
    );
    stdout.trim().to_string()
}
