//! The `token_parse` fuzz target: the token verifier on arbitrary text.
//!
//! Input: a selector byte, then the token. The selector picks the key
//! (an HS256 secret, or an Ed25519 public key) and whether the token is
//! made well-formed first (its first two parts base64url-encoded as the
//! header and claims JSON, signed with the secret when the key is HS256),
//! so the claim checks behind the signature are reached too. Checks: no
//! panic; every refusal is one of the reasons; a token above 8 KiB is
//! TooLarge whatever it holds; a token accepted has claims that keep the
//! contract (sub 1..128 bytes without control characters, a valid nick);
//! and the unsigned header and claims decode (`fuzz_parse`) never panics.

use std::path::Path;

use muxchat::codec::valid_nick;
use muxchat::server::identity::verify::{fuzz_parse, fuzz_sign_hs};
use muxchat::server::identity::{AuthKey, Reject, Verifier, MAX_TOKEN};

use super::Bytes;

const SECRET: &[u8] = b"fuzz secret";
const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----\n\
    MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
    -----END PUBLIC KEY-----\n";

pub fn check(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let text = String::from_utf8_lossy(input.rest).into_owned();
    let ed = sel & 1 == 1;
    let key = if ed {
        AuthKey::from_bytes(ED_PUB.as_bytes(), Path::new("fuzz-ed")).expect("ed key")
    } else {
        AuthKey::from_bytes(SECRET, Path::new("fuzz-hs")).expect("secret")
    };
    let issuer = (sel & 4 != 0).then(|| "iss".to_string());
    let audience = (sel & 8 != 0).then(|| "aud".to_string());
    let v = Verifier::new(key, issuer, audience);
    let token = if sel & 2 != 0 {
        // "HEADER JSON\nCLAIMS JSON" made into a signed token.
        let (h, c) = text
            .split_once('\n')
            .unwrap_or((r#"{"alg":"HS256"}"#, &text));
        fuzz_sign_hs(h, c, SECRET)
    } else {
        text
    };
    fuzz_parse(&token);
    let now = u64::from(sel) * 1_000_000_000_000 / 32;
    match v.verify(&token, now) {
        Ok(c) => {
            assert!(token.len() <= MAX_TOKEN);
            assert!(!ed, "an Ed25519 key accepted a token the fuzzer made");
            assert!((1..=128).contains(&c.account.len()));
            assert!(!c.account.chars().any(char::is_control));
            assert!(valid_nick(&c.nick), "{:?}", c.nick);
            assert!(now <= c.expires_at_ms());
        }
        Err(r) => {
            assert!(Reject::ALL.contains(&r));
            if token.len() > MAX_TOKEN {
                assert_eq!(r, Reject::TooLarge);
            }
        }
    }
}
