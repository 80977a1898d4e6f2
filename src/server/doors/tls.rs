//! The TLS door's configuration: certificate chain and key from PEM files,
//! turned into one shared `rustls::ServerConfig`.
//!
//! rustls is a TLS library with no I/O of its own: a connection is a state
//! machine fed with ciphertext (`read_tls`) and drained of ciphertext
//! (`write_tls`), which is exactly what a readiness loop needs; it starts
//! no thread. We build it with the `ring` provider only (no aws-lc, so no
//! cmake or C toolchain beyond `cc`), TLS 1.2 and 1.3, and parse PEM with
//! rustls-pki-types.
//!
//! Errors name the file they are about: the daemon exits 1 with that line
//! (daemon-cli.md).
//!
//! It also owns [`HandshakeGate`]: a handshake's signature is the most CPU
//! one connection can make the loop spend (about 1.2 ms with RSA-2048), so
//! handshake steps are budgeted per iteration and handshakes per address
//! per second (issue 18).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::codec::pem::{err, load_certs, load_key, provider, TlsError};

/// Plaintext rustls may hold for one session, each way, on top of our own
/// buffers: about one TLS record. Output beyond it stays in the session's
/// `OutBuf`, where `--max-outbuf` counts it (rustls' own default is 64 KiB
/// per connection).
pub const TLS_BUFFER_LIMIT: usize = 16 * 1024 + 256;

/// Builds the server configuration from a certificate chain file and a key
/// file. The key must match the chain's first certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            err(
                key,
                format!("does not fit the certificate in {}: {e}", cert.display()),
            )
        })?;
    // Stateful resumption would keep a server-side cache that grows with
    // clients; one full handshake per connection is the bounded choice.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // What a browser asks for over wss:// and https://.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A new server-side TLS connection with its buffers bounded.
pub fn accept(config: &Arc<ServerConfig>) -> Result<rustls::ServerConnection, rustls::Error> {
    let mut conn = rustls::ServerConnection::new(Arc::clone(config))?;
    conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(conn)
}

/// Addresses [`HandshakeGate`] remembers at most. Past it, windows more
/// than a second old are dropped (at most one sweep a second); if every
/// entry is younger, a new address goes untracked: the per-iteration
/// budget still bounds what its handshakes cost the loop.
pub const MAX_TRACKED_ADDRESSES: usize = 16 * 1024;

/// How much TLS handshake work the loop takes on: rustls' processing of a
/// handshake message (the ClientHello's answer carries the signature, the
/// costly step) is allowed `per_iteration` times per loop iteration; the
/// sessions refused wait for the next iteration in arrival order (the
/// event loop's FIFO). And each address may start `per_ip` handshakes per
/// second (0: no limit; loopback exempt unless `--limit-loopback`); the
/// connections past it are closed.
#[derive(Debug)]
pub struct HandshakeGate {
    per_iteration: usize,
    left: usize,
    per_ip: u32,
    limit_loopback: bool,
    /// Per address: the start of its one-second window and handshakes
    /// begun in it. Bounded by [`MAX_TRACKED_ADDRESSES`].
    windows: HashMap<IpAddr, (Instant, u32)>,
    last_sweep: Option<Instant>,
}

impl HandshakeGate {
    /// A gate allowing `per_iteration` handshake steps per iteration (at
    /// least 1) and `per_ip` handshakes per address per second.
    pub fn new(per_iteration: usize, per_ip: u32, limit_loopback: bool) -> HandshakeGate {
        HandshakeGate {
            per_iteration: per_iteration.max(1),
            left: per_iteration.max(1),
            per_ip,
            limit_loopback,
            windows: HashMap::new(),
            last_sweep: None,
        }
    }

    /// A new loop iteration: the step budget is full again.
    pub fn begin_iteration(&mut self) {
        self.left = self.per_iteration;
    }

