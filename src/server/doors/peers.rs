//! Which "address" a connection counts against for `--max-per-ip`.
//!
//! One host rarely has one address: a machine holds a whole IPv6 /64 (its
//! privacy addresses change all day), and on Linux every address of
//! 127.0.0.0/8 is local. Counting exact addresses let one host open the
//! limit on each of them (127.0.0.2 to .50 gave 196 connections). So the
//! limit counts a *prefix*: by default an IPv4 address (/32) and an IPv6
//! /64, both configurable (`--per-ip-prefix-v4`, `--per-ip-prefix-v6`).
//!
//! The loop keys admission on one peer address, the one [`PeerKeys::key`]
//! is given: today the socket's peer, later whatever a trusted proxy says
//! the client is. This module owns only the mapping from that address to
//! the key it is counted under.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How addresses are grouped for the per-address limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKeys {
    /// Leading bits of an IPv4 address that name a client (0..=32).
    pub v4_bits: u8,
    /// Leading bits of an IPv6 address that name a client (0..=128).
    pub v6_bits: u8,
}

impl Default for PeerKeys {
    /// /32 and /64: the smallest blocks one client usually holds.
    fn default() -> Self {
        PeerKeys {
            v4_bits: 32,
            v6_bits: 64,
        }
    }
}

impl PeerKeys {
    /// The key `ip` is counted under: its prefix, the other bits zero. An
    /// IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
    /// client) counts as the IPv4 address it maps.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.v4_bits))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.v6_bits))),
        }
    }
}

fn mask32(bits: u8) -> u32 {
    match bits {
        0 => 0,
        b => u32::MAX << (32 - u32::from(b.min(32))),
    }
}

fn mask128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b => u128::MAX << (128 - u32::from(b.min(128))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(keys: PeerKeys, s: &str) -> String {
        keys.key(s.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv4_defaults_to_the_exact_address() {
        let k = PeerKeys::default();
        assert_eq!(key(k, "203.0.113.7"), "203.0.113.7");
        assert_ne!(key(k, "203.0.113.7"), key(k, "203.0.113.8"));
    }

    #[test]
    fn ipv4_prefix_groups_a_block() {
        let k = PeerKeys {
            v4_bits: 24,
            v6_bits: 64,
        };
        assert_eq!(key(k, "127.0.0.2"), "127.0.0.0");
        assert_eq!(key(k, "127.0.0.2"), key(k, "127.0.0.20"));
        assert_ne!(key(k, "127.0.0.2"), key(k, "127.0.1.2"));
        let all = PeerKeys {
            v4_bits: 0,
            v6_bits: 0,
        };
        assert_eq!(key(all, "198.51.100.1"), "0.0.0.0");
        assert_eq!(key(all, "2001:db8::1"), "::");
    }

    #[test]
    fn ipv6_defaults_to_the_slash_64() {
        let k = PeerKeys::default();
        // Two privacy addresses of one host: one key.
        assert_eq!(
            key(k, "2001:db8:1:2:a:b:c:d"),
            key(k, "2001:db8:1:2:ffff:1:2:3")
        );
        assert_eq!(key(k, "2001:db8:1:2:a:b:c:d"), "2001:db8:1:2::");
        // The next /64 is another client.
        assert_ne!(key(k, "2001:db8:1:2::1"), key(k, "2001:db8:1:3::1"));
        let exact = PeerKeys {
            v4_bits: 32,
            v6_bits: 128,
        };
        assert_ne!(key(exact, "2001:db8::1"), key(exact, "2001:db8::2"));
        let wide = PeerKeys {
            v4_bits: 32,
            v6_bits: 48,
        };
        assert_eq!(
            key(wide, "2001:db8:1:2::1"),
            key(wide, "2001:db8:1:ffff::1")
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let k = PeerKeys {
            v4_bits: 24,
            v6_bits: 64,
        };
        assert_eq!(key(k, "::ffff:192.0.2.9"), "192.0.2.0");
    }
}
