//! One compact JWT, checked once against the `--auth-key` and the
//! contract's claim rules.
//!
//! The token is untrusted input: its size is bounded before anything else
//! ([`MAX_TOKEN`]), it is split once, its header and claims are each
//! base64-decoded and parsed once, and the header's `alg` must be the
//! key's algorithm (so `none`, any other algorithm, and an RS256 public
//! key used as an HS256 secret all fail before a signature is computed).
//! The signature is checked before the claims are parsed: claims of an
//! unsigned token are never looked at.
//!
//! A failure is a [`Reject`] reason (for "logins by result and reason"),
//! which never carries any part of the token.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;

use super::key::{Alg, AuthKey};
use super::pattern::Patterns;
use crate::codec::names::valid_nick;

/// Largest token accepted, in bytes.
pub const MAX_TOKEN: usize = 8 * 1024;
/// Clock leeway on both sides of a token's validity (`nbf`, `exp`).
pub const LEEWAY_MS: u64 = 60_000;
/// Longest `sub` (the account), in bytes.
pub const MAX_SUB: usize = 128;

/// Why a token was refused. `name()` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Longer than [`MAX_TOKEN`].
    TooLarge,
    /// Not three base64url parts of JSON objects, or a claim of the wrong
    /// JSON type.
    Malformed,
    /// The header's `alg` is not the key's (`none` included), or the
    /// header carries `crit` extensions.
    Algorithm,
    /// The signature does not verify.
    Signature,
    /// No `exp` claim.
    NoExpiry,
    /// `exp` + leeway has passed.
    Expired,
    /// `nbf` - leeway is still to come.
    NotYetValid,
    /// `iss` is not the configured issuer.
    Issuer,
    /// `aud` does not name the configured audience.
    Audience,
    /// `sub` missing, empty, too long or with control characters.
    Subject,
    /// `nick` breaks the nick rules, or no `nick` and `sub` is not a nick.
    Nick,
    /// `rooms` or `ops` has an empty, too long or too many patterns.
    Patterns,
}

impl Reject {
    /// Every reason, for metrics label sets.
    pub const ALL: [Reject; 12] = [
        Reject::TooLarge,
        Reject::Malformed,
        Reject::Algorithm,
        Reject::Signature,
        Reject::NoExpiry,
        Reject::Expired,
        Reject::NotYetValid,
        Reject::Issuer,
        Reject::Audience,
        Reject::Subject,
        Reject::Nick,
        Reject::Patterns,
    ];

    /// The label: `too_large`, `malformed`, `algorithm`, ...
    pub fn name(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::Malformed => "malformed",
            Reject::Algorithm => "algorithm",
            Reject::Signature => "signature",
            Reject::NoExpiry => "no_expiry",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::Issuer => "issuer",
            Reject::Audience => "audience",
            Reject::Subject => "subject",
            Reject::Nick => "nick",
            Reject::Patterns => "patterns",
        }
    }

    /// A short sentence for the AUTH_FAILED detail and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Reject::TooLarge => "token too large",
            Reject::Malformed => "token malformed",
            Reject::Algorithm => "token algorithm not accepted",
            Reject::Signature => "token signature does not verify",
            Reject::NoExpiry => "token has no exp",
            Reject::Expired => "token expired",
            Reject::NotYetValid => "token not yet valid",
            Reject::Issuer => "token issuer not accepted",
            Reject::Audience => "token audience not accepted",
            Reject::Subject => "token sub not valid",
            Reject::Nick => "token nick not valid",
            Reject::Patterns => "token rooms or ops not valid",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the account.
    pub account: String,
    /// `nick`, or `sub` when that is a valid nick.
    pub nick: String,
    /// `rooms`: the rooms the account may JOIN; `None`: every room.
    pub rooms: Option<Patterns>,
    /// `ops`: rooms in which it is an operator.
    pub ops: Patterns,
    /// `admin`.
    pub admin: bool,
    /// `exp` in milliseconds since the Unix epoch (WELCOME's
    /// `token_exp_ms`); the session ends at `exp_ms + LEEWAY_MS`.
    pub exp_ms: u64,
}

