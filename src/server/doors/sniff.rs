//! First-byte detection (docs/PROTOCOL.md, "One port, three doors"): which
//! door a new connection came in by.
//!
//! A new connection starts as plain TCP with no door. Its first byte is
//! *peeked* (MSG_PEEK), so nothing is consumed before the choice: `0x16`
//! (a TLS handshake record) switches the socket to TLS when the server has
//! a certificate, and the first decrypted byte is sniffed again; `A`-`Z`
//! is HTTP; anything else is the binary protocol. With `--tls-required`,
//! plaintext binary gets ERROR(TLS_REQUIRED) and plaintext HTTP gets 426.

use std::io;
use std::sync::Arc;

use crate::codec::{ErrorCode, HEADER_LEN};
use crate::server::web::HttpLimits;

use super::http::HttpDoor;
use super::input::{DoorEvent, Input};
use super::meter::Meter;
use super::tcp::Io;
use super::tls::{self, Tls};

/// What every door needs to know, shared by all connections.
#[derive(Debug, Clone)]
pub struct Doors {
    /// The TLS configuration, when the server has a certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse plaintext (binary gets TLS_REQUIRED, HTTP 426).
    pub tls_required: bool,
    /// Bounds on an HTTP request head.
    pub http: HttpLimits,
    /// The largest WebSocket message: one protocol frame of the largest
    /// payload, with its header.
    pub max_ws_message: usize,
}

impl Doors {
    /// Doors for a server with these settings.
    pub fn new(
        tls: Option<Arc<rustls::ServerConfig>>,
        tls_required: bool,
        http: HttpLimits,
        max_payload: u32,
    ) -> Doors {
        Doors {
            tls,
            tls_required,
            http,
            max_ws_message: HEADER_LEN + max_payload as usize,
        }
    }
}

/// What a look at the first byte decided.
pub(super) enum Sniffed {
    /// No door yet: report this input (the end of the stream), or with
    /// `None` sniff again (TLS is on now: the first plaintext byte decides).
    Undecided(Option<Input>),
    /// The binary protocol, with an input to report first, if any (else
    /// read on through the door).
    Binary(Option<Input>),
    /// HTTP, likewise.
    Http(Box<HttpDoor>, Option<Input>),
}

/// Looks at the first byte of `io`'s stream (of the socket, or of the TLS
/// plaintext) and picks the door.
pub(super) fn sniff(
    io: &mut Io,
    doors: &Doors,
    buf: &mut [u8],
    m: &mut Meter<'_>,
) -> io::Result<Sniffed> {
    if io.tls.is_none() {
        let mut first = [0u8; 1];
        if io.stream.peek(&mut first)? == 0 {
            return Ok(Sniffed::Undecided(Some(Input::Bytes(0))));
        }
        return Ok(match (first[0], &doors.tls) {
            (0x16, Some(config)) => {
                if !m.gate.admit(m.peer, m.now) {
                    m.cost.refused = true;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "too many TLS handshakes from this address",
                    ));
                }
                let conn = tls::accept(config)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                io.tls = Some(Box::new(Tls::new(conn)));
                Sniffed::Undecided(None)
            }
            (b'A'..=b'Z', _) => Sniffed::Http(http_door(doors, doors.tls_required), None),
            _ if doors.tls_required => Sniffed::Binary(Some(Input::Event(DoorEvent::Fatal {
                error: ErrorCode::TlsRequired,
                detail: "this server requires TLS",
            }))),
            _ => Sniffed::Binary(None),
        });
    }
    // Inside TLS the same rule again, on decrypted bytes (which cannot be
    // peeked, so they are handed to the door chosen).
    let n = io.read(buf, m)?;
    if n == 0 {
        return Ok(Sniffed::Undecided(Some(Input::Bytes(0))));
    }
    if !buf[0].is_ascii_uppercase() {
        return Ok(Sniffed::Binary(Some(Input::Bytes(n))));
    }
    let mut h = http_door(doors, false);
    // "Incomplete" (Bytes(0) from take) must not read as the end.
    let got = match h.take(&buf[..n]) {
        Input::Bytes(0) => None,
        other => Some(other),
    };
    Ok(Sniffed::Http(h, got))
}

fn http_door(doors: &Doors, refuse_plaintext: bool) -> Box<HttpDoor> {
    Box::new(HttpDoor::new(
        doors.http,
        doors.max_ws_message,
        refuse_plaintext,
    ))
}
