//! Tokens over the real binaries: `muxchatd token` mints with each
//! algorithm (keys made by openssl) and the library's verifier accepts
//! exactly those its key allows; a third party (Node's built-in `crypto`,
//! no package) signs HS256 and Ed25519 tokens the verifier accepts; the
//! daemon refuses to start on a key file it cannot use, naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use muxchat::server::identity::{now_unix_ms, Alg, AuthKey, Reject, Verifier};

/// Fails (never skips) when a tool the test needs is missing.
fn need(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg(if tool == "openssl" {
            "version"
        } else {
            "--version"
        })
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (.ci/run installs it); \
         this test cannot check anything without it"
    );
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("muxchat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(args: &[&str]) {
    run(Command::new("openssl").args(args));
}

/// (private key, public key) files for an algorithm, made by openssl.
fn keypair(dir: &Scratch, alg: Alg) -> (PathBuf, PathBuf) {
    let name = alg.name();
    let (private, public) = (
        dir.path(&format!("{name}.key")),
        dir.path(&format!("{name}.pub")),
    );
    let p = private.to_str().unwrap();
    match alg {
        Alg::Hs256 => {
            std::fs::write(&private, "a shared secret of some length\n").unwrap();
            return (private.clone(), private);
        }
        Alg::Rs256 => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]),
        Alg::Es256 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
        Alg::EdDsa => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
    }
    openssl(&[
        "pkey",
        "-in",
        p,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

fn mint(signing_key: &Path, args: &[&str]) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .arg("token")
        .arg("--signing-key")
        .arg(signing_key)
        .args(args));
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.ends_with('\n') && token.matches('\n').count() == 1);
    token.trim_end().to_string()
}

fn verifier(public: &Path) -> Verifier {
    Verifier::new(AuthKey::load(public).expect("public key loads"), None, None)
}

#[test]
fn muxchatd_token_mints_with_every_algorithm_and_only_its_key_verifies() {
    need("openssl", "openssl");
    let dir = Scratch::new("tokens");
    let pairs: Vec<(Alg, PathBuf, PathBuf)> = Alg::ALL
        .iter()
        .map(|&a| {
            let (private, public) = keypair(&dir, a);
            (a, private, public)
        })
        .collect();
    let now = now_unix_ms();
    for (alg, private, public) in &pairs {
        let token = mint(
            private,
            &[
                "--sub",
                "alice@example.org",
                "--nick",
                "Alice",
                "--ttl",
                "30m",
                "--rooms",
                "#team-*,#lobby",
                "--ops",
                "#team-ops",
                "--admin",
            ],
        );
        let v = verifier(public);
        assert_eq!(v.key().alg(), *alg);
        let c = v
            .verify(&token, now)
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(c.account, "alice@example.org");
        assert_eq!(c.nick, "Alice");
        assert!(c.may_join("#TEAM-x") && c.may_join("#lobby") && !c.may_join("#other"));
        assert!(c.admin && c.ops.allows("#team-ops"));
        let ttl = c.exp_ms as i64 - now as i64;
        assert!(
            (1_790_000..=1_810_000).contains(&ttl),
            "{alg}: exp in {ttl} ms"
        );
        // Expired an hour later (30 minutes plus the minute of leeway).
        assert_eq!(v.verify(&token, now + 3_600_000), Err(Reject::Expired));
        // Every other key refuses it: by algorithm, or (the same algorithm
        // with another key cannot happen here) by signature.
        for (other, _, other_public) in &pairs {
            if other != alg {
                assert_eq!(
                    verifier(other_public).verify(&token, now),
                    Err(Reject::Algorithm),
                    "{alg} token under a {other} key"
                );
            }
        }
        // A token whose signature is cut short.
        let cut = &token[..token.len() - 4];
        assert_eq!(v.verify(cut, now), Err(Reject::Signature), "{alg}");
    }
    // A second key of the same kind: the signature fails.
    let other = Scratch::new("tokens-other");
    let (_, ed2) = keypair(&other, Alg::EdDsa);
    let (_, ed_private, _) = &pairs[3];
    let token = mint(ed_private, &["--sub", "alice"]);
    assert_eq!(verifier(&ed2).verify(&token, now), Err(Reject::Signature));
}

