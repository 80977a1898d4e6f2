//! Ban masks (`account:SUB`, `nick:GLOB`, `ip:CIDR`): parsing, the
//! canonical form they are stored, listed and compared under, and the glob
//! matcher behind `nick:` masks.
//!
//! A mask is parsed once, when a BAN, an UNBAN or the state file names it;
//! after that only its canonical form exists, so `nick:Spam*` and
//! `NICK:spam**` are one ban, and UNBAN finds it whichever way it is typed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Longest mask accepted, kind prefix included, in bytes.
pub const MAX_MASK: usize = 160;
/// Longest `account:` subject (the token's `sub`: 1 to 128 bytes).
pub const MAX_ACCOUNT: usize = 128;
/// Longest `nick:` glob: a guest's nick shown (`~` and 32 bytes) with room
/// for wildcards; the matcher's work is bounded by its length times the
/// nick's.
pub const MAX_GLOB: usize = 64;

/// Why a mask was refused: the request gets MALFORMED, and the state-file
/// loader names the mask and this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskError {
    /// Longer than [`MAX_MASK`].
    TooLong(usize),
    /// No `account:`, `nick:` or `ip:` in front.
    UnknownKind,
    /// Nothing after the kind.
    Empty,
    /// An `account:` subject above 128 bytes or holding a control character.
    BadAccount,
    /// A `nick:` glob above [`MAX_GLOB`] bytes or with a character no nick
    /// (or guest's `~`) has, besides `*` and `?`.
    BadGlob,
    /// An `ip:` value that is neither an address nor `ADDR/BITS`.
    BadAddress,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::TooLong(len) => {
                write!(f, "mask of {len} bytes (at most {MAX_MASK})")
            }
            MaskError::UnknownKind => {
                f.write_str("a mask starts with `account:`, `nick:` or `ip:`")
            }
            MaskError::Empty => f.write_str("nothing after the mask's kind"),
            MaskError::BadAccount => write!(
                f,
                "an account is 1 to {MAX_ACCOUNT} bytes without control characters"
            ),
            MaskError::BadGlob => write!(
                f,
                "a nick glob is 1 to {MAX_GLOB} bytes of nick characters, `~`, `*` and `?`"
            ),
            MaskError::BadAddress => {
                f.write_str("an ip mask is an IPv4 or IPv6 address, or ADDR/BITS")
            }
        }
    }
}

impl std::error::Error for MaskError {}

/// A `nick:` glob in canonical form: ASCII lower case, runs of `*`
/// collapsed to one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Glob(String);

impl Glob {
    /// Parses and canonicalizes a glob.
    pub fn new(text: &str) -> Result<Glob, MaskError> {
        if text.is_empty() {
            return Err(MaskError::Empty);
        }
        if text.len() > MAX_GLOB {
            return Err(MaskError::BadGlob);
        }
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            let ok = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'~' | b'*' | b'?');
            if !ok {
                return Err(MaskError::BadGlob);
            }
            if b == b'*' && out.ends_with('*') {
                continue;
            }
            out.push(b.to_ascii_lowercase() as char);
        }
        Ok(Glob(out))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the glob has a wildcard (otherwise it is an exact nick and
    /// is looked up in a hash map).
    pub fn has_wildcard(&self) -> bool {
        self.0.bytes().any(|b| b == b'*' || b == b'?')
    }

    /// Whether `nick` (as shown, any case) matches.
    pub fn matches(&self, nick: &str) -> bool {
        glob_match(self.0.as_bytes(), nick.as_bytes(), true)
    }
}

/// `*` (any run) and `?` (one byte) against `text`, ASCII case folded in
/// `text` when `fold` (the pattern is already lower case).
///
/// The classic two-cursor walk: on a mismatch it returns to the last `*`
/// and lets it swallow one more byte. Earlier stars never need revisiting
/// (a later star can absorb whatever an earlier one would have), so the
/// work is at most `pattern.len() * text.len()` steps, with no recursion
/// and no exponential blow-up on `*a*a*a*b` against `aaaa...`.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8], fold: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let c = if fold {
            text[t].to_ascii_lowercase()
        } else {
            text[t]
        };
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&q) if q == b'?' || q == c => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One ban mask, canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mask {
    /// `account:SUB`: the account exactly (subjects are case-sensitive, as
    /// the token's `sub` is).
    Account(String),
    /// `nick:GLOB`: the nick as shown (a guest's with its `~`).
    Nick(Glob),
    /// `ip:CIDR`: the network, host bits cleared; a bare address is a /32
    /// or a /128.
    Ip(IpNet),
}

impl Mask {
    /// Whether this mask matches a session.
    pub fn matches(&self, account: Option<&str>, nick_shown: &str, ip: IpAddr) -> bool {
        match self {
            Mask::Account(a) => account == Some(a.as_str()),
            Mask::Nick(g) => g.matches(nick_shown),
            Mask::Ip(net) => net.contains(&ip),
        }
    }
}

impl FromStr for Mask {
    type Err = MaskError;

    fn from_str(s: &str) -> Result<Mask, MaskError> {
        if s.len() > MAX_MASK {
            return Err(MaskError::TooLong(s.len()));
        }
        let (kind, value) = s.split_once(':').ok_or(MaskError::UnknownKind)?;
        // An IPv6 address holds colons too: only the first one splits.
        let kind = kind.to_ascii_lowercase();
        if !matches!(kind.as_str(), "account" | "nick" | "ip") {
            return Err(MaskError::UnknownKind);
        }
        if value.is_empty() {
            return Err(MaskError::Empty);
        }
        match kind.as_str() {
            "account" => {
                if value.len() > MAX_ACCOUNT || value.chars().any(char::is_control) {
                    return Err(MaskError::BadAccount);
                }
                Ok(Mask::Account(value.to_string()))
            }
            "nick" => Glob::new(value).map(Mask::Nick),
            _ => parse_net(value).map(Mask::Ip),
        }
    }
}