    /// Handshake steps this iteration may still take.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Takes one handshake step from this iteration's budget.
    pub fn take_step(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Whether `ip` may start another handshake now.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        if self.per_ip == 0 || (ip.is_loopback() && !self.limit_loopback) {
            return true;
        }
        const WINDOW: Duration = Duration::from_secs(1);
        if self.windows.len() >= MAX_TRACKED_ADDRESSES && !self.windows.contains_key(&ip) {
            if self
                .last_sweep
                .is_some_and(|t| now.duration_since(t) < WINDOW)
            {
                return true;
            }
            self.last_sweep = Some(now);
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if self.windows.len() >= MAX_TRACKED_ADDRESSES {
                return true;
            }
        }
        let (start, n) = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *n) = (now, 0);
        }
        if *n >= self.per_ip {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::PathBuf;

    use rustls::pki_types::CertificateDer;

    #[test]
    fn handshake_gate_budgets_steps_and_addresses() {
        let mut g = HandshakeGate::new(2, 3, false);
        assert!(g.take_step() && g.take_step() && !g.take_step());
        g.begin_iteration();
        assert_eq!(g.left(), 2);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| g.admit(ip, t0)));
        assert!(!g.admit(ip, t0), "the fourth in one second");
        assert!(g.admit("192.0.2.2".parse().unwrap(), t0), "another address");
        assert!(
            g.admit(ip, t0 + Duration::from_millis(1001)),
            "a new second"
        );
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..10).all(|_| g.admit(lo, t0)), "loopback exempt");
        let mut strict = HandshakeGate::new(1, 1, true);
        assert!(strict.admit(lo, t0) && !strict.admit(lo, t0));
        // Bounded: past the cap, old windows go and fresh ones stay.
        let mut g = HandshakeGate::new(1, 1, false);
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(g.admit(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), t0));
        }
        assert!(
            g.admit("192.0.2.9".parse().unwrap(), t0),
            "untracked, allowed"
        );
        assert_eq!(g.windows.len(), MAX_TRACKED_ADDRESSES);
        let later = t0 + Duration::from_secs(2);
        assert!(g.admit("192.0.2.9".parse().unwrap(), later));
        assert_eq!(g.windows.len(), 1, "the stale windows were swept");
    }

    struct Files {
        dir: PathBuf,
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn files(name: &str) -> (Files, PathBuf, PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("muxchat-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (Files { dir }, cert, key, ck.cert.der().to_vec())
    }

    #[test]
    fn loads_and_handshakes_in_memory() {
        let (_f, cert, key, der) = files("ok");
        let config = server_config(&cert, &key).unwrap();
        let mut server = accept(&config).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der)).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        client.writer().write_all(b"\x00\x6c").unwrap();

        // Pump ciphertext both ways until the plaintext arrives.
        let mut got = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = [0u8; 16];
            match server.reader().read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client.read_tls(&mut back.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got, b"\x00\x6c");
        assert!(!server.is_handshaking());
    }

    #[test]
    fn errors_name_the_file() {
        let (_f, cert, key, _) = files("bad");
        let missing = cert.with_file_name("missing.pem");
        let e = server_config(&missing, &key).unwrap_err();
        assert_eq!(e.file, missing);
        assert!(e.to_string().starts_with(&missing.display().to_string()));

        // A key file given as the certificate: no certificate in it.
        let e = server_config(&key, &key).unwrap_err();
        assert_eq!(e.file, key);
        assert!(e.cause.contains("no PEM certificate"), "{e}");

        // A certificate given as the key: no key in it.
        let e = server_config(&cert, &cert).unwrap_err();
        assert_eq!(e.file, cert);
        assert!(e.cause.contains("no PEM private key"), "{e}");

        // Garbage.
        let junk = cert.with_file_name("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = server_config(&junk, &key).unwrap_err();
        assert_eq!(e.file, junk);

        // A key that belongs to another certificate.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let other_key = cert.with_file_name("other.pem");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        let e = server_config(&cert, &other_key).unwrap_err();
        assert_eq!(e.file, other_key);
        assert!(e.cause.contains("does not fit"), "{e}");
    }
}