impl Claims {
    /// Whether the account may JOIN `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.allows(room))
    }

    /// Whether the account is an operator of `room` by its token.
    pub fn is_op(&self, room: &str) -> bool {
        self.admin || self.ops.allows(room)
    }

    /// When the session's token runs out (with the leeway), in ms since
    /// the epoch: the chat's TOKEN_EXPIRED deadline.
    pub fn expires_at_ms(&self) -> u64 {
        self.exp_ms.saturating_add(LEEWAY_MS)
    }
}

/// The current time in milliseconds since the Unix epoch (what
/// [`Verifier::verify`] compares `exp` and `nbf` with).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The key and the configured `iss` / `aud`.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: AuthKey,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
    aud: Option<Audience>,
    nick: Option<String>,
    rooms: Option<Vec<String>>,
    ops: Option<Vec<String>>,
    admin: Option<bool>,
}

/// NumericDate seconds (possibly fractional) to ms; `None` when negative,
/// not finite or absurdly far.
fn seconds_to_ms(s: f64) -> Option<u64> {
    (s.is_finite() && (0.0..1.0e13).contains(&s)).then_some((s * 1000.0) as u64)
}

fn b64(part: &str) -> Result<Vec<u8>, Reject> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Reject::Malformed)
}

impl Verifier {
    /// A verifier for `key`, checking `iss` / `aud` when given.
    pub fn new(key: AuthKey, issuer: Option<String>, audience: Option<String>) -> Verifier {
        Verifier {
            key,
            issuer,
            audience,
        }
    }

    /// The key in use.
    pub fn key(&self) -> &AuthKey {
        &self.key
    }

    /// Swaps the key (SIGHUP): tokens verified from now on use the new one.
    pub fn set_key(&mut self, key: AuthKey) {
        self.key = key;
    }

    /// Checks `token` at `now_ms` (ms since the Unix epoch).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, Reject> {
        if token.len() > MAX_TOKEN {
            return Err(Reject::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header64), Some(claims64), Some(sig64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reject::Malformed);
        };
        let header: Header =
            serde_json::from_slice(&b64(header64)?).map_err(|_| Reject::Malformed)?;
        // Unknown critical extensions must be refused (RFC 7515 4.1.11);
        // we understand none.
        if header.crit.is_some() || Alg::from_name(&header.alg) != Some(self.key.alg()) {
            return Err(Reject::Algorithm);
        }
        let signed = &token[..header64.len() + 1 + claims64.len()];
        match jsonwebtoken::crypto::verify(
            sig64,
            signed.as_bytes(),
            self.key.decoding(),
            self.key.alg().jwt(),
        ) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(Reject::Signature),
        }
        let raw: RawClaims =
            serde_json::from_slice(&b64(claims64)?).map_err(|_| Reject::Malformed)?;
        self.check(raw, now_ms)
    }

    fn check(&self, raw: RawClaims, now_ms: u64) -> Result<Claims, Reject> {
        let exp_ms = seconds_to_ms(raw.exp.ok_or(Reject::NoExpiry)?).ok_or(Reject::Malformed)?;
        if now_ms > exp_ms.saturating_add(LEEWAY_MS) {
            return Err(Reject::Expired);
        }
        if let Some(nbf) = raw.nbf {
            let nbf_ms = seconds_to_ms(nbf).ok_or(Reject::Malformed)?;
            if now_ms.saturating_add(LEEWAY_MS) < nbf_ms {
                return Err(Reject::NotYetValid);
            }
        }
        if let Some(want) = &self.issuer {
            if raw.iss.as_deref() != Some(want.as_str()) {
                return Err(Reject::Issuer);
            }
        }
        if let Some(want) = &self.audience {
            let ok = match &raw.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(v)) => v.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(Reject::Audience);
            }
        }
        let account = raw.sub.ok_or(Reject::Subject)?;
        if !(1..=MAX_SUB).contains(&account.len()) || account.chars().any(char::is_control) {
            return Err(Reject::Subject);
        }
        let nick = match raw.nick {
            Some(n) if valid_nick(&n) => n,
            Some(_) => return Err(Reject::Nick),
            None if valid_nick(&account) => account.clone(),
            None => return Err(Reject::Nick),
        };
        let patterns = |v: Option<Vec<String>>| -> Result<Option<Patterns>, Reject> {
            v.map(|v| Patterns::new(v.iter().map(String::as_str)).ok_or(Reject::Patterns))
                .transpose()
        };
        Ok(Claims {
            account,
            nick,
            rooms: patterns(raw.rooms)?,
            ops: patterns(raw.ops)?.unwrap_or_default(),
            admin: raw.admin.unwrap_or(false),
            exp_ms,
        })
    }
}

