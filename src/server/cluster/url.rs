//! The value of `--redis`: `redis://HOST[:PORT][/DB]`, parsed and checked
//! before the daemon binds anything, so a typo is a usage error naming what
//! is wrong rather than a connection failure later.
//!
//! Only plain TCP to one Redis is supported: `rediss://` (TLS), Unix
//! sockets and credentials in the URL are refused by name, so nobody
//! believes they are in use when they are not.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Redis's standard port, used when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Highest database index accepted. Redis's default configuration has 16
/// (0..=15), but `databases` can be raised, so only absurd values are
/// refused here; Redis itself refuses an index it does not have.
const MAX_DB: u32 = 1_000_000;

/// Where the cluster's Redis is: a host (name, IPv4 address or IPv6 address
/// without brackets), a port and a database index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or IP address (IPv6 without the brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database index selected with SELECT after connecting.
    pub db: u32,
}

impl RedisUrl {
    /// The addresses the host resolves to, in the resolver's order. This
    /// may block on DNS, so it is for start-up and reconnection set-up,
    /// never for the serving loop's hot path.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisUrl, String> {
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("rediss") => {
                return Err(
                    "rediss:// (TLS to Redis) is not supported; use redis://HOST:PORT".into(),
                )
            }
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("unix")
                    || scheme.eq_ignore_ascii_case("redis+unix") =>
            {
                return Err("Unix sockets are not supported; use redis://HOST:PORT".into())
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "unknown scheme `{scheme}://`; expected redis://HOST:PORT[/DB]"
                ))
            }
            None if s.starts_with('/') => {
                return Err("Unix sockets are not supported; use redis://HOST:PORT".into())
            }
            None => return Err("expected redis://HOST:PORT[/DB] (the redis:// is required)".into()),
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(String::from(
                "query parameters and fragments are not supported; \
                 expected redis://HOST:PORT[/DB]",
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if authority.contains('@') {
            return Err(String::from(
                "a user name or password in the URL is not supported \
                 (AUTH is not implemented); use redis://HOST:PORT",
            ));
        }
        let (host, port) = split_host_port(authority)?;
        let db = match path {
            None | Some("") => 0,
            Some(db) => db
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= MAX_DB && db.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("database `{db}` is not a number from 0 to {MAX_DB}"))?,
        };
        Ok(RedisUrl { host, port, db })
    }
}

/// Splits `HOST[:PORT]` (HOST may be `[IPv6]`) and checks both halves.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("the host is missing".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (ip, after) = inner
            .split_once(']')
            .ok_or_else(|| String::from("`[` without a closing `]` around the IPv6 address"))?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{p}` after the IPv6 address"))?,
            ),
        };
        (ip.to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => {
                if p.contains(':') {
                    return Err(
                        "an IPv6 address must be in brackets, as in redis://[::1]:6379".into(),
                    );
                }
                (h.to_string(), Some(p))
            }
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if !host.contains(':') {
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            host.parse::<std::net::Ipv4Addr>()
                .map_err(|_| format!("`{host}` is not an IPv4 address"))?;
        } else if !is_host_name(&host) {
            return Err(format!("`{host}` is not a valid host name"));
        }
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&n| n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("port `{p}` is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// Whether `h` is a DNS name: labels of 1..=63 letters, digits, hyphens
/// (not at either end) and underscores (container and service names use
/// them), joined by dots, 253 bytes in all.
fn is_host_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "redis://{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.to_string(),
            port,
            db,
        }
    }

    #[test]
    fn parses_names_ipv4_ipv6_ports_and_databases() {
        let cases = [
            ("redis://127.0.0.1:6380", url("127.0.0.1", 6380, 0)),
            ("redis://localhost", url("localhost", 6379, 0)),
            ("redis://localhost/", url("localhost", 6379, 0)),
            (
                "REDIS://redis.example.com:7000/3",
                url("redis.example.com", 7000, 3),
            ),
            ("redis://[::1]:6379/0", url("::1", 6379, 0)),
            ("redis://[::1]", url("::1", 6379, 0)),
            ("redis://[fe80::1]/2", url("fe80::1", 6379, 2)),
            ("redis://cache-1_a:1", url("cache-1_a", 1, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<RedisUrl>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn displays_back_to_a_url_that_parses_the_same() {
        for (text, shown) in [
            ("redis://127.0.0.1:6380", "redis://127.0.0.1:6380"),
            ("redis://localhost", "redis://localhost:6379"),
            ("redis://[::1]:7000/5", "redis://[::1]:7000/5"),
            ("redis://h:1/0", "redis://h:1"),
        ] {
            let parsed: RedisUrl = text.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<RedisUrl>(), Ok(parsed));
        }
    }

    #[test]
    fn refuses_what_is_not_supported_by_name() {
        let cases = [
            (
                "rediss://h:6379",
                "rediss:// (TLS to Redis) is not supported",
            ),
            ("unix:///tmp/redis.sock", "Unix sockets are not supported"),
            ("redis+unix:///tmp/r.sock", "Unix sockets are not supported"),
            ("/tmp/redis.sock", "Unix sockets are not supported"),
            (
                "redis://user:pw@h:6379",
                "password in the URL is not supported",
            ),
            ("redis://:pw@h", "password in the URL is not supported"),
            ("redis://h:6379/0?timeout=1", "query parameters"),
        ];
        for (text, want) in cases {
            let err = text.parse::<RedisUrl>().unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn names_what_is_wrong_in_junk() {
        let cases = [
            ("", "redis:// is required"),
            ("127.0.0.1:6379", "redis:// is required"),
            ("http://h:1", "unknown scheme `http://`"),
            ("redis://", "host is missing"),
            ("redis://:6379", "host is missing"),
            ("redis://h:", "port `` is not a number"),
            ("redis://h:0", "port `0`"),
            ("redis://h:65536", "port `65536`"),
            ("redis://h:+1", "port `+1`"),
            ("redis://h:x", "port `x`"),
            ("redis://h/x", "database `x`"),
            ("redis://h/-1", "database `-1`"),
            ("redis://h/1/2", "database `1/2`"),
            ("redis://::1:6379", "must be in brackets"),
            ("redis://[::1", "without a closing"),
            ("redis://[nope]:1", "`nope` is not an IPv6 address"),
            ("redis://[::1]x", "unexpected `x`"),
            ("redis://300.1.1.1", "not an IPv4 address"),
            ("redis://bad host", "not a valid host name"),
            ("redis://a..b", "not a valid host name"),
            ("redis://-a", "not a valid host name"),
        ];
        for (text, want) in cases {
            let err = text.parse::<RedisUrl>().unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn resolves_loopback() {
        let addrs = url("127.0.0.1", 6390, 0).resolve().unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:6390".parse().unwrap()]);
        let addrs = url("::1", 6390, 0).resolve().unwrap();
        assert_eq!(addrs, vec!["[::1]:6390".parse().unwrap()]);
    }
}
