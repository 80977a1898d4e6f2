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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Plaintext rustls may hold for one session, each way, on top of our own
/// buffers: about one TLS record. Output beyond it stays in the session's
/// `OutBuf`, where `--max-outbuf` counts it (rustls' own default is 64 KiB
/// per connection).
pub const TLS_BUFFER_LIMIT: usize = 16 * 1024 + 256;

/// A certificate or key that could not be used.
#[derive(Debug)]
pub struct TlsError {
    /// The file concerned (for a mismatch, the key).
    pub file: PathBuf,
    /// What went wrong.
    pub cause: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.cause)
    }
}

impl std::error::Error for TlsError {}

fn err(file: &Path, cause: impl fmt::Display) -> TlsError {
    TlsError {
        file: file.to_path_buf(),
        cause: cause.to_string(),
    }
}

/// Reads every certificate in a PEM file, the leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(path, pem_cause(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, pem_cause(e)))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => err(path, "no PEM private key in the file"),
        e => err(path, pem_cause(e)),
    })
}

fn pem_cause(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// The ring-only crypto provider, shared by server and test clients.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
