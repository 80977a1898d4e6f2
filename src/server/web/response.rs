//! What goes back on an HTTP connection: the statuses this server
//! answers with, refusals, and responses encoded whole (always
//! `Content-Length` and `Connection: close`, because the server answers
//! one request per connection, except the upgrade's 101, which turns the
//! connection into a WebSocket). Also base64, the one encoding header
//! values here need (`Sec-WebSocket-Accept`, the page's CSP hashes).

use std::fmt::Write as _;

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
    /// 414: the request line is longer than
    /// [`HttpLimits::max_request_line`](super::HttpLimits::max_request_line).
    UriTooLong,
    /// 426: a WebSocket version other than 13, or plaintext to a server
    /// that requires TLS.
    UpgradeRequired,
    /// 431: the head is larger than
    /// [`HttpLimits::max_head`](super::HttpLimits::max_head) or has more
    /// than [`HttpLimits::max_headers`](super::HttpLimits::max_headers)
    /// fields.
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
    pub(super) const fn new(status: Status, why: &'static str) -> Refusal {
        Refusal { status, why }
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

/// Standard base64 with padding; `out` must be exactly the encoded length.
/// Twenty lines are not worth a crate: the only use is 20 digest bytes.
pub(super) fn base64_encode(input: &[u8], out: &mut [u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
