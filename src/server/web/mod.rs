//! HTTP routing: one request head in, one decision out. Which route a
//! request takes (the page, the WebSocket upgrade, `/metrics`, `/healthz`,
//! a refusal) and, where no chat state is needed, its answer.
//!
//! A connection whose first byte is an ASCII upper-case letter speaks
//! HTTP/1.1 (see docs/PROTOCOL.md, "One port, three doors"). This module is
//! pure: it never sees a socket. The HTTP door
//! ([`doors`](super::doors)) buffers the request head (at most
//! [`HttpLimits::max_head`] bytes, so nothing grows with what a client
//! sends) and calls [`serve`] after each read; "incomplete" is a normal
//! answer. [`parse_request`] decides the [`Route`]; [`serve`] writes what
//! goes back into the door's [`Answer`] and says what the door does next.
//!
//! - [`response`]: statuses, refusals, [`Response`]s encoded whole.
//! - [`page`](mod@page): the browser page, built once and shared, and the
//!   per-connection [`Answer`] that borrows it.
//!
//! Parsing is `httparse`: a zero-copy, allocation-free parser that has been
//! fuzzed for years by the hyper ecosystem; a request-head parser is exactly
//! the kind of code not to write twice.

pub mod page;
pub mod response;

pub use page::{page, Answer, Page, PageAsk, PAGE};
pub use response::{server_full, switching_protocols, tls_required, Refusal, Response, Status};

use response::base64_encode;

/// The GUID RFC 6455 section 1.3 appends to the client's key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bounds on a request head. Every field has a default and is checked
/// before anything more is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole head (request line, headers, the blank line), in bytes.
    /// A head not complete within this many bytes gets 431.
    pub max_head: usize,
    /// The request line alone, in bytes. A longer one gets 414.
    pub max_request_line: usize,
    /// Header fields. More get 431.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    /// 8 KiB of head (what common servers allow), a 2 KiB request line (no
    /// route of ours is longer than a few bytes; browsers add little), 32
    /// header fields (a browser's WebSocket upgrade sends about 15).
    fn default() -> Self {
        HttpLimits {
            max_head: 8 * 1024,
            max_request_line: 2 * 1024,
            max_headers: 32,
        }
    }
}

/// What a complete, well-formed request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the browser chat page.
    Page(PageAsk),
    /// `GET /ws` with a valid RFC 6455 upgrade. `accept` is the
    /// `Sec-WebSocket-Accept` value for the 101 response.
    WebSocket {
        /// base64(SHA-1(key + GUID)), 28 ASCII bytes.
        accept: [u8; 28],
    },
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// Anything else: answer with this status and close.
    Refuse(Refusal),
}

/// What the HTTP door does once the router has seen what is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The head is not complete yet: read more.
    Partial,
    /// The head is complete.
    Done {
        /// Bytes of the head, the blank line included (anything after it
        /// belongs to the next protocol, for an upgrade).
        head_len: usize,
        /// The method is HEAD: answers go without their body.
        head_only: bool,
        /// What comes next.
        next: Next,
    },
}

/// What the HTTP door does after a complete head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The answer is in the door's [`Answer`]: write it, then close.
    Answered,
    /// `GET /metrics`: the chat answers.
    Metrics,
    /// `GET /healthz`: the chat answers.
    Healthz,
    /// The 101 is in the [`Answer`]'s head: the connection goes on as a
    /// WebSocket.
    Upgraded,
}

/// Routes a buffered request head and, where no chat state is needed,
/// answers it into `answer`. With `refuse_plaintext` (plaintext to a
/// server that requires TLS) every complete request gets 426.
pub fn serve(
    head: &[u8],
    limits: &HttpLimits,
    refuse_plaintext: bool,
    answer: &mut Answer,
) -> Served {
    let Parse::Done {
        head_len,
        route,
        head_only,
    } = parse_request(head, limits)
    else {
        return Served::Partial;
    };
    let next = if refuse_plaintext {
        answer.set_response(&tls_required(), head_only);
        Next::Answered
    } else {
        match route {
            Route::Page(ask) => {
                answer.set_page(ask, head_only);
                Next::Answered
            }
            Route::Refuse(r) => {
                answer.set_response(&Response::refusal(r), head_only);
                Next::Answered
            }
            Route::Metrics => Next::Metrics,
            Route::Healthz => Next::Healthz,
            Route::WebSocket { accept } => {
                switching_protocols(&accept, answer.head_mut());
                Next::Upgraded
            }
        }
    };
    Served::Done {
        head_len,
        head_only,
        next,
    }
}

