//! The value of `--redis`: `redis[s]://[USER:PASSWORD@]HOST[:PORT][/DB]`,
//! parsed and checked before the daemon binds anything, so a typo is a
//! usage error naming what is wrong rather than a connection failure
//! later.
//!
//! The password never leaves this module in text meant for people: the
//! URL's `Display` and `Debug` show `***` in its place, and no parse error
//! quotes the part of the URL that holds it. Unix sockets and query
//! parameters are refused by name, so nobody believes they are in use
//! when they are not.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Redis's standard port, used when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Highest database index accepted. Redis's default configuration has 16
/// (0..=15), but `databases` can be raised, so only absurd values are
/// refused here; Redis itself refuses an index it does not have.
const MAX_DB: u32 = 1_000_000;

/// A secret whose `Debug` does not show it: it can sit in structs that
/// derive `Debug` (the config, the links) without leaking into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it (AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the cluster's Redis is: a host (name, IPv4 address or IPv6 address
/// without brackets), a port and a database index, whether TLS is used,
/// and the credentials AUTH sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
    /// Host name or IP address (IPv6 without the brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database index selected with SELECT after connecting.
    pub db: u32,
    /// The ACL user; `None` with a password: Redis's `default` user.
    pub user: Option<String>,
    /// The password; `None`: no AUTH.
    pub password: Option<Secret>,
}

impl RedisUrl {
    /// A plain `redis://HOST:PORT/DB` with no credentials.
    pub fn plain(host: &str, port: u16, db: u32) -> RedisUrl {
        RedisUrl {
            tls: false,
            host: host.to_string(),
            port,
            db,
            user: None,
            password: None,
        }
    }

    /// The addresses the host resolves to, in the resolver's order. This
    /// may block on DNS, so it is for start-up and reconnection set-up,
    /// never for the serving loop's hot path.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// The AUTH command for the credentials, if any: `AUTH [USER] PASSWORD`.
    pub fn auth_command(&self) -> Option<Vec<Vec<u8>>> {
        let pw = self.password.as_ref()?;
        let mut cmd = vec![b"AUTH".to_vec()];
        if let Some(user) = &self.user {
            cmd.push(user.as_bytes().to_vec());
        }
        cmd.push(pw.expose().as_bytes().to_vec());
        Some(cmd)
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisUrl, String> {
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("rediss") => (true, rest),
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
        // The credentials end at the last `@`: a password may hold `/`,
        // `?`, `#` or `@` unescaped, and what follows must not be read
        // into it (nor it into the host, whose errors are quoted).
        let (user, password, rest) = match rest.rfind('@') {
            Some(at) => {
                let (user, password) = credentials(&rest[..at])?;
                (user, password, &rest[at + 1..])
            }
            None => (None, None, rest),
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
        let (host, port) = split_host_port(authority)?;
        let db = match path {
            None | Some("") => 0,
            Some(db) => db
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= MAX_DB && db.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("database `{db}` is not a number from 0 to {MAX_DB}"))?,
        };
        Ok(RedisUrl {
            tls,
            host,
            port,
            db,
            user,
            password,
        })
    }
}

/// `[USER]:PASSWORD`, each percent-decoded. Errors never quote either.
fn credentials(userinfo: &str) -> Result<(Option<String>, Option<Secret>), String> {
    let Some((user, password)) = userinfo.split_once(':') else {
        return Err(
            "a user name needs a password (redis://USER:PASSWORD@HOST); \
                    a password alone is written redis://:PASSWORD@HOST"
                .into(),
        );
    };
    let user = percent_decode(user).map_err(|why| format!("the user name {why}"))?;
    let password = percent_decode(password).map_err(|why| format!("the password {why}"))?;
    if password.is_empty() {
        return Err("the password is empty (leave out USER:PASSWORD@ for no AUTH)".into());
    }
    if user.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the user name holds spaces or control characters".into());
    }
    Ok(((!user.is_empty()).then_some(user), Some(Secret(password))))
}

