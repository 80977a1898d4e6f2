//! The TLS door: its configuration (certificate chain and key from PEM
//! files, turned into one shared `rustls::ServerConfig`) and the layer
//! that carries a session's bytes through rustls (`Tls`).
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
//! The layer: rustls fed from the socket on the way in, and its records
//! pushed to the socket on the way out, until the socket would block. Each step of a handshake
//! takes one from the iteration's [`HandshakeGate`](super::HandshakeGate)
//! budget.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::codec::pem::{err, load_certs, load_key, provider, TlsError};

use super::meter::{Meter, FRAME_COST};

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

/// The TLS layer of one session: a rustls connection over the session's
/// socket. `read_tls` / `process_new_packets` / `reader()` on the way in;
/// on the way out plaintext goes into rustls' `writer()` and `write_tls`
/// pushes the records, until the socket would block. rustls' buffers are
/// bounded ([`TLS_BUFFER_LIMIT`]); what it still holds counts as pending
/// output, so WRITABLE interest follows [`Tls::wants_write`].
pub(super) struct Tls {
    conn: rustls::ServerConnection,
    /// Ciphertext read into rustls whose processing waits for the
    /// handshake budget.
    unprocessed: bool,
}

impl Tls {
    /// The layer over a connection made by [`accept`].
    pub(super) fn new(conn: rustls::ServerConnection) -> Tls {
        Tls {
            conn,
            unprocessed: false,
        }
    }

    /// Reads plaintext out of rustls, feeding it ciphertext from `stream`
    /// as needed. `Ok(0)` is the end (close_notify or the socket's EOF).
    /// Charges `m` the ciphertext and [`FRAME_COST`] per `read_tls`, stops
    /// after a read's worth with no plaintext, and takes a step of the
    /// handshake budget for each processing while handshaking.
    pub(super) fn read(
        &mut self,
        stream: &TcpStream,
        buf: &mut [u8],
        m: &mut Meter<'_>,
    ) -> io::Result<usize> {
        let conn = &mut self.conn;
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: an end
                // all the same (every protocol frame is length-prefixed, so
                // truncation cannot pass for a whole frame).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.unprocessed {
                if m.spent() {
                    // Records without plaintext (empty ones, alerts,
                    // handshake messages): a read's worth, then yield.
                    return Err(m.stop());
                }
                match conn.read_tls(&mut &*stream) {
                    Ok(0) => return Ok(0),
                    Ok(n) => m.cost.work += n + FRAME_COST,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            // A handshake step (the answer to a ClientHello signs) waits
            // for the iteration's budget; the ciphertext stays in rustls.
            if conn.is_handshaking() && !m.gate.take_step() {
                self.unprocessed = true;
                m.waiting = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.unprocessed = false;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert that says why: send it, best effort.
                let _ = push(stream, conn);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Writes rustls' pending records to `stream`. Returns false if the
    /// socket would block with records left.
    pub(super) fn push(&mut self, stream: &TcpStream) -> io::Result<bool> {
        push(stream, &mut self.conn)
    }

    /// Whether rustls holds records for the wire.
    pub(super) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The write side as a `Write` over `stream`, for the door's flush.
    pub(super) fn sink<'a>(&'a mut self, stream: &'a TcpStream) -> TlsSink<'a> {
        TlsSink {
            stream,
            conn: &mut self.conn,
        }
    }

    /// Queues close_notify and pushes it, best effort.
    pub(super) fn close_notify(&mut self, stream: &TcpStream) {
        self.conn.send_close_notify();
        let _ = push(stream, &mut self.conn);
    }
}

fn push(stream: &TcpStream, conn: &mut rustls::ServerConnection) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut &*stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The write side of TLS as a `Write`: plaintext into rustls, records out
/// to the socket whenever rustls' bounded buffer is full.
pub(super) struct TlsSink<'a> {
    stream: &'a TcpStream,
    conn: &'a mut rustls::ServerConnection,
}

impl Write for TlsSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        loop {
            let n = self.conn.writer().write(b)?;
            if n > 0 || b.is_empty() {
                return Ok(n);
            }
            // Full: push records to make room, or report the socket full.
            match self.conn.write_tls(&mut &*self.stream) {
                // Nothing to push (the handshake is not done, so plaintext
                // cannot be encrypted yet): wait like a full socket.
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use rustls::pki_types::CertificateDer;

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
