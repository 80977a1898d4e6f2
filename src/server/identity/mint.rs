//! `muxchatd token`: a signed token on stdout, from a signing key (an
//! HS256 secret file, or a PEM private key: RSA, EC P-256 or Ed25519,
//! PKCS#8 or, for RSA, PKCS#1), for operators and tests, like
//! `centrifugo gentoken`. The algorithm comes from the key, as for
//! verification.
//!
//! The token goes to stdout and nowhere else: nothing here logs it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use super::key::{classify_der, hs_secret, pem_block, read_key_file, Alg, KeyError};

/// A loaded signing key. Its `Debug` names the algorithm and file only.
pub struct SigningKey {
    alg: Alg,
    key: EncodingKey,
    path: PathBuf,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} from {})", self.alg, self.path.display())
    }
}

impl SigningKey {
    /// Reads the key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        SigningKey::from_bytes(&read_key_file(path)?, path)
    }

    /// A key from a file's bytes (`origin` names it in errors).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<SigningKey, KeyError> {
        let fail = |why: String| KeyError {
            path: origin.to_path_buf(),
            why,
        };
        let (alg, key) = match pem_block(bytes) {
            None => (
                Alg::Hs256,
                EncodingKey::from_secret(&hs_secret(bytes, origin)?),
            ),
            Some(Err(why)) => return Err(fail(why)),
            Some(Ok(block)) => {
                let alg = match block.label.as_str() {
                    "RSA PRIVATE KEY" => Alg::Rs256,
                    "PRIVATE KEY" => classify_der(&block.der).map_err(fail)?,
                    "EC PRIVATE KEY" => {
                        return Err(fail(
                            "an EC key in SEC1 form; convert it to PKCS#8 \
                             (openssl pkcs8 -topk8 -nocrypt -in KEY)"
                                .into(),
                        ))
                    }
                    other => {
                        return Err(fail(format!(
                            "a PEM {other}, not a private key (PRIVATE KEY or RSA PRIVATE KEY)"
                        )))
                    }
                };
                let loaded = match alg {
                    Alg::Rs256 => EncodingKey::from_rsa_pem(bytes),
                    Alg::Es256 => EncodingKey::from_ec_pem(bytes),
                    Alg::EdDsa => EncodingKey::from_ed_pem(bytes),
                    Alg::Hs256 => unreachable!("classify_der never answers HS256"),
                };
                let key = loaded.map_err(|e| fail(format!("not a usable {alg} key ({e})")))?;
                (alg, key)
            }
        };
        Ok(SigningKey {
            alg,
            key,
            path: origin.to_path_buf(),
        })
    }

    /// The algorithm its tokens name.
    pub fn alg(&self) -> Alg {
        self.alg
    }
}

/// The claims a minted token carries (absent ones are left out).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MintClaims {
    /// The account.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The account's nick, when `sub` is not one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// Room patterns the account may join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Room patterns it is an operator of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<String>>,
    /// A server administrator.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Signs `claims` with `key` (header `{"typ":"JWT","alg":...}`).
pub fn sign_with(key: &SigningKey, claims: &MintClaims) -> Result<String, String> {
    jsonwebtoken::encode(&Header::new(key.alg.jwt()), claims, &key.key)
        .map_err(|e| format!("cannot sign with {}: {e}", key.path.display()))
}

/// `muxchatd token`'s options.
#[derive(Parser, Debug)]
#[command(
    name = "muxchatd token",
    version,
    about = "muxchatd token: prints a signed token (JWT) for protocol version 3 on stdout. \
             The algorithm follows the key: an HS256 secret file (the daemon's --auth-key \
             itself), or a PEM private key (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA) \
             whose public key is the daemon's --auth-key.",
    long_about = None
)]
pub struct TokenArgs {
    /// The signing key: an HS256 secret file or a PEM private key.
    #[arg(long, value_name = "FILE")]
    pub signing_key: PathBuf,
    /// The account (the token's `sub`).
    #[arg(long, value_name = "ACCOUNT")]
    pub sub: String,
    /// How long the token is valid: seconds, or with a unit (`90s`, `30m`,
    /// `1h`, `7d`).
    #[arg(long, value_name = "TTL", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// The account's nick (default: the account, if it is a valid nick).
    #[arg(long, value_name = "NICK")]
    pub nick: Option<String>,
    /// Rooms the account may join, comma-separated patterns (`*` matches
    /// any run); default: every room.
    #[arg(long, value_name = "PATTERN[,PATTERN]", value_delimiter = ',')]
    pub rooms: Option<Vec<String>>,
    /// Rooms the account is an operator of, comma-separated patterns.
    #[arg(long, value_name = "PATTERN[,PATTERN]", value_delimiter = ',')]
    pub ops: Option<Vec<String>>,
    /// A server administrator.
    #[arg(long)]
    pub admin: bool,
    /// The token's `iss` (the daemon's --auth-issuer).
    #[arg(long, value_name = "ISSUER")]
    pub iss: Option<String>,
    /// The token's `aud` (the daemon's --auth-audience).
    #[arg(long, value_name = "AUDIENCE")]
    pub aud: Option<String>,
}

/// `90`, `90s`, `30m`, `1h`, `7d` as seconds (at least 1, at most 10 years).
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: use seconds or a unit s, m, h or d (e.g. 1h)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: not a number of seconds"))?;
    let secs = n.saturating_mul(mult);
    if !(1..=10 * 365 * 86_400).contains(&secs) {
        return Err(format!("{s:?}: between 1 second and 10 years"));
    }
    Ok(secs)
}

/// Builds the claims from the options at `now_s`.
pub fn claims_of(args: &TokenArgs, now_s: u64) -> MintClaims {
    MintClaims {
        sub: args.sub.clone(),
        exp: now_s + args.ttl,
        iat: Some(now_s),
        nbf: None,
        iss: args.iss.clone(),
        aud: args.aud.clone(),
        nick: args.nick.clone(),
        rooms: args.rooms.clone(),
        ops: args.ops.clone(),
        admin: args.admin,
    }
}

/// `muxchatd token ...` (argv as the process got it, `token` second).
/// Exit 0 with the token on stdout; 2 on a usage error; 1 when the key
/// cannot be used, with one stderr line naming the file.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let args = match TokenArgs::try_parse_from(
        std::iter::once("muxchatd token".into()).chain(argv.into_iter().skip(2)),
    ) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let now_s = super::verify::now_unix_ms() / 1000;
    let minted = SigningKey::load(&args.signing_key)
        .map_err(|e| e.to_string())
        .and_then(|key| sign_with(&key, &claims_of(&args, now_s)));
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("muxchatd token: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_with_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        for bad in ["", "0", "1w", "h", "-1", "99999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_keys_and_sec1_are_not_signing_keys() {
        let p = Path::new("k.pem");
        let pubkey = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
            -----END PUBLIC KEY-----\n";
        assert!(SigningKey::from_bytes(pubkey.as_bytes(), p).is_err());
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n";
        let e = SigningKey::from_bytes(sec1.as_bytes(), p).unwrap_err();
        assert!(e.why.contains("PKCS#8"), "{e}");
        let hs = SigningKey::from_bytes(b"x\n", p).unwrap();
        assert_eq!(format!("{hs:?}"), "SigningKey(HS256 from k.pem)");
    }
}