/// The outcome of parsing what has been buffered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// The head is not complete yet, and within the limits: read more.
    Partial,
    /// The head is complete: `head_len` bytes of the buffer are the head
    /// (anything after it belongs to the next protocol, for an upgrade).
    Done {
        /// Bytes of the head, the blank line included.
        head_len: usize,
        /// What the request asks for.
        route: Route,
        /// The method is HEAD: the answer's head only (its
        /// `Content-Length` still that of the body GET would get).
        head_only: bool,
    },
}

/// Parses a buffered request head and decides its route.
///
/// `buf` must hold everything received so far on the connection. The caller
/// keeps at most `limits.max_head` bytes: once that many are buffered this
/// returns `Done` with a 431 (or 414) refusal rather than `Partial`, so a
/// caller that stops reading at `Done` never holds more.
pub fn parse_request(buf: &[u8], limits: &HttpLimits) -> Parse {
    // The request line first: httparse would wait for its end however long
    // it grows, and 414 is the answer to a long one, not 431.
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end > limits.max_request_line => {
            return refuse(buf.len(), Status::UriTooLong, "request line too long");
        }
        None if buf.len() > limits.max_request_line => {
            return refuse(buf.len(), Status::UriTooLong, "request line too long");
        }
        _ => {}
    }

    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head {
                return refuse(buf.len(), Status::HeadersTooLarge, "request head too large");
            }
            return Parse::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(buf.len(), Status::HeadersTooLarge, "too many header fields");
        }
        Err(_) => return refuse(buf.len(), Status::BadRequest, "malformed request"),
    };
    if head_len > limits.max_head {
        return refuse(head_len, Status::HeadersTooLarge, "request head too large");
    }
    Parse::Done {
        head_len,
        route: route(&req),
        head_only: req.method == Some("HEAD"),
    }
}

fn refuse(head_len: usize, status: Status, why: &'static str) -> Parse {
    Parse::Done {
        head_len,
        route: Route::Refuse(Refusal::new(status, why)),
        head_only: false,
    }
}

/// Decides what a parsed request gets.
fn route(req: &httparse::Request<'_, '_>) -> Route {
    // httparse only returns Complete with a method, path and version set.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Route::Refuse(Refusal::new(Status::BadRequest, "malformed request"));
    };
    // The query string never selects anything here; a browser may add one
    // to defeat a cache.
    let path = target.split('?').next().unwrap_or(target);
    let known = matches!(path, "/" | "/ws" | "/metrics" | "/healthz");
    if !known {
        return Route::Refuse(Refusal::new(Status::NotFound, "no such path"));
    }
    if method != "GET" && method != "HEAD" {
        return Route::Refuse(Refusal::new(
            Status::MethodNotAllowed,
            "only GET and HEAD are served here",
        ));
    }
    match path {
        "/" => Route::Page(page_ask(req.headers)),
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        // Only a GET upgrades (RFC 6455 section 4.1); HEAD gets the head of
        // what a GET without an upgrade gets.
        _ if method == "HEAD" => Route::Refuse(Refusal::new(
            Status::BadRequest,
            "/ws takes only a WebSocket upgrade",
        )),
        _ => websocket_route(req.headers, version),
    }
}

/// What a page request accepts: gzip, and whether it holds the current
/// copy.
fn page_ask(headers: &[httparse::Header<'_>]) -> PageAsk {
    let mut ask = PageAsk::default();
    let page = page();
    for h in headers {
        if h.name.eq_ignore_ascii_case("accept-encoding") {
            ask.gzip |= accepts_gzip(h.value);
        } else if h.name.eq_ignore_ascii_case("if-none-match") {
            ask.fresh |= h.value.split(|&b| b == b',').map(trim).any(|tag| {
                // Weak comparison (RFC 9110 section 13.1.2): W/ is ignored.
                let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
                tag == b"*" || tag == page.etag.as_bytes() || tag == page.etag_gzip.as_bytes()
            });
        }
    }
    ask
}

/// Whether an `Accept-Encoding` value allows gzip: `gzip` or `*` listed
/// without `q=0`.
fn accepts_gzip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut parts = item.split(|&b| b == b';').map(trim);
        let coding = parts.next().unwrap_or_default();
        let named = coding.eq_ignore_ascii_case(b"gzip")
            || coding.eq_ignore_ascii_case(b"x-gzip")
            || coding == b"*";
        let refused = parts.any(|p| {
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && p[2..].iter().all(|&b| matches!(b, b'0' | b'.'))
        });
        named && !refused
    })
}