/// Decodes `%XX` escapes (as in any URL's user information).
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a `%` not followed by two hex digits (write `%25` for `%`)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once decoded")
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

/// The URL as logs and errors show it: the password as `***`.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
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
        RedisUrl::plain(host, port, db)
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
            ("rediss://h", "rediss://h:6379"),
        ] {
            let parsed: RedisUrl = text.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<RedisUrl>(), Ok(parsed));
        }
    }

    #[test]
    fn refuses_what_is_not_supported_by_name() {
        let cases = [
            ("unix:///tmp/redis.sock", "Unix sockets are not supported"),
            ("redis+unix:///tmp/r.sock", "Unix sockets are not supported"),
            ("/tmp/redis.sock", "Unix sockets are not supported"),
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

    #[test]
    fn parses_credentials_and_tls() {
        let u: RedisUrl = "rediss://muxchat:s3cr%40t%2F@cache.example:6380/2"
            .parse()
            .unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache.example", 6380, 2));
        assert_eq!(u.user.as_deref(), Some("muxchat"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cr@t/"));
        let cmd = u.auth_command().unwrap();
        assert_eq!(cmd, [&b"AUTH"[..], b"muxchat", b"s3cr@t/"]);

        // A password alone (the `default` user), with `@`, `/`, `?` and `:`
        // unescaped: the credentials end at the last `@`.
        let u: RedisUrl = "redis://:p@ss/w?rd:x@h/1".parse().unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("p@ss/w?rd:x"));
        assert_eq!((u.host.as_str(), u.db), ("h", 1));
        assert_eq!(u.auth_command().unwrap(), [&b"AUTH"[..], b"p@ss/w?rd:x"]);

        let u: RedisUrl = "rediss://h".parse().unwrap();
        assert!(u.tls && u.password.is_none() && u.auth_command().is_none());
    }

    #[test]
    fn never_shows_the_password() {
        let pw = "hunter2-Secret";
        for text in [
            format!("redis://u:{pw}@h:1/3"),
            format!("rediss://:{pw}@[::1]:1"),
        ] {
            let u: RedisUrl = text.parse().unwrap();
            let (shown, debug) = (u.to_string(), format!("{u:?}"));
            assert!(
                !shown.contains(pw) && !debug.contains(pw),
                "{shown} {debug}"
            );
            assert!(shown.contains(":***@"), "{shown}");
        }
        assert_eq!(
            "redis://u:pw@h:1/3"
                .parse::<RedisUrl>()
                .unwrap()
                .to_string(),
            "redis://u:***@h:1/3"
        );
        // Errors about the rest of the URL, or about the credentials,
        // quote neither the password nor the user's part of it.
        for text in [
            format!("redis://u:{pw}@h:99999"),
            format!("redis://u:{pw}@bad host"),
            format!("redis://u:{pw}%zz@h"),
            format!("redis://u:{pw}@h/x"),
            format!("redis://u:{pw}@h?x=1"),
            format!("redis://{pw}@h"),
        ] {
            let err = text.parse::<RedisUrl>().unwrap_err();
            assert!(!err.contains(pw) && !err.contains("hunter"), "{err}");
        }
    }

    #[test]
    fn names_what_is_wrong_in_credentials() {
        let cases = [
            ("redis://u@h", "a user name needs a password"),
            ("redis://u:@h", "the password is empty"),
            ("redis://:@h", "the password is empty"),
            ("redis://u:p%2@h", "the password has a `%`"),
            ("redis://u%4:p@h", "the user name has a `%`"),
            ("redis://u:%ff@h", "the password is not UTF-8"),
            ("redis://a%20b:p@h", "the user name holds spaces"),
            ("redis://u:p@", "host is missing"),
        ];
        for (text, want) in cases {
            let err = text.parse::<RedisUrl>().unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
