//! The TLS path an operator takes: the openssl recipe in
//! docs/OPERATIONS.md (section 3), run as written with the `openssl`
//! binary, gives a daemon under `--tls-required` that `muxchat --tls --ca`
//! and `muxload --tls --ca` connect to by name and by address. The usual
//! one-line self-signed recipe (a CA:TRUE certificate in OpenSSL 3) fails
//! with a sentence saying what to do, and plaintext clients are told to
//! use `--tls`. `muxchatd gen-cert` writes the same kind of pair.
//!
//! Needs `openssl` (Debian's openssl package); without it the tests fail.

mod client_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use client_support::Chat;
use common::Daemon;

const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");
const MARKER: &str = "<!-- tls-recipe: run as is by tests/tls_recipe.rs -->";

/// Fails, naming the package, when openssl is not installed.
fn openssl() -> Command {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests need the openssl binary: apt-get install openssl (.ci/run installs it)"
    );
    Command::new("openssl")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("muxchat-tlsr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shell block right after the marker in docs/OPERATIONS.md.
fn recipe() -> String {
    let doc = std::fs::read_to_string(OPERATIONS).expect("read docs/OPERATIONS.md");
    let at = doc
        .find(MARKER)
        .expect("docs/OPERATIONS.md has lost the marked TLS recipe");
    let rest = &doc[at + MARKER.len()..];
    let body = rest
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("the marker is followed by a ```sh block");
    body[..body.find("\n```").expect("the block ends")].to_string()
}

/// Runs the documented recipe in `dir`.
fn run_recipe(dir: &Path) {
    let _ = openssl();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &recipe()])
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(dir.join(f).is_file(), "the recipe made no {f}");
    }
}

fn tls_daemon(cert: &str, key: &str, required: bool) -> Daemon {
    let mut args = vec!["--tls-cert", cert, "--tls-key", key];
    if required {
        args.push("--tls-required");
    }
    Daemon::start(&args)
}

fn muxload(target: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(["--connect", target, "--clients", "4", "--rooms", "1"])
        .args(["--publishers", "1", "--rate", "10", "--duration", "1"])
        .args(["--warmup", "0"])
        .args(extra)
        .output()
        .expect("run muxload")
}

#[test]
fn the_documented_openssl_recipe_gives_certificates_the_clients_accept() {
    let dir = Scratch::new("recipe");
    run_recipe(&dir.0);
    let daemon = tls_daemon(&dir.path("cert.pem"), &dir.path("key.pem"), true);
    let port = daemon.addr.port();
    let ca = dir.path("ca.pem");
    for host in ["localhost", "127.0.0.1"] {
        let target = format!("{host}:{port}");
        let mut c = Chat::start_at(
            &target,
            &["--tls", "--ca", &ca, "--nick", "op", "--no-time"],
        );
        c.expect_where("connected", |l| l.ends_with(" as op"));
        c.type_line("/quit");
        assert!(c.wait().success(), "{}", c.stderr());

        let out = muxload(&target, &["--tls", "--ca", &ca]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "muxload --tls to {target}: {all}");
        assert!(all.contains("4 of 4 ready"), "{all}");
    }

    // Plaintext under --tls-required: told what to do, not just refused.
    let mut plain = Chat::start(&daemon, &["--nick", "clear", "--no-time"]);
    plain.expect_where("the TLS advice", |l| {
        l.contains("the server requires TLS: use --tls")
    });
    assert_eq!(plain.wait().code(), Some(1));
    let out = muxload(&daemon.addr.to_string(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("TLS_REQUIRED"), "{stderr}");
    assert!(!stderr.contains("no reason given"), "{stderr}");
}

#[test]
fn a_self_signed_ca_certificate_is_refused_with_what_to_do() {
    let dir = Scratch::new("selfsigned");
    // The recipe everyone finds first; OpenSSL 3 makes it CA:TRUE.
    let out = openssl()
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args([
            "-keyout",
            &dir.path("key.pem"),
            "-out",
            &dir.path("cert.pem"),
        ])
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = tls_daemon(&dir.path("cert.pem"), &dir.path("key.pem"), false);
    let target = format!("localhost:{}", daemon.addr.port());
    let ca = dir.path("cert.pem");
    let mut c = Chat::start_at(&target, &["--tls", "--ca", &ca, "--nick", "op"]);
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("presents a CA certificate"), "{err}");
    assert!(err.contains("docs/OPERATIONS.md"), "{err}");
    assert!(!err.contains("CaUsedAsEndEntity"), "{err}");

    let out = muxload(&target, &["--tls", "--ca", &ca]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("presents a CA certificate"), "{stderr}");
}

#[test]
fn gen_cert_writes_a_ca_and_a_leaf_the_clients_accept() {
    let dir = Scratch::new("gencert");
    let out_dir = dir.path("pki");
    let gen = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_muxchatd"))
            .args(["gen-cert", "--dir", &out_dir])
            .args(["--name", "localhost", "--ip", "127.0.0.1"])
            .args(extra)
            .output()
            .expect("run muxchatd gen-cert")
    };
    let out = gen(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for f in ["ca.pem", "ca.key", "cert.pem", "key.pem"] {
        assert!(listed.contains(f), "{listed}");
    }
    // Private keys are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "key.pem"] {
        let mode = std::fs::metadata(format!("{out_dir}/{key}"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
    }
    // openssl agrees: the leaf is no CA and chains to the CA.
    let text = openssl()
        .args([
            "x509",
            "-noout",
            "-text",
            "-in",
            &format!("{out_dir}/cert.pem"),
        ])
        .output()
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"));
    let verify = openssl()
        .args(["verify", "-CAfile", &format!("{out_dir}/ca.pem")])
        .arg(format!("{out_dir}/cert.pem"))
        .output()
        .expect("openssl verify");
    assert!(verify.status.success(), "{verify:?}");

    let daemon = tls_daemon(
        &format!("{out_dir}/cert.pem"),
        &format!("{out_dir}/key.pem"),
        true,
    );
    let ca = format!("{out_dir}/ca.pem");
    for host in ["localhost", "127.0.0.1"] {
        let target = format!("{host}:{}", daemon.addr.port());
        let mut c = Chat::start_at(
            &target,
            &["--tls", "--ca", &ca, "--nick", "gc", "--no-time"],
        );
        c.expect_where("connected", |l| l.ends_with(" as gc"));
        c.type_line("/quit");
        assert!(c.wait().success(), "{}", c.stderr());
    }

    // Existing files are kept unless --force; a bad option is exit 2.
    let again = gen(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(gen(&["--force"]).status.success());
    assert_eq!(gen(&["--days", "0"]).status.code(), Some(2));
    // The daemon's own --help points to it.
    let help = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .arg("--help")
        .output()
        .expect("muxchatd --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("muxchatd gen-cert"));
}