/// Checks an upgrade request per RFC 6455 section 4.2.1.
fn websocket_route(headers: &[httparse::Header<'_>], version: u8) -> Route {
    let bad = |why| Route::Refuse(Refusal::new(Status::BadRequest, why));
    if version != 1 {
        return bad("a WebSocket upgrade needs HTTP/1.1");
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut ws_version = None;
    let mut key = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            ws_version = Some(h.value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if key.is_some() {
                return bad("more than one Sec-WebSocket-Key");
            }
            key = Some(h.value);
        }
    }
    if !upgrade || !connection_upgrade {
        return bad("/ws takes only a WebSocket upgrade");
    }
    match ws_version.map(trim) {
        Some(b"13") => {}
        _ => {
            return Route::Refuse(Refusal::new(
                Status::UpgradeRequired,
                "WebSocket version 13 only",
            ))
        }
    }
    let Some(key) = key.map(trim).filter(|k| valid_key(k)) else {
        return bad("missing or invalid Sec-WebSocket-Key");
    };
    Route::WebSocket {
        accept: websocket_accept(key),
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A key is the base64 encoding of 16 bytes: 22 significant characters and
/// `==` (RFC 6455 section 4.1).
fn valid_key(k: &[u8]) -> bool {
    k.len() == 24 && k.ends_with(b"==") && k[..22].iter().all(|&b| b64_value(b).is_some())
}

fn b64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
///
/// SHA-1 comes from `ring`, already linked for TLS (RFC 6455 uses SHA-1 as
/// a checksum, not for security, hence ring's `LEGACY_USE_ONLY` name).
pub fn websocket_accept(key: &[u8]) -> [u8; 28] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WS_GUID.as_bytes());
    let digest = ctx.finish();
    let mut out = [0u8; 28];
    base64_encode(digest.as_ref(), &mut out);
    out
}

/// The fuzz target `http_head`'s check (also replayed from the committed
/// corpus by `cargo test`): panics on a bug, returns on anything else.
///
/// Input: two bytes pick small limits (so the 414 and 431 paths are
/// reachable), then the bytes a client sends. Every prefix is parsed as the
/// transport would after each read: a prefix is `Partial` only while within
/// the limits, once `Done` every longer prefix is `Done` too with the same
/// head length (a refusal may only be refined into another refusal), the
/// head length never passes the bytes given, and every refusal encodes as
/// a response that parses back with its own `Content-Length`.
#[doc(hidden)]
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let [a, b, rest @ ..] = data else { return };
    let limits = HttpLimits {
        max_head: 16 + usize::from(*a) * 4,
        max_request_line: 8 + usize::from(*b),
        max_headers: 1 + usize::from(*b % 16),
    };
    let mut first_done: Option<(usize, Route)> = None;
    for end in 0..=rest.len() {
        let buf = &rest[..end];
        match parse_request(buf, &limits) {
            Parse::Partial => {
                assert!(first_done.is_none(), "Partial after Done at {end}");
                assert!(buf.len() < limits.max_head, "Partial past the head limit");
                let line = buf.iter().position(|&c| c == b'\n').unwrap_or(buf.len());
                assert!(
                    line <= limits.max_request_line,
                    "Partial past the line limit"
                );
            }
            Parse::Done {
                head_len, route, ..
            } => {
                assert!(head_len <= buf.len().max(limits.max_head));
                if let Route::Refuse(r) = route {
                    let bytes = Response::refusal(r).to_bytes();
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut resp = httparse::Response::new(&mut headers);
                    let Ok(httparse::Status::Complete(n)) = resp.parse(&bytes) else {
                        panic!("refusal does not parse: {bytes:?}");
                    };
                    assert_eq!(resp.code, Some(r.status.code()));
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name == "Content-Length")
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .expect("Content-Length");
                    assert_eq!(bytes.len() - n, len);
                }
                match first_done {
                    None => first_done = Some((head_len, route)),
                    Some((len0, route0)) => {
                        if !matches!(route0, Route::Refuse(_)) {
                            assert_eq!((head_len, route), (len0, route0), "Done changed at {end}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Parse {
        parse_request(s.as_bytes(), &HttpLimits::default())
    }

    fn route_of(s: &str) -> Route {
        match parse(s) {
            Parse::Done { route, .. } => route,
            Parse::Partial => panic!("partial: {s:?}"),
        }
    }

    fn status_of(s: &str) -> u16 {
        match route_of(s) {
            Route::Refuse(r) => r.status.code(),
            other => panic!("not refused: {other:?}"),
        }
    }

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc6455_sample_accept() {
        // RFC 6455 section 1.3's worked example.
        let a = websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&a, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route_of("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Page(_)
        ));
        assert!(matches!(
            route_of("GET /?v=2 HTTP/1.0\r\n\r\n"),
            Route::Page(_)
        ));
        assert_eq!(route_of("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route_of("GET /healthz HTTP/1.1\r\n\r\n"), Route::Healthz);
        assert_eq!(status_of("GET /nope HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status_of("POST / HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status_of("DELETE /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status_of("GARBAGE\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/1.1\r\nbad header\r\n\r\n"), 400);
        assert_eq!(status_of("G\x00\x01\x02\r\n\r\n"), 400);
    }

    #[test]
    fn upgrade_accepted_with_head_len() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x82, 0x80]);
        match parse_request(&bytes, &HttpLimits::default()) {
            Parse::Done {
                head_len, route, ..
            } => {
                assert_eq!(head_len, UPGRADE.len());
                assert_eq!(
                    route,
                    Route::WebSocket {
                        accept: *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                    }
                );
            }
            Parse::Partial => panic!("partial"),
        }
    }

    #[test]
    fn broken_upgrades() {
        assert_eq!(status_of("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status_of(&UPGRADE.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(
            status_of(&UPGRADE.replace("Version: 13", "Version: 8")),
            426
        );
        assert_eq!(status_of(&UPGRADE.replace("Upgrade\r\n", "close\r\n")), 400);
        assert_eq!(
            status_of(&UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")),
            400
        );
        assert_eq!(
            status_of(&UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZ!==")),
            400
        );
        let twice = UPGRADE.replace(
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version",
        );
        assert_eq!(status_of(&twice), 400);
        assert_eq!(status_of(&UPGRADE.replace("GET", "POST")), 405);
    }

    #[test]
    fn case_insensitive_headers() {
        let s = UPGRADE
            .replace("Upgrade: websocket", "upgrade:   WebSocket ")
            .replace("Connection:", "CONNECTION:");
        assert!(matches!(route_of(&s), Route::WebSocket { .. }));
    }

    #[test]
    fn partial_at_every_split() {
        for cut in 0..UPGRADE.len() {
            assert_eq!(parse(&UPGRADE[..cut]), Parse::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn long_request_line_is_414_before_its_end() {
        let limits = HttpLimits::default();
        let mut line = b"GET /".to_vec();
        line.resize(limits.max_request_line + 1, b'a');
        // No newline yet, but already too long: refuse without waiting.
        assert!(matches!(
            parse_request(&line, &limits),
            Parse::Done {
                route: Route::Refuse(Refusal {
                    status: Status::UriTooLong,
                    ..
                }),
                ..
            }
        ));
        // Just within the limit: still waiting.
        line.truncate(limits.max_request_line);
        assert_eq!(parse_request(&line, &limits), Parse::Partial);
    }

    #[test]
    fn large_head_is_431() {
        let limits = HttpLimits::default();
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(limits.max_head, b'a');
        assert_eq!(
            status_of(std::str::from_utf8(&head).unwrap()),
            431,
            "a full buffer with no end of head"
        );
        head.truncate(limits.max_head - 1);
        assert_eq!(parse_request(&head, &limits), Parse::Partial);

        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=limits.max_headers {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status_of(&many), 431);
    }

    #[test]
    fn accept_encoding_and_head() {
        assert!(accepts_gzip(b"gzip, deflate, br"));
        assert!(accepts_gzip(b"br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip(b"*"));
        assert!(!accepts_gzip(b"gzip;q=0, identity"));
        assert!(!accepts_gzip(b"gzip; q=0.000"));
        assert!(!accepts_gzip(b"deflate, br"));
        match parse("HEAD / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n") {
            Parse::Done {
                route: Route::Page(ask),
                head_only: true,
                ..
            } => assert!(ask.gzip && !ask.fresh),
            other => panic!("{other:?}"),
        }
        assert_eq!(status_of("HEAD /ws HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(&UPGRADE.replace("GET", "HEAD")), 400);
    }

    #[test]
    fn fuzz_check_holds_on_sample_heads() {
        for (a, b) in [(0u8, 0u8), (10, 40), (255, 255), (3, 200)] {
            for head in [UPGRADE, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "G\r\n\r\n"] {
                let mut data = vec![a, b];
                data.extend_from_slice(head.as_bytes());
                fuzz_check(&data);
            }
        }
    }

    #[test]
    fn parses_whatever_bytes_without_panic() {
        // A cheap stand-in for the fuzz target: every prefix of a few
        // hostile heads.
        let inputs: [&[u8]; 4] = [
            b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key: \xff\xfe\r\n\r\n",
            b"G\r\n\r\n",
            b"GET \x00 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
        ];
        for input in inputs {
            for cut in 0..=input.len() {
                let _ = parse_request(&input[..cut], &HttpLimits::default());
            }
        }
    }
}
