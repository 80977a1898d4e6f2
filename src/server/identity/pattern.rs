//! Room patterns of the `rooms` and `ops` claims: `*` matches any run of
//! characters (the empty one included), everything else itself, ASCII
//! letters case-insensitively (room names are ASCII).
//!
//! The matcher is the linear greedy one with a single backtrack point (the
//! last `*` seen): a pattern of many stars costs O(pattern x room) at
//! worst, and both are bounded (a room is at most 64 bytes, a pattern at
//! most [`MAX_PATTERN`]), so no token can make a JOIN expensive.

/// Longest pattern accepted in a claim, in bytes.
pub const MAX_PATTERN: usize = 128;
/// Most patterns in one claim.
pub const MAX_PATTERNS: usize = 256;

/// One pattern, folded to lower case once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Box<[u8]>);

impl Pattern {
    /// A pattern from a claim; `None` if empty or longer than
    /// [`MAX_PATTERN`].
    pub fn new(text: &str) -> Option<Pattern> {
        if text.is_empty() || text.len() > MAX_PATTERN {
            return None;
        }
        Some(Pattern(
            text.bytes().map(|b| b.to_ascii_lowercase()).collect(),
        ))
    }

    /// The pattern as written (folded).
    pub fn as_str(&self) -> &str {
        // Lower-casing ASCII bytes keeps UTF-8 valid.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `room` matches, case-insensitively.
    pub fn matches(&self, room: &str) -> bool {
        let p = &self.0;
        let s = room.as_bytes();
        let (mut pi, mut si) = (0, 0);
        // Where the last star was, and where in `s` it began matching.
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && p[pi] == s[si].to_ascii_lowercase() {
                pi += 1;
                si += 1;
            } else if let Some((sp, ss)) = star {
                // Let the star take one more character and retry.
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

/// A claim's list of patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// The patterns of a claim; `None` if one is empty or too long, or
    /// there are more than [`MAX_PATTERNS`].
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<Patterns> {
        let mut v = Vec::new();
        for t in texts {
            if v.len() == MAX_PATTERNS {
                return None;
            }
            v.push(Pattern::new(t)?);
        }
        Some(Patterns(v))
    }

    /// Whether any pattern matches `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| p.matches(room))
    }

    /// The patterns, in claim order.
    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (an empty `ops` allows nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s)
    }

    #[test]
    fn stars_match_any_run_case_insensitively() {
        assert!(m("#team-*", "#team-a"));
        assert!(m("#team-*", "#TEAM-"));
        assert!(!m("#team-*", "#team"));
        assert!(m("*", "#anything"));
        assert!(m("#a*b*c", "#aXXbYYc"));
        assert!(m("#a*b*c", "#abc"));
        assert!(!m("#a*b*c", "#acb"));
        assert!(m("#Rust", "#rUST"));
        assert!(!m("#rust", "#rusty"));
        assert!(m("**#x**", "#x"));
        assert!(m("*-ops", "#eu-ops"));
        assert!(!m("*-ops", "#eu-opsx"));
        assert!(m("#a*a*a*a*a*b", "#aaaaaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("#a*a*a*a*a*b", "#aaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn bounds_and_lists() {
        assert!(Pattern::new("").is_none());
        assert!(Pattern::new(&"x".repeat(MAX_PATTERN + 1)).is_none());
        let ps = Patterns::new(["#a", "#b-*"]).unwrap();
        assert!(ps.allows("#B-1") && ps.allows("#a") && !ps.allows("#c"));
        assert!(!Patterns::default().allows("#a"));
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("#{i}")).collect();
        assert!(Patterns::new(many.iter().map(String::as_str)).is_none());
    }
}
