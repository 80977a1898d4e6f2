//! The HTTP door: one request head in, one routing decision out.
//!
//! A connection whose first byte is an ASCII upper-case letter speaks
//! HTTP/1.1 (see docs/PROTOCOL.md, "One port, three doors"). This module is
//! pure: it never sees a socket. The transport buffers the request head (at
//! most [`HttpLimits::max_head`] bytes, so nothing grows with what a client
//! sends) and calls [`parse_request`] after each read; "incomplete" is a
//! normal answer. The answer is a [`Route`]: serve the page, upgrade to
//! WebSocket, serve `/metrics` or `/healthz`, or refuse with a status.
//! [`Response`] encodes what goes back: always `Content-Length` and
//! `Connection: close`, because the server answers one request per
//! connection (except the upgrade, which turns the connection into a
//! WebSocket).
//!
//! The page is built once ([`page`]): the bytes, a gzip copy, their ETags
//! and the Content-Security-Policy, all shared by every connection; an
//! [`Answer`] is a small per-connection head and a borrowed body, so ten
//! thousand clients that never read cost ten thousand heads, not ten
//! thousand pages.
//!
//! Parsing is `httparse`: a zero-copy, allocation-free parser that has been
//! fuzzed for years by the hyper ecosystem; a request-head parser is exactly
//! the kind of code not to write twice.

use std::fmt::Write as _;
use std::io::{self, IoSlice, Write};
use std::sync::OnceLock;

/// The browser chat page served at `GET /` (one self-contained file).
pub const PAGE: &str = include_str!("index.html");

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

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 101: the WebSocket upgrade.
    SwitchingProtocols,
    /// 200.
    Ok,
    /// 304: the page the client holds (`If-None-Match`) is current.
    NotModified,
    /// 400: not a request we can parse, or a broken upgrade.
    BadRequest,
    /// 404: no such path.
    NotFound,
    /// 405: a known path with a method other than GET.
    MethodNotAllowed,
    /// 414: the request line is longer than [`HttpLimits::max_request_line`].
    UriTooLong,
    /// 426: a WebSocket version other than 13, or plaintext to a server
    /// that requires TLS.
    UpgradeRequired,
    /// 431: the head is larger than [`HttpLimits::max_head`] or has more
    /// than [`HttpLimits::max_headers`] fields.
    HeadersTooLarge,
    /// 503: `/healthz` while draining, or a connection refused at accept
    /// (the server or the client's address is at its limit).
    Unavailable,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UriTooLong => 414,
            Status::UpgradeRequired => 426,
            Status::HeadersTooLarge => 431,
            Status::Unavailable => 503,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UriTooLong => "URI Too Long",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::Unavailable => "Service Unavailable",
        }
    }
}

/// Why a request is refused: the status and a short text body saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub status: Status,
    /// One sentence for the body (a person reads it in a browser or curl).
    pub why: &'static str,
}

impl Refusal {
    const fn new(status: Status, why: &'static str) -> Refusal {
        Refusal { status, why }
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

/// What a request for the page said about the copies it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageAsk {
    /// `Accept-Encoding` allows gzip.
    pub gzip: bool,
    /// `If-None-Match` names the page's current ETag: 304.
    pub fresh: bool,
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

/// Standard base64 with padding; `out` must be exactly the encoded length.
/// Twenty lines are not worth a crate: the only use is 20 digest bytes.
fn base64_encode(input: &[u8], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    debug_assert_eq!(out.len(), input.len().div_ceil(3) * 4);
    for (chunk, dst) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            };
        }
    }
}

/// A response head and body, encoded whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body (may be empty).
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF (`Allow` for 405).
    pub extra_headers: &'static str,
}

impl Response {
    /// A response with a body.
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            extra_headers: "",
        }
    }

    /// A short plain-text answer (refusals, `/healthz`).
    pub fn text(status: Status, text: &str) -> Self {
        let mut body = String::with_capacity(text.len() + 1);
        body.push_str(text);
        body.push('\n');
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The answer to a refused request.
    pub fn refusal(r: Refusal) -> Self {
        let mut resp = Response::text(r.status, r.why);
        resp.extra_headers = match r.status {
            Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
            // Refusals with 426 come from the WebSocket handshake (RFC 6455
            // section 4.4: say which version is spoken).
            Status::UpgradeRequired => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        };
        resp
    }

    /// The wire form: status line, headers, blank line, body. Every
    /// response says `Connection: close` and the server closes after it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_head(out);
        out.extend_from_slice(&self.body);
    }

    /// The status line and headers only: the answer to HEAD.
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(160);
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len()
        );
        head.push_str(self.extra_headers);
        // A response that names its own Connection (426's "Upgrade, close")
        // says close there.
        if !self.extra_headers.contains("Connection:") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
    }

    /// The encoded bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.body.len() + 200);
        self.encode(&mut v);
        v
    }
}

