//! The client side of the TLS door (`muxchat --tls`, `muxload --tls`): whom
//! to trust, and a non-blocking byte stream that carries the binary
//! protocol inside a rustls `ClientConnection`.
//!
//! rustls does no I/O of its own, so [`TlsStream`] pumps ciphertext between
//! the connection and a non-blocking socket: `read` pulls records until
//! plaintext appears or the socket would block, `write` hands plaintext to
//! rustls and pushes out what ciphertext it can. Ciphertext the socket did
//! not take stays in rustls: [`TlsStream::wants_write`] says so, and the
//! caller keeps WRITABLE interest while it does (readiness done right).
//!
//! Trust: `--ca FILE` alone (the CA that signed the daemon's certificate,
//! or a self-signed certificate itself); without it the system's PEM
//! bundle (no webpki-roots: nothing is downloaded); `--insecure` accepts any
//! certificate, for tests, and says so loudly.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

use crate::codec::pem::{load_certs, provider};

/// Where the system keeps its CA bundle, in the order tried (Debian,
/// Fedora, Alpine/macOS); `SSL_CERT_FILE` comes first when set.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Whom the client trusts to vouch for the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only the certificates in this PEM file (`--ca`).
    Ca(PathBuf),
    /// The system's CA bundle.
    System,
    /// Anyone (`--insecure`): the handshake still checks that the server
    /// holds the key of the certificate it shows, but not who it is.
    Insecure,
}

/// The TLS options muxchat and muxload share (`--tls`, `--ca`,
/// `--insecure`), flattened into each binary's arguments.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Speak to the server inside TLS (the daemon needs --tls-cert and
    /// --tls-key). The certificate must name the --connect host.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust only the certificates in this PEM file (the CA, or
    /// the daemon's self-signed certificate); without it, the system's CA
    /// bundle.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "insecure"
    )]
    pub ca: Option<PathBuf>,
    /// With --tls: accept any certificate (testing only; anyone on the path
    /// can then read and change the traffic).
    #[arg(long, requires = "tls")]
    pub insecure: bool,
}

impl TlsArgs {
    /// The TLS client these options ask for (`None` without `--tls`),
    /// checking certificates against `target`'s host. `--insecure` prints
    /// its warning, prefixed with `program`, to stderr.
    pub fn client(&self, program: &str, target: &str) -> Result<Option<ClientTls>, String> {
        if !self.tls {
            return Ok(None);
        }
        let trust = match (&self.ca, self.insecure) {
            (Some(ca), _) => Trust::Ca(ca.clone()),
            (None, true) => {
                eprintln!("{program}: {INSECURE_WARNING}");
                Trust::Insecure
            }
            (None, false) => Trust::System,
        };
        ClientTls::new(trust, target).map(Some)
    }
}

/// The warning `--insecure` prints before connecting.
pub const INSECURE_WARNING: &str = "WARNING: --insecure: the server's certificate is NOT checked; \
     anyone between here and the server can read and change everything sent";

/// What a client needs to open TLS connections: the shared configuration
/// and the name the certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    trust: Trust,
}

impl ClientTls {
    /// Builds the configuration for `trust`, checking certificates against
    /// the host part of `target` (`HOST:PORT`, `[V6]:PORT` or `HOST`).
    pub fn new(trust: Trust, target: &str) -> Result<ClientTls, String> {
        let host = host_of(target);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("--tls: {host:?} is not a valid server name or address"))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("--tls: {e}"))?;
        let config = match &trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
                .with_no_client_auth(),
            Trust::Ca(path) => builder
                .with_root_certificates(roots_from(path)?)
                .with_no_client_auth(),
            Trust::System => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            name,
            trust,
        })
    }

    /// Starts a client connection over `sock` (the ClientHello is queued
    /// at once; nothing is written until the first `write` or `flush`).
    pub fn connect<S: Read + Write>(&self, sock: S) -> io::Result<TlsStream<S>> {
        let tls = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(|e| io::Error::other(format!("cannot start TLS: {e}")))?;
        Ok(TlsStream {
            tls,
            sock,
            host: self.name.to_str().into_owned(),
            ca_hint: match &self.trust {
                Trust::Ca(p) => format!("the CA in {}", p.display()),
                Trust::System => "the system's CAs".into(),
                Trust::Insecure => String::new(),
            },
        })
    }
}

