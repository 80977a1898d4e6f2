//! The chapter's example programs (examples/*.rs), for tests/ladder.rs
//! and tests/chapter_exercises.rs: each built from the current source once
//! per test run, and the `listening on ADDR` line they (and the daemon)
//! print first.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

static BUILD: Once = Once::new();

/// The path of example `name`, after `cargo build --examples` (once per
/// test run).
///
/// Always building, not only when the binary is missing, matters for the
/// exercises: a student who changes a rung and runs `cargo test --test
/// ladder` must test the changed program, not the binary of the last build.
/// When nothing changed the build is a quick no-op.
pub fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/TEST-HASH -> target/<profile>/examples/NAME
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--examples", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        // Cargo gives a test process the variables it sets for a crate
        // being built (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Passed on to
        // this build, they look like a changed environment to dependencies
        // whose build scripts watch them (ring does), and everything would
        // be rebuilt here, and again by the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || matches!(
                    key.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(key.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
    });
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "example binary {} not found", path.display());
    path
}

/// Reads a server's first stdout line, `listening on ADDR`, and returns
/// the address (`name` is for the panic message).
#[track_caller]
pub fn listening_on<R: Read>(stdout: &mut BufReader<R>, name: &str) -> SocketAddr {
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the listening line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
        .parse()
        .expect("address in the listening line")
}
