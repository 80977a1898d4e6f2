//! PEM files and the TLS crypto provider, shared by both ends.
//!
//! What it owns: reading certificate chains and private keys from PEM
//! files (rustls-pki-types' parser, no I/O beyond the file read), the
//! error that names the file concerned, and the one crypto provider (ring
//! only: no aws-lc, so no cmake or C toolchain beyond `cc`) that the
//! daemon's TLS door, the chat client and muxload all build their rustls
//! configurations from. The configurations themselves stay with their
//! side (the daemon's TLS door, the client's connector).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// A [`TlsError`] about `file`.
pub fn err(file: &Path, cause: impl fmt::Display) -> TlsError {
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