/// The header and claims of a token decoded without checking anything
/// (no signature, no rules): what the fuzz target drives, to show that no
/// input makes the parsing steps panic.
#[cfg(feature = "fuzzing")]
pub fn fuzz_parse(token: &str) {
    let mut parts = token.split('.');
    if let Some(Ok(h)) = parts.next().map(b64) {
        let _ = serde_json::from_slice::<Header>(&h);
    }
    if let Some(Ok(c)) = parts.next().map(b64) {
        if let Ok(raw) = serde_json::from_slice::<RawClaims>(&c) {
            let v = Verifier::new(
                AuthKey::from_bytes(b"fuzz", std::path::Path::new("fuzz")).expect("secret"),
                Some("iss".into()),
                Some("aud".into()),
            );
            let _ = v.check(raw, now_unix_ms());
        }
    }
}

/// A token of the given header and claims JSON, HS256-signed with
/// `secret` (whatever the header says): the fuzz target's way to reach the
/// checks behind the signature.
#[cfg(feature = "fuzzing")]
pub fn fuzz_sign_hs(header: &str, claims: &str, secret: &[u8]) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let msg = format!("{}.{}", e.encode(header), e.encode(claims));
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&k, msg.as_bytes());
    format!("{msg}.{}", e.encode(sig.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::identity::mint::{sign_with, MintClaims, SigningKey};
    use std::path::Path;

    const NOW: u64 = 1_800_000_000_000;

    fn hs() -> (SigningKey, Verifier) {
        let s = SigningKey::from_bytes(b"s3cret\n", Path::new("k")).unwrap();
        let v = Verifier::new(
            AuthKey::from_bytes(b"s3cret\n", Path::new("k")).unwrap(),
            None,
            None,
        );
        (s, v)
    }

    fn claims(sub: &str) -> MintClaims {
        MintClaims {
            sub: sub.into(),
            exp: NOW / 1000 + 3600,
            ..MintClaims::default()
        }
    }

    fn forge(header: &str, claims: &str, secret: &[u8]) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let msg = format!("{}.{}", e.encode(header), e.encode(claims));
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let sig = ring::hmac::sign(&k, msg.as_bytes());
        format!("{msg}.{}", e.encode(sig.as_ref()))
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let (s, v) = hs();
        let mut c = claims("alice");
        c.rooms = Some(vec!["#team-*".into()]);
        c.ops = Some(vec!["#team-ops".into()]);
        let t = sign_with(&s, &c).unwrap();
        let got = v.verify(&t, NOW).unwrap();
        assert_eq!(got.account, "alice");
        assert_eq!(got.nick, "alice");
        assert!(got.may_join("#TEAM-x") && !got.may_join("#other"));
        assert!(got.is_op("#team-ops") && !got.is_op("#team-x"));
        assert!(!got.admin);
        assert_eq!(got.exp_ms, NOW + 3_600_000);
    }

    #[test]
    fn time_has_a_minute_of_leeway_both_ways() {
        let (s, v) = hs();
        let mut c = claims("alice");
        c.exp = NOW / 1000;
        c.nbf = Some(NOW / 1000 + 60);
        let t = sign_with(&s, &c).unwrap();
        assert!(v.verify(&t, NOW).is_ok());
        assert_eq!(v.verify(&t, NOW - 1), Err(Reject::NotYetValid));
        assert!(v.verify(&t, NOW + 60_000).is_ok());
        assert_eq!(v.verify(&t, NOW + 60_001), Err(Reject::Expired));
    }

    #[test]
    fn claims_follow_the_contract() {
        let (s, v) = hs();
        let check = |c: MintClaims| v.verify(&sign_with(&s, &c).unwrap(), NOW);
        // A sub that is not a nick needs a nick claim.
        assert_eq!(check(claims("alice@example.org")), Err(Reject::Nick));
        let mut c = claims("alice@example.org");
        c.nick = Some("alice".into());
        assert_eq!(check(c).unwrap().nick, "alice");
        let mut c = claims("alice");
        c.nick = Some("~alice".into());
        assert_eq!(check(c), Err(Reject::Nick));
        assert_eq!(check(claims("")), Err(Reject::Subject));
        assert_eq!(check(claims(&"a".repeat(129))), Err(Reject::Subject));
        assert_eq!(check(claims("a\u{7}b")), Err(Reject::Subject));
        let mut c = claims("x");
        c.admin = true;
        assert!(check(c).unwrap().is_op("#any"));
        let mut c = claims("x");
        c.rooms = Some(vec![String::new()]);
        assert_eq!(check(c), Err(Reject::Patterns));
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let (s, v) = hs();
        let v = Verifier::new(v.key, Some("me".into()), Some("chat".into()));
        let mut c = claims("alice");
        assert_eq!(
            v.verify(&sign_with(&s, &c).unwrap(), NOW),
            Err(Reject::Issuer)
        );
        c.iss = Some("me".into());
        assert_eq!(
            v.verify(&sign_with(&s, &c).unwrap(), NOW),
            Err(Reject::Audience)
        );
        c.aud = Some("chat".into());
        assert!(v.verify(&sign_with(&s, &c).unwrap(), NOW).is_ok());
        let t = forge(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"a","exp":1900000000,"iss":"me","aud":["x","chat"]}"#,
            b"s3cret",
        );
        assert!(v.verify(&t, NOW).is_ok());
    }

    #[test]
    fn hostile_tokens_fail_with_their_reason() {
        let (_, v) = hs();
        let good = r#"{"sub":"a","exp":1900000000}"#;
        assert!(v
            .verify(&forge(r#"{"alg":"HS256"}"#, good, b"s3cret"), NOW)
            .is_ok());
        let cases = [
            (
                forge(r#"{"alg":"none"}"#, good, b"s3cret"),
                Reject::Algorithm,
            ),
            (
                forge(r#"{"alg":"HS512"}"#, good, b"s3cret"),
                Reject::Algorithm,
            ),
            (
                forge(r#"{"alg":"hs256"}"#, good, b"s3cret"),
                Reject::Algorithm,
            ),
            (
                forge(r#"{"alg":"HS256","crit":["b64"]}"#, good, b"s3cret"),
                Reject::Algorithm,
            ),
            (
                forge(r#"{"alg":"HS256"}"#, good, b"other"),
                Reject::Signature,
            ),
            (
                forge(r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#, b"s3cret"),
                Reject::NoExpiry,
            ),
            (
                forge(
                    r#"{"alg":"HS256"}"#,
                    r#"{"sub":"a","exp":"soon"}"#,
                    b"s3cret",
                ),
                Reject::Malformed,
            ),
            (
                forge(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":-5}"#, b"s3cret"),
                Reject::Malformed,
            ),
            (
                forge(r#"{"alg":"HS256"}"#, "[]", b"s3cret"),
                Reject::Malformed,
            ),
            (forge("not json", good, b"s3cret"), Reject::Malformed),
            ("a.b".to_string(), Reject::Malformed),
            ("a.b.c.d".to_string(), Reject::Malformed),
            ("".to_string(), Reject::Malformed),
            ("é.é.é".to_string(), Reject::Malformed),
            ("x".repeat(MAX_TOKEN + 1), Reject::TooLarge),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, NOW), Err(want), "{token:.60}");
        }
        // alg none with an empty signature, the classic.
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!("{}.{}.", e.encode(r#"{"alg":"none"}"#), e.encode(good));
        assert_eq!(v.verify(&none, NOW), Err(Reject::Algorithm));
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let mut names: Vec<_> = Reject::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reject::ALL.len());
    }
}