/// 426 for plaintext HTTP to a server started with `--tls-required`.
/// RFC 9110 section 15.5.22: a 426 names the protocols to upgrade to in
/// `Upgrade`, with `Connection: upgrade`; no browser upgrades in place,
/// so the body says what a person does instead.
pub fn tls_required() -> Response {
    let mut r = Response::text(
        Status::UpgradeRequired,
        "this server requires TLS: use https:// (or wss:// for WebSocket) at the same address",
    );
    r.extra_headers = "Upgrade: TLS/1.3, TLS/1.2, HTTP/1.1\r\nConnection: Upgrade, close\r\n";
    r
}

/// 503 for an HTTP client refused at accept (`--max-clients`,
/// `--max-per-ip`): what a binary client gets as ERROR(SERVER_FULL).
pub fn server_full(detail: &str) -> Response {
    let mut r = Response::text(Status::Unavailable, detail);
    r.extra_headers = "Retry-After: 10\r\n";
    r
}

/// The page as served: built once, shared by every connection.
#[derive(Debug)]
pub struct Page {
    /// The page's bytes.
    pub plain: &'static [u8],
    /// The same, gzip-compressed once (about a fifth of the size).
    pub gzip: Vec<u8>,
    /// Strong ETags of the two representations (quoted).
    pub etag: String,
    /// The gzip copy's ETag: another representation, so another tag.
    pub etag_gzip: String,
    /// The Content-Security-Policy: only the page's own inline script
    /// and style (by hash), WebSocket and fetches to the same origin.
    pub csp: String,
}

/// The page, built on first use (the daemon asks at start, so no request
/// pays the compression).
pub fn page() -> &'static Page {
    static PAGE_BUILT: OnceLock<Page> = OnceLock::new();
    PAGE_BUILT.get_or_init(|| Page::build(PAGE))
}

impl Page {
    fn build(html: &'static str) -> Page {
        let plain = html.as_bytes();
        // Level 9 once at start: the page is compressed a single time, so
        // the slowest level costs nothing per request.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(plain);
        let gzip = gz.finish().unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, plain);
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Page {
            plain,
            gzip,
            etag: format!("\"{hex}\""),
            etag_gzip: format!("\"{hex}-gz\""),
            csp: content_security_policy(html),
        }
    }

    /// The answer to a page request.
    fn answer(&'static self, ask: PageAsk, head_only: bool, out: &mut Answer) {
        let (body, etag, encoding) = if ask.gzip && !self.gzip.is_empty() {
            (
                &self.gzip[..],
                &self.etag_gzip,
                "Content-Encoding: gzip\r\n",
            )
        } else {
            (self.plain, &self.etag, "")
        };
        let status = if ask.fresh {
            Status::NotModified
        } else {
            Status::Ok
        };
        let head = &mut out.head;
        head.clear();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\n",
            status.code(),
            status.reason()
        );
        // 304 has no body and no Content-Length of its own (RFC 9110
        // section 15.4.5): the client keeps what it has.
        if !ask.fresh {
            let _ = write!(head, "Content-Length: {}\r\n{encoding}", body.len());
        }
        let _ = write!(
            head,
            "ETag: {etag}\r\nVary: Accept-Encoding\r\nCache-Control: no-cache\r\n\
             Content-Security-Policy: {}\r\nX-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
            self.csp
        );
        out.body = if ask.fresh || head_only { &[] } else { body };
        out.sent = 0;
    }
}

