//! Opening a Redis connection the blocking way, once at start-up, and
//! what every opening needs (`Opener`: TLS and AUTH). Apart from the
//! link's readiness-driven life so that the one place the daemon may
//! block on the network (before the loop runs, bounded by a timeout) is
//! easy to find and to keep out of the loop.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::codec::resp::{self, Limits, Parse};
use crate::server::cluster::url::RedisUrl;

/// How every connection of a link is opened: TLS and to whom, AUTH.
#[derive(Clone, Default)]
pub struct Opener {
    /// `rediss://`: the client configuration and the name the server's
    /// certificate must carry (also sent as SNI when it is a DNS name).
    pub(super) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// `AUTH [USER] PASSWORD`, sent first.
    pub(super) auth: Option<Vec<Vec<u8>>>,
    /// The URL as logs show it (no password).
    pub(super) shown: String,
}

/// Never shows AUTH's arguments.
impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .field("shown", &self.shown)
            .finish()
    }
}

impl Opener {
    /// The opener for `url`: for `rediss://`, a TLS client that trusts the
    /// CA certificates in `ca`, or the system's roots without it. An error
    /// names the file or says that no root was found.
    pub fn new(url: &RedisUrl, ca: Option<&Path>) -> Result<Opener, String> {
        let tls = if url.tls {
            let mut roots = rustls::RootCertStore::empty();
            match ca {
                Some(path) => {
                    let certs = crate::codec::pem::load_certs(path)
                        .map_err(|e| format!("--redis-ca {e}"))?;
                    for c in certs {
                        roots.add(c).map_err(|e| {
                            format!("--redis-ca {}: not a usable CA ({e})", path.display())
                        })?;
                    }
                }
                None => {
                    // Reads the system's certificate files (SSL_CERT_FILE,
                    // SSL_CERT_DIR, then the usual places): no thread, no
                    // network, once at start-up.
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        return Err(String::from(
                            "rediss:// found no system root certificates \
                             (install ca-certificates, or give --redis-ca FILE)",
                        ));
                    }
                }
            }
            let config = ClientConfig::builder_with_provider(crate::codec::pem::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| format!("`{}` cannot name a TLS server ({e})", url.host))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Opener {
            tls,
            auth: url.auth_command(),
            shown: url.to_string(),
        })
    }

    pub(super) fn tls_connection(&self) -> Result<Option<ClientConnection>, String> {
        let Some((config, name)) = &self.tls else {
            return Ok(None);
        };
        let mut conn = ClientConnection::new(Arc::clone(config), name.clone())
            .map_err(|e| format!("TLS: {e}"))?;
        conn.set_buffer_limit(Some(crate::server::doors::tls::TLS_BUFFER_LIMIT * 4));
        Ok(Some(conn))
    }
}

/// A connection the start-up check opened (and authenticated), for
/// [`Link::new`](super::Link::new).
pub struct Opened {
    pub(super) stream: std::net::TcpStream,
    pub(super) tls: Option<ClientConnection>,
}

/// The start-up check: a blocking connect with a timeout, the TLS
/// handshake and AUTH as `opener` says, then `commands` sent and their
/// replies read (each must not be an error). Returns the opened
/// connection for [`Link::new`](super::Link::new).
pub fn connect_blocking(
    addrs: &[SocketAddr],
    opener: &Opener,
    commands: &[Vec<Vec<u8>>],
    timeout: Duration,
) -> Result<Opened, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => return open_blocking(s, opener, commands, timeout),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn open_blocking(
    mut s: std::net::TcpStream,
    opener: &Opener,
    commands: &[Vec<Vec<u8>>],
    timeout: Duration,
) -> Result<Opened, String> {
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let auth = opener.auth.iter().cloned();
    let all: Vec<Vec<Vec<u8>>> = auth.chain(commands.iter().cloned()).collect();
    let mut tls = opener.tls_connection()?;
    match tls.as_mut() {
        Some(conn) => {
            let deadline = Instant::now() + timeout;
            while conn.is_handshaking() {
                if Instant::now() >= deadline {
                    return Err("TLS handshake: no answer (timed out)".into());
                }
                conn.complete_io(&mut s)
                    .map_err(|e| format!("TLS handshake: {}", io_cause(&e)))?;
            }
            let mut stream = rustls::Stream::new(conn, &mut s);
            handshake(&mut stream, &all, opener.auth.is_some())?;
        }
        None => handshake(&mut s, &all, opener.auth.is_some())?,
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(Opened { stream: s, tls })
}

fn io_cause(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no answer (timed out)".into(),
        _ => e.to_string(),
    }
}

/// Sends `commands` and reads one reply each; the first is AUTH's when
/// `auth`.
fn handshake(
    s: &mut (impl Read + Write),
    commands: &[Vec<Vec<u8>>],
    auth: bool,
) -> Result<(), String> {
    let mut out = Vec::new();
    for c in commands {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
        resp::encode(&mut out, &args);
    }
    s.write_all(&out).map_err(|e| io_cause(&e))?;
    s.flush().map_err(|e| io_cause(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let limits = Limits::default();
    let mut got = 0;
    while got < commands.len() {
        match resp::parse(&buf, &limits) {
            Parse::Done(v, used) => {
                if let Some(e) = v.error() {
                    let e = String::from_utf8_lossy(e);
                    return Err(if auth && got == 0 {
                        format!("AUTH refused: {e}")
                    } else {
                        e.into_owned()
                    });
                }
                buf.drain(..used);
                got += 1;
            }
            Parse::Invalid(why) => return Err(format!("not a Redis server ({why})")),
            Parse::Incomplete => {
                let n = s.read(&mut chunk).map_err(|e| io_cause(&e))?;
                if n == 0 {
                    return Err("closed the connection".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    Ok(())
}