/// `ADDR` or `ADDR/BITS`, host bits cleared.
fn parse_net(value: &str) -> Result<IpNet, MaskError> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| MaskError::BadAddress)
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Account(a) => write!(f, "account:{a}"),
            Mask::Nick(g) => write!(f, "nick:{}", g.0),
            Mask::Ip(net) => write!(f, "ip:{net}"),
        }
    }
}

/// The fuzz target's check (`fuzz/scenarios/ban_mask.rs`): any bytes either
/// fail to parse or parse to a mask whose display parses back to itself,
/// within the bounds, and whose glob matcher terminates on its own text.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mask) = text.parse::<Mask>() else {
        return;
    };
    let shown = mask.to_string();
    assert!(shown.len() <= MAX_MASK + 16, "{shown}");
    assert_eq!(shown.parse::<Mask>().as_ref(), Ok(&mask), "{text:?}");
    if let Mask::Nick(g) = &mask {
        // A glob matches its own text with each wildcard read literally.
        let literal: String = g.as_str().replace('*', "").replace('?', "x");
        assert!(g.matches(&literal) || literal.is_empty(), "{g:?}");
        let _ = g.matches(&"a".repeat(40));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(s: &str) -> Mask {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn kinds_parse_to_their_canonical_form() {
        assert_eq!(mask("account:Alice").to_string(), "account:Alice");
        assert_eq!(mask("NICK:Spam**Bot?").to_string(), "nick:spam*bot?");
        assert_eq!(mask("nick:~Guest").to_string(), "nick:~guest");
        assert_eq!(mask("ip:10.1.2.3/8").to_string(), "ip:10.0.0.0/8");
        assert_eq!(mask("ip:127.0.0.2").to_string(), "ip:127.0.0.2/32");
        assert_eq!(mask("ip:::1").to_string(), "ip:::1/128");
        assert_eq!(mask("ip:2001:db8::7/32").to_string(), "ip:2001:db8::/32");
        for m in ["account:x", "nick:a*b", "ip:0.0.0.0/0", "ip:::/0"] {
            assert_eq!(mask(&mask(m).to_string()), mask(m));
        }
    }

    #[test]
    fn bad_masks_say_why() {
        let err = |s: &str| s.parse::<Mask>().unwrap_err();
        assert_eq!(err("alice"), MaskError::UnknownKind);
        assert_eq!(err("host:x"), MaskError::UnknownKind);
        assert_eq!(err("nick:"), MaskError::Empty);
        assert_eq!(err("nick:a b"), MaskError::BadGlob);
        assert_eq!(err(&format!("nick:{}", "a".repeat(65))), MaskError::BadGlob);
        assert_eq!(
            err(&format!("account:{}", "a".repeat(129))),
            MaskError::BadAccount
        );
        assert_eq!(err("account:a\u{7}"), MaskError::BadAccount);
        assert_eq!(err("ip:10.0.0.0/33"), MaskError::BadAddress);
        assert_eq!(err("ip:example.com"), MaskError::BadAddress);
        assert!(matches!(err(&"x".repeat(200)), MaskError::TooLong(200)));
        assert!(err("ip:x").to_string().contains("ADDR/BITS"));
    }

    #[test]
    fn globs_match_case_insensitively() {
        let g = Glob::new("spam*").unwrap();
        assert!(g.matches("SpamBot") && g.matches("spam") && !g.matches("xspam"));
        let g = Glob::new("b?b").unwrap();
        assert!(g.matches("bob") && g.matches("BEB") && !g.matches("bb"));
        let g = Glob::new("*bot*").unwrap();
        assert!(g.matches("robotic") && !g.matches("bo"));
        assert!(Glob::new("~*").unwrap().matches("~guest"));
        assert!(!Glob::new("~*").unwrap().matches("guest"));
    }

    #[test]
    fn pathological_globs_stay_bounded() {
        let g = Glob::new(&"*a".repeat(31)).unwrap();
        let text = "a".repeat(30) + "b";
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(!g.matches(&text));
        }
        // Exponential backtracking would take years here; bounded work is
        // well under a millisecond a match even on a busy machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn masks_match_sessions() {
        let ip: IpAddr = "10.9.8.7".parse().unwrap();
        assert!(mask("account:alice").matches(Some("alice"), "x", ip));
        assert!(!mask("account:alice").matches(None, "alice", ip));
        assert!(mask("nick:al*").matches(None, "ALICE", ip));
        assert!(mask("ip:10.0.0.0/8").matches(None, "x", ip));
        assert!(!mask("ip:::/0").matches(None, "x", ip));
    }

    proptest::proptest! {
        #[test]
        fn fuzz_check_holds(kind in 0u8..4, body in "[ -~]{0,80}") {
            let prefix = ["account:", "nick:", "ip:", ""][kind as usize];
            fuzz_check(format!("{prefix}{body}").as_bytes());
        }

        #[test]
        fn glob_agrees_with_a_naive_matcher(p in "[ab*?]{0,8}", t in "[ab]{0,8}") {
            fn naive(p: &[u8], t: &[u8]) -> bool {
                match (p.first(), t.first()) {
                    (None, _) => t.is_empty(),
                    (Some(b'*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
                    (Some(&c), Some(&d)) if c == b'?' || c == d => naive(&p[1..], &t[1..]),
                    _ => false,
                }
            }
            proptest::prop_assert_eq!(glob_match(p.as_bytes(), t.as_bytes(), false), naive(p.as_bytes(), t.as_bytes()));
        }
    }
}
