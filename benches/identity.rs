//! Identity benchmarks (protocol version 3): what a login's signature check
//! costs the one thread, per algorithm, and what a SAY's deduplication
//! lookup costs.
//!
//! Run with `cargo bench --bench identity` (about 30 s; needs `openssl` to
//! make the RSA, P-256 and Ed25519 keys).
//!
//! - `verify/HS256`, `verify/RS256`, `verify/ES256`, `verify/EdDSA`: one
//!   `Verifier::verify` of a typical token (sub, nick, exp, one rooms
//!   pattern): split, base64, header, signature, claims. This is the cost
//!   the login queue bounds per loop iteration.
//! - `dedup/lookup_hit`, `dedup/lookup_miss`: `Dedup::lookup` in a store of
//!   1,000 keys with 1,000 msg_ids each (a SAY's check before delivery).
//! - `dedup/record`: `Dedup::record` of a new msg_id at the total bound
//!   (so each insert also evicts the oldest).
//!
//! It also prints the memory counted per remembered msg_id and per kept
//! session key (`Dedup::memory_bytes`, `SessionKeys::memory_bytes`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use muxchat::server::identity::dedup::Dedup;
use muxchat::server::identity::mint::{sign_with, MintClaims, SigningKey};
use muxchat::server::identity::{
    now_unix_ms, Alg, AuthKey, KeyOwner, SessionKey, SessionKeys, Verifier,
};

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl {args:?} failed (apt-get install openssl)");
}

/// (signing key, verifying key) files for `alg` under `dir`.
fn keys(dir: &Path, alg: Alg) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{}.key", alg.name()));
    let public = dir.join(format!("{}.pub", alg.name()));
    let p = private.to_str().unwrap();
    match alg {
        Alg::Hs256 => {
            std::fs::write(&private, "a 32-byte shared secret for HS256\n").unwrap();
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

fn bench_verify(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("muxchat-bench-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = now_unix_ms();
    let claims = MintClaims {
        sub: "alice@example.org".into(),
        nick: Some("alice".into()),
        exp: now / 1000 + 3600,
        iat: Some(now / 1000),
        rooms: Some(vec!["#team-*".into()]),
        ..MintClaims::default()
    };
    let mut g = c.benchmark_group("verify");
    for alg in Alg::ALL {
        let (private, public) = keys(&dir, alg);
        let token = sign_with(&SigningKey::load(&private).unwrap(), &claims).unwrap();
        let v = Verifier::new(AuthKey::load(&public).unwrap(), None, None);
        assert!(v.verify(&token, now).is_ok());
        g.bench_function(alg.name(), |b| {
            b.iter(|| black_box(v.verify(black_box(&token), now)).is_ok())
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn key(i: u32) -> SessionKey {
    SessionKey::parse(&format!("{i:032x}")).unwrap()
}

fn bench_dedup(c: &mut Criterion) {
    const KEYS: u32 = 1000;
    const IDS: u64 = 1000;
    let mut d = Dedup::new(4096, (KEYS as usize) * (IDS as usize));
    for k in 0..KEYS {
        for id in 1..=IDS {
            d.record(key(k), id, 1, id);
        }
    }
    eprintln!(
        "dedup: {} msg_ids in {} keys, {} bytes ({:.0} B per msg_id)",
        d.len(),
        d.keys(),
        d.memory_bytes(),
        d.memory_bytes() as f64 / d.len() as f64
    );
    // Kept session keys: 100,000 ended keys of accounts named like
    // "user12345@example.org".
    let mut ks = SessionKeys::new(u64::MAX, 200_000);
    for i in 0..100_000u32 {
        let k = ks
            .issue(
                KeyOwner::Account(format!("user{i}@example.org")),
                mio::Token(i as usize),
            )
            .unwrap();
        ks.end(&k, u64::from(i), |_| {});
    }
    eprintln!(
        "session keys: 100000 kept, {} bytes ({:.0} B per kept key)",
        ks.memory_bytes(),
        ks.memory_bytes() as f64 / 100_000.0
    );
    let mut g = c.benchmark_group("dedup");
    let k = key(KEYS / 2);
    g.bench_function("lookup_hit", |b| {
        b.iter(|| black_box(d.lookup(black_box(&k), black_box(IDS / 2))))
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| black_box(d.lookup(black_box(&k), black_box(IDS + 7))))
    });
    let mut next = IDS + 1;
    g.bench_function("record", |b| {
        b.iter(|| {
            next += 1;
            black_box(d.record(k, next, 1, next))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify, bench_dedup
}
criterion_main!(benches);