/// The host part of `HOST:PORT`, `[V6]:PORT` or `HOST`.
pub fn host_of(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => target,
    }
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let certs = load_certs(path).map_err(|e| format!("--ca {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        let Ok(certs) = load_certs(&path) else {
            continue;
        };
        let mut roots = RootCertStore::empty();
        // A system bundle may hold a certificate rustls cannot parse;
        // the others still count.
        let (_added, _ignored) = roots.add_parsable_certificates(certs);
        if !roots.is_empty() {
            return Ok(roots);
        }
    }
    Err(format!(
        "--tls: no CA to check the server's certificate with: give --ca FILE (the CA that \
         signed it, or a self-signed certificate itself), or --insecure to skip the check \
         (testing only); no system CA bundle found ($SSL_CERT_FILE, {})",
        SYSTEM_BUNDLES.join(", ")
    ))
}

/// `--insecure`: any certificate is accepted, but the handshake signature is
/// still verified (the server must hold the key of what it shows).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The binary protocol's byte stream inside TLS, over a non-blocking socket.
pub struct TlsStream<S> {
    tls: ClientConnection,
    sock: S,
    host: String,
    ca_hint: String,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("host", &self.host)
            .field("handshaking", &self.tls.is_handshaking())
            .finish()
    }
}

const NOT_TLS_HINT: &str = "is TLS enabled on that port? muxchatd needs --tls-cert and --tls-key";

impl<S: Read + Write> TlsStream<S> {
    /// The socket, to register with a poller.
    pub fn socket(&mut self) -> &mut S {
        &mut self.sock
    }

    /// Whether ciphertext is waiting for the socket to take it.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Writes queued ciphertext until done or the socket would block.
    pub fn send_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A rustls error as a sentence a user can act on.
    fn describe(&self, e: &rustls::Error) -> String {
        let host = &self.host;
        match e {
            // webpki's CaUsedAsEndEntity reaches us only as an opaque
            // `Other`: the usual `openssl req -x509` recipe makes exactly this
            // certificate (OpenSSL 3 marks it CA:TRUE), so it gets its own
            // sentence saying what to do.
            rustls::Error::InvalidCertificate(cause)
                if format!("{cause:?}").contains("CaUsedAsEndEntity") =>
            {
                format!(
                    "TLS: the server {host} presents a CA certificate (basicConstraints \
                     CA:TRUE, as `openssl req -x509` makes by default) as its own, and a CA \
                     certificate cannot identify a server: give muxchatd a leaf certificate \
                     (CA:FALSE, with {host} in its subjectAltName) signed by a CA, and pass \
                     that CA to --ca (the openssl recipe is in docs/OPERATIONS.md, section 3)"
                )
            }
            rustls::Error::InvalidCertificate(cause) => format!(
                "TLS: the certificate of {host} is not trusted ({cause:?}; checked against {}); \
                 --ca FILE names the CA that signed it",
                self.ca_hint
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }
                if self.tls.is_handshaking() =>
            {
                format!("TLS: {host} did not answer in TLS ({e}); {NOT_TLS_HINT}")
            }
            e => format!("TLS with {host} failed: {e}"),
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the server closed the connection without a TLS close_notify",
                    ))
                }
                Err(e) => return Err(e),
            }
            // No plaintext left: pull more records from the socket.
            if self.tls.read_tls(&mut self.sock)? == 0 {
                if self.tls.is_handshaking() {
                    return Err(io::Error::new(
                        ErrorKind::ConnectionAborted,
                        format!(
                            "TLS: {} closed the connection during the handshake; {NOT_TLS_HINT}",
                            self.host
                        ),
                    ));
                }
                // EOF seen: the reader now answers Ok(0) or UnexpectedEof.
                continue;
            }
            if let Err(e) = self.tls.process_new_packets() {
                let msg = self.describe(&e);
                // Best effort: tell the server why (rustls queued an alert).
                let _ = self.send_tls();
                return Err(io::Error::new(ErrorKind::InvalidData, msg));
            }
            // Handshake replies, key updates.
            self.send_tls()?;
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls holds plaintext up to its buffer limit (also during the
        // handshake); beyond it, the caller keeps the rest and waits.
        let n = self.tls.writer().write(buf)?;
        self.send_tls()?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_is_cut_from_the_target() {
        assert_eq!(host_of("localhost:25000"), "localhost");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:25000"), "::1");
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(host_of("::1"), "::1");
    }
}