/// A policy allowing exactly the page's inline `<script>` and `<style>`
/// blocks (each by its SHA-256), its `data:` icon, and connections to its
/// own origin (`'self'` covers `ws:`/`wss:` to the same host in CSP
/// level 3). Hashed at start, so editing the page needs no edit here.
fn content_security_policy(html: &str) -> String {
    let hashes = |tag: &str| {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut out = String::new();
        let mut rest = html;
        while let Some(start) = rest.find(&open) {
            let after = &rest[start + open.len()..];
            let Some(end) = after.find(&close) else { break };
            let digest = ring::digest::digest(&ring::digest::SHA256, &after.as_bytes()[..end]);
            let mut b64 = [0u8; 44];
            base64_encode(digest.as_ref(), &mut b64);
            let _ = write!(out, " 'sha256-{}'", String::from_utf8_lossy(&b64));
            rest = &after[end..];
        }
        out
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("script"),
        hashes("style")
    )
}

/// What goes back on one HTTP connection: a head of its own and a body
/// that is either part of the head (small answers) or borrowed from the
/// shared page, and how much of the two is written.
#[derive(Debug, Default)]
pub struct Answer {
    head: Vec<u8>,
    body: &'static [u8],
    sent: usize,
}

impl Answer {
    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.head.len() + self.body.len() - self.sent
    }

    /// Answers with `r` (its head only for HEAD).
    pub fn set_response(&mut self, r: &Response, head_only: bool) {
        self.head.clear();
        self.body = &[];
        self.sent = 0;
        if head_only {
            r.encode_head(&mut self.head);
        } else {
            r.encode(&mut self.head);
        }
    }

    /// Answers a page request: the head here, the body the shared page.
    pub fn set_page(&mut self, ask: PageAsk, head_only: bool) {
        page().answer(ask, head_only, self);
    }

    /// The head's bytes, to append a head of another kind (the 101).
    pub fn head_mut(&mut self) -> &mut Vec<u8> {
        &mut self.head
    }

    /// The head alone, for a connection that goes on as something else
    /// (an upgraded WebSocket writes it before its frames).
    pub fn into_head(self) -> Vec<u8> {
        self.head
    }

    /// Writes what is left until done or `WouldBlock`: head and body in
    /// one vectored write where the sink takes it. Returns whether all of
    /// it is out.
    pub fn write_to<W: Write>(&mut self, sink: &mut W) -> io::Result<bool> {
        while self.pending() > 0 {
            let (head, body) = if self.sent < self.head.len() {
                (&self.head[self.sent..], self.body)
            } else {
                (&[][..], &self.body[self.sent - self.head.len()..])
            };
            match sink.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Encodes the 101 answer to a WebSocket upgrade (no body, and no
/// `Connection: close`: the connection goes on as a WebSocket).
pub fn switching_protocols(accept: &[u8; 28], out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n\r\n");
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
    fn base64_padding() {
        let mut o = [0u8; 4];
        base64_encode(b"f", &mut o);
        assert_eq!(&o, b"Zg==");
        base64_encode(b"fo", &mut o);
        assert_eq!(&o, b"Zm8=");
        base64_encode(b"foo", &mut o);
        assert_eq!(&o, b"Zm9v");
        let mut o = [0u8; 8];
        base64_encode(b"foobar", &mut o);
        assert_eq!(&o, b"Zm9vYmFy");
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
    fn responses_carry_length_and_close() {
        let r = Response::text(Status::NotFound, "no such path").to_bytes();
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Content-Length: 13\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nno such path\n"), "{s}");
        let s = String::from_utf8(
            Response::refusal(Refusal::new(Status::MethodNotAllowed, "x")).to_bytes(),
        )
        .unwrap();
        assert!(s.contains("Allow: GET, HEAD\r\n"), "{s}");

        let mut out = Vec::new();
        switching_protocols(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(s.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!s.contains("close"));
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
    fn page_answers_share_the_body() {
        let mut a = Answer::default();
        a.set_page(PageAsk::default(), false);
        assert_eq!(
            a.body.as_ptr(),
            page().plain.as_ptr(),
            "the page is not copied"
        );
        assert_eq!(a.pending(), a.head.len() + PAGE.len());
        let mut out = Vec::new();
        assert!(a.write_to(&mut out).unwrap());
        assert!(out.ends_with(PAGE.as_bytes()));
        a.set_page(PageAsk::default(), true);
        assert!(a.body.is_empty());
        a.set_page(
            PageAsk {
                gzip: true,
                fresh: true,
            },
            false,
        );
        assert!(a.body.is_empty());
        assert!(a.head.starts_with(b"HTTP/1.1 304 "));
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
