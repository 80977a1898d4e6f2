//! The `--auth-key` file: the one key that verifies tokens, and the one
//! algorithm that key allows.
//!
//! A file that starts with `-----BEGIN` is a PEM public key (RSA for RS256,
//! EC P-256 for ES256, Ed25519 for EdDSA); anything else is an HS256
//! secret, the file's bytes less one trailing newline. Deciding by the
//! file, never by a token, is what closes the classic confusion: a PEM
//! public key is never an HMAC secret, so a token signed "HS256" with the
//! (public) key's bytes fails like any other wrong algorithm.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest `--auth-key` file read: a 16384-bit RSA public key is ~3 KiB of
/// PEM; anything far bigger is a wrong file, not a key.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// The algorithms the contract allows, each tied to one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// Every algorithm, in the order the docs list them.
    pub const ALL: [Alg; 4] = [Alg::Hs256, Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JOSE `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a header names, if it is one of ours (case matters:
    /// `hs256` is not a JOSE name).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Alg::Hs256 => Algorithm::HS256,
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key file could not be used. The message names the file and the
/// cause, never the file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The file named by `--auth-key` (or `--signing-key`).
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "auth key {}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for KeyError {}

/// A loaded `--auth-key`: the verifying key and its algorithm. Its `Debug`
/// shows the algorithm and the file, not the key (an HS256 secret is a
/// secret).
#[derive(Clone)]
pub struct AuthKey {
    alg: Alg,
    key: DecodingKey,
    path: PathBuf,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey({} from {})", self.alg, self.path.display())
    }
}

impl AuthKey {
    /// Reads and checks the file. At start-up an error is exit 1 naming
    /// the file; on SIGHUP it is logged and the running key stays.
    pub fn load(path: &Path) -> Result<AuthKey, KeyError> {
        let bytes = read_key_file(path)?;
        AuthKey::from_bytes(&bytes, path)
    }

    /// A key from a file's bytes (`origin` names it in errors and `Debug`).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<AuthKey, KeyError> {
        let fail = |why: String| KeyError {
            path: origin.to_path_buf(),
            why,
        };
        let (alg, key) = match pem_block(bytes) {
            None => (
                Alg::Hs256,
                DecodingKey::from_secret(&hs_secret(bytes, origin)?),
            ),
            Some(Err(why)) => return Err(fail(why)),
            Some(Ok(block)) => {
                if block.label.contains("PRIVATE") {
                    return Err(fail(
                        "holds a private key; give the public key (openssl pkey -in KEY -pubout)"
                            .into(),
                    ));
                }
                let kind = classify_public(&block.label, &block.der).map_err(fail)?;
                let loaded = match kind {
                    Alg::Rs256 => DecodingKey::from_rsa_pem(bytes),
                    Alg::Es256 => DecodingKey::from_ec_pem(bytes),
                    Alg::EdDsa => DecodingKey::from_ed_pem(bytes),
                    Alg::Hs256 => unreachable!("classify_public never answers HS256"),
                };
                let key = loaded.map_err(|e| fail(format!("not a usable {kind} key ({e})")))?;
                (kind, key)
            }
        };
        Ok(AuthKey {
            alg,
            key,
            path: origin.to_path_buf(),
        })
    }

    /// The one algorithm tokens must name.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.key
    }
}

/// Reads a key file, bounded.
pub(crate) fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let fail = |why: String| KeyError {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(fail(format!("larger than {MAX_KEY_FILE} bytes")));
    }
    Ok(bytes)
}

/// An HS256 secret: the bytes less one trailing newline (`\n` or `\r\n`),
/// as `echo secret > file` writes it.
pub(crate) fn hs_secret(bytes: &[u8], origin: &Path) -> Result<Vec<u8>, KeyError> {
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if secret.is_empty() {
        return Err(KeyError {
            path: origin.to_path_buf(),
            why: "empty HS256 secret".into(),
        });
    }
    Ok(secret.to_vec())
}

/// The first PEM block of a file.
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// `None` when the file is not PEM at all (an HS256 secret); a PEM file
/// whose block does not decode is an error, never a secret.
pub(crate) fn pem_block(bytes: &[u8]) -> Option<Result<PemBlock, String>> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if !bytes[start..].starts_with(b"-----BEGIN ") {
        return None;
    }
    let Ok(text) = std::str::from_utf8(&bytes[start..]) else {
        return Some(Err("PEM file that is not ASCII".into()));
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let Some(label) = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
    else {
        return Some(Err("PEM header line is malformed".into()));
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut ended = false;
    for line in lines {
        let line = line.trim();
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Some(Err(format!("PEM block {label} has no END line")));
    }
    match base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
        Ok(der) => Some(Ok(PemBlock {
            label: label.to_string(),
            der,
        })),
        Err(_) => Some(Err(format!("PEM block {label} is not valid base64"))),
    }
}

// DER object identifiers, as they appear (tag, length, value) in a
// SubjectPublicKeyInfo or a PKCS#8 PrivateKeyInfo.
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The algorithm a key's DER names. The identifiers sit in the first
/// bytes (the AlgorithmIdentifier), so only those are searched: an RSA
/// modulus could hold any byte string further on.
pub(crate) fn classify_der(der: &[u8]) -> Result<Alg, String> {
    let head = &der[..der.len().min(40)];
    if contains(head, OID_ED25519) {
        Ok(Alg::EdDsa)
    } else if contains(head, OID_EC) {
        if contains(head, OID_P256) {
            Ok(Alg::Es256)
        } else {
            Err("an EC key on a curve other than P-256 (ES256 needs prime256v1)".into())
        }
    } else if contains(head, OID_RSA) {
        Ok(Alg::Rs256)
    } else {
        Err("a key of a kind other than RSA, EC P-256 or Ed25519".into())
    }
}

fn classify_public(label: &str, der: &[u8]) -> Result<Alg, String> {
    // `RSA PUBLIC KEY` (PKCS#1) has no identifier: it is RSA by its label,
    // which jsonwebtoken's loader reads the same way.
    if label == "RSA PUBLIC KEY" {
        return Ok(Alg::Rs256);
    }
    classify_der(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ed25519 public key (RFC 8410's example).
    const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn a_secret_loses_one_trailing_newline_only() {
        let p = Path::new("s");
        assert_eq!(hs_secret(b"abc\n", p).unwrap(), b"abc");
        assert_eq!(hs_secret(b"abc\r\n", p).unwrap(), b"abc");
        assert_eq!(hs_secret(b"abc\n\n", p).unwrap(), b"abc\n");
        assert_eq!(hs_secret(b"abc", p).unwrap(), b"abc");
        assert!(hs_secret(b"\n", p).is_err());
        let k = AuthKey::from_bytes(b"secret\n", p).unwrap();
        assert_eq!(k.alg(), Alg::Hs256);
    }

    #[test]
    fn a_pem_key_fixes_its_algorithm() {
        let k = AuthKey::from_bytes(ED_PUB.as_bytes(), Path::new("ed.pem")).unwrap();
        assert_eq!(k.alg(), Alg::EdDsa);
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "AuthKey(EdDSA from ed.pem)");
    }

    #[test]
    fn broken_pem_is_an_error_naming_the_file_never_a_secret() {
        for bad in [
            "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
        ] {
            let e = AuthKey::from_bytes(bad.as_bytes(), Path::new("/etc/k.pem")).unwrap_err();
            assert!(e.to_string().starts_with("auth key /etc/k.pem: "), "{e}");
        }
        let e = AuthKey::load(Path::new("/nonexistent/key")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key"), "{e}");
    }
}
