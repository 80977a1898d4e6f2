//! Name rules (nicks and rooms) and their case-folded lookup keys.
//!
//! Nicks and rooms are compared case-insensitively. Rather than allocate a
//! lower-cased `String` on every lookup (a SAY looks up its room on the hot
//! path), a [`NameKey`] folds the ASCII name into a small inline array: no
//! heap allocation to build it, hash it or compare it.

use std::fmt;

/// Longest nick, in bytes.
pub const MAX_NICK: usize = 32;
/// Longest room name, in bytes, the leading `#` included.
pub const MAX_ROOM: usize = 64;

/// A nick is 1 to 32 bytes of ASCII `A-Z a-z 0-9 _ -`.
pub fn valid_nick(nick: &str) -> bool {
    (1..=MAX_NICK).contains(&nick.len())
        && nick
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A room is `#` and then 1 to 63 bytes of ASCII `A-Z a-z 0-9 _ - .`.
pub fn valid_room(room: &str) -> bool {
    match room.as_bytes().split_first() {
        Some((b'#', rest)) => {
            (1..MAX_ROOM).contains(&rest.len())
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// A case-folded name used as a map key: the ASCII lower case of a valid
/// nick or room, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameKey {
    len: u8,
    bytes: [u8; MAX_ROOM],
}

impl NameKey {
    /// Folds a name that has passed [`valid_nick`] or [`valid_room`];
    /// `None` for anything longer than a room name.
    pub fn new(name: &str) -> Option<NameKey> {
        if name.len() > MAX_ROOM {
            return None;
        }
        let mut bytes = [0u8; MAX_ROOM];
        for (dst, src) in bytes.iter_mut().zip(name.bytes()) {
            *dst = src.to_ascii_lowercase();
        }
        Some(NameKey {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The folded name.
    pub fn as_str(&self) -> &str {
        // Only ever built from a &str folded byte by byte in ASCII, so this
        // cannot fail; fall back to "" rather than panic all the same.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameKey({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_rules() {
        assert!(valid_nick("alice"));
        assert!(valid_nick("A-z_09"));
        assert!(valid_nick(&"x".repeat(32)));
        assert!(!valid_nick(""));
        assert!(!valid_nick(&"x".repeat(33)));
        assert!(!valid_nick("al ice"));
        assert!(!valid_nick("al.ice"));
        assert!(!valid_nick("#alice"));
        assert!(!valid_nick("élise"));
    }

    #[test]
    fn room_rules() {
        assert!(valid_room("#rust"));
        assert!(valid_room("#a.b-c_D9"));
        assert!(valid_room(&format!("#{}", "r".repeat(63))));
        assert!(!valid_room("#"));
        assert!(!valid_room("rust"));
        assert!(!valid_room(&format!("#{}", "r".repeat(64))));
        assert!(!valid_room("#ru st"));
        assert!(!valid_room("##"));
    }

    #[test]
    fn keys_fold_case() {
        assert_eq!(NameKey::new("#Rust"), NameKey::new("#rUST"));
        assert_ne!(NameKey::new("#rust"), NameKey::new("#rusty"));
        assert_eq!(NameKey::new("AbC").unwrap().as_str(), "abc");
        assert!(NameKey::new(&"x".repeat(65)).is_none());
    }
}