#[test]
fn an_rs256_public_key_used_as_an_hs256_secret_fails() {
    need("openssl", "openssl");
    let dir = Scratch::new("confusion");
    let (_, public) = keypair(&dir, Alg::Rs256);
    let pem = std::fs::read(&public).unwrap();
    // The attacker signs HS256 with the public key's bytes, as a server
    // that took the alg from the token would verify it.
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = now_unix_ms() / 1000 + 600;
    let msg = format!(
        "{}.{}",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(format!(r#"{{"sub":"mallory","exp":{exp},"admin":true}}"#))
    );
    for secret in [&pem[..], pem.strip_suffix(b"\n").unwrap()] {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let token = format!(
            "{msg}.{}",
            e.encode(ring::hmac::sign(&k, msg.as_bytes()).as_ref())
        );
        assert_eq!(
            verifier(&public).verify(&token, now_unix_ms()),
            Err(Reject::Algorithm)
        );
    }
    // And alg none.
    let none = format!(
        "{}.{}.",
        e.encode(r#"{"alg":"none"}"#),
        msg.split('.').nth(1).unwrap()
    );
    assert_eq!(
        verifier(&public).verify(&none, now_unix_ms()),
        Err(Reject::Algorithm)
    );
}

/// Node signs with its built-in crypto only: HS256 with the secret file,
/// Ed25519 with a key pair it makes (its public key written as PEM).
const NODE_SIGNER: &str = r#"
const crypto = require('crypto');
const fs = require('fs');
const [mode, file] = process.argv.slice(2);
const b64 = (b) => Buffer.from(b).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const claims = { sub: 'bob@example.org', nick: 'bob', exp: now + 600, nbf: now - 5,
                 rooms: ['#node-*'], iss: 'node', aud: ['x', 'muxchat'] };
if (mode === 'hs') {
  let secret = fs.readFileSync(file);
  if (secret[secret.length - 1] === 10) secret = secret.subarray(0, secret.length - 1);
  const msg = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', secret).update(msg).digest();
  process.stdout.write(msg + '.' + b64(sig));
} else {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  fs.writeFileSync(file, publicKey.export({ type: 'spki', format: 'pem' }));
  const msg = b64(JSON.stringify({ alg: 'EdDSA', typ: 'JWT' })) + '.' + b64(JSON.stringify(claims));
  const sig = crypto.sign(null, Buffer.from(msg), privateKey);
  process.stdout.write(msg + '.' + b64(sig));
}
"#;

#[test]
fn tokens_signed_by_node_crypto_verify() {
    need("node", "nodejs");
    let dir = Scratch::new("node");
    let script = dir.path("sign.js");
    std::fs::write(&script, NODE_SIGNER).unwrap();
    let secret = dir.path("hs.key");
    std::fs::write(&secret, "node and muxchatd share this\n").unwrap();
    let ed_pub = dir.path("ed.pub");
    for (mode, key) in [("hs", &secret), ("ed", &ed_pub)] {
        let out = run(Command::new("node").arg(&script).arg(mode).arg(key));
        let token = String::from_utf8(out.stdout).unwrap();
        let v = Verifier::new(
            AuthKey::load(key).unwrap(),
            Some("node".into()),
            Some("muxchat".into()),
        );
        let c = v
            .verify(&token, now_unix_ms())
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert_eq!(
            (c.account.as_str(), c.nick.as_str()),
            ("bob@example.org", "bob")
        );
        assert!(c.may_join("#node-1") && !c.may_join("#other"));
        let strict = Verifier::new(AuthKey::load(key).unwrap(), Some("other".into()), None);
        assert_eq!(strict.verify(&token, now_unix_ms()), Err(Reject::Issuer));
    }
}

#[test]
fn the_daemon_starts_with_each_key_and_refuses_a_bad_one_naming_it() {
    need("openssl", "openssl");
    let dir = Scratch::new("daemon-keys");
    for alg in Alg::ALL {
        let (_, public) = keypair(&dir, alg);
        let d = common::Daemon::start(&["--auth-key", public.to_str().unwrap()]);
        drop(d);
    }
    // A private key, a P-384 key, an empty secret, a missing file: exit 1,
    // one line naming the file.
    let (private, _) = keypair(&dir, Alg::EdDsa);
    let p384 = dir.path("p384.pub");
    let p384_key = dir.path("p384.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        p384_key.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        p384_key.to_str().unwrap(),
        "-pubout",
        "-out",
        p384.to_str().unwrap(),
    ]);
    let empty = dir.path("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path("missing");
    for (file, why) in [
        (&private, "private key"),
        (&p384, "P-256"),
        (&empty, "empty"),
        (&missing, "cannot open"),
    ] {
        let out = common::Daemon::command(&["--auth-key", file.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing listens");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains(why),
            "{err}"
        );
    }
    // muxchatd token on a public key: exit 1 naming it.
    let (_, public) = keypair(&dir, Alg::Es256);
    let out = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .args(["token", "--sub", "a", "--signing-key"])
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(public.to_str().unwrap()));
}
