//! `muxchatd gen-cert`: a private CA and a server certificate it signed,
//! as PEM files the daemon (`--tls-cert`, `--tls-key`) and the clients
//! (`--ca`) take as they are.
//!
//! The usual one-line self-signed recipe makes a certificate marked CA:TRUE
//! (OpenSSL 3), which clients refuse to accept as a server's own
//! (`CaUsedAsEndEntity`); this writes the two certificates that work: a CA
//! (CA:TRUE, signs only) and a leaf (CA:FALSE, serverAuth, every name and
//! address in subjectAltName). docs/OPERATIONS.md, section 3, has the same
//! pair made with openssl.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// `muxchatd gen-cert`: writes a private CA and a server certificate.
#[derive(Parser, Debug)]
#[command(
    name = "muxchatd gen-cert",
    version,
    about = "muxchatd gen-cert: writes a private CA (ca.pem, ca.key) and a server certificate \
             it signed (cert.pem, key.pem) into DIR. Give muxchatd --tls-cert DIR/cert.pem \
             --tls-key DIR/key.pem, and the clients --ca DIR/ca.pem.",
    long_about = None
)]
pub struct GenCertArgs {
    /// Directory to write ca.pem, ca.key, cert.pem and key.pem into (created
    /// if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A host name the server certificate is valid for; repeatable.
    #[arg(long = "name", value_name = "HOST")]
    pub names: Vec<String>,
    /// An IP address the server certificate is valid for; repeatable.
    /// Without --name and --ip: localhost, 127.0.0.1 and ::1.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// How long the server certificate is valid, in days (the CA: ten
    /// times as long).
    #[arg(long, value_name = "DAYS", default_value_t = 825,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Replace files that already exist (by default they are kept, and
    /// nothing is written).
    #[arg(long)]
    pub force: bool,
}

/// The files written, in the order they are named to the user.
pub const FILES: [&str; 4] = ["ca.pem", "ca.key", "cert.pem", "key.pem"];

/// Writes the four files; returns their paths, or a sentence naming what
/// went wrong.
pub fn run(args: &GenCertArgs) -> Result<Vec<PathBuf>, String> {
    let mut sans: Vec<String> = args.names.clone();
    sans.extend(args.ips.iter().map(IpAddr::to_string));
    if sans.is_empty() {
        sans = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    }
    let paths: Vec<PathBuf> = FILES.iter().map(|f| args.dir.join(f)).collect();
    if !args.force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            return Err(format!(
                "{} already exists: nothing written (--force replaces the files)",
                p.display()
            ));
        }
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;

    let now = time::OffsetDateTime::now_utc();
    let days = i64::from(args.days);
    let rcgen_err = |what: &str, e: rcgen::Error| format!("cannot make the {what}: {e}");

    let ca_key = KeyPair::generate().map_err(|e| rcgen_err("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| rcgen_err("CA", e))?;
    ca.distinguished_name
        .push(DnType::CommonName, "muxchat private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(days * 10);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| rcgen_err("CA", e))?;

    let key = KeyPair::generate().map_err(|e| rcgen_err("server key", e))?;
    let mut leaf =
        CertificateParams::new(sans.clone()).map_err(|e| format!("bad --name or --ip: {e}"))?;
    let first = match &leaf.subject_alt_names[0] {
        SanType::DnsName(n) => n.as_str().to_string(),
        _ => sans[0].clone(),
    };
    leaf.distinguished_name.push(DnType::CommonName, first);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(days);
    let issuer = Issuer::new(ca, &ca_key);
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(|e| rcgen_err("server certificate", e))?;

    let contents = [
        (ca_cert.pem(), false),
        (ca_key.serialize_pem(), true),
        (cert.pem(), false),
        (key.serialize_pem(), true),
    ];
    for (path, (text, secret)) in paths.iter().zip(contents) {
        write(path, &text, secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(paths)
}

/// Writes a file, private keys readable by the owner only from the start.
fn write(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `muxchatd gen-cert ARGS...` (`argv` starts with the program name): exit
/// status 0 written, 1 not written, 2 usage error (clap's message).
pub fn main(argv: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    // clap sees "muxchatd gen-cert" as one program name (for its usage line).
    let argv = std::iter::once("muxchatd gen-cert".into()).chain(argv.into_iter().skip(2));
    let args = match GenCertArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(&args) {
        Ok(paths) => {
            for p in &paths {
                println!("{}", p.display());
            }
            let d = args.dir.display();
            eprintln!(
                "muxchatd gen-cert: serve with --tls-cert {d}/cert.pem --tls-key {d}/key.pem; \
                 clients trust --ca {d}/ca.pem (keep ca.key offline)"
            );
            std::process::ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("muxchatd gen-cert: {msg}");
            std::process::ExitCode::from(1)
        }
    }
}
