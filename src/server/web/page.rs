//! The browser chat page (`index.html`, beside this file), built once
//! ([`page`]): the bytes, a gzip copy, their ETags and the
//! Content-Security-Policy, all shared by every connection; an [`Answer`]
//! is a small per-connection head and a borrowed body, so ten thousand
//! clients that never read cost ten thousand heads, not ten thousand
//! pages.

use std::fmt::Write as _;
use std::io::{self, IoSlice, Write};
use std::sync::OnceLock;

use super::response::{base64_encode, Response, Status};

/// The browser chat page served at `GET /` (one self-contained file).
pub const PAGE: &str = include_str!("index.html");

/// What a request for the page said about the copies it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageAsk {
    /// `Accept-Encoding` allows gzip.
    pub gzip: bool,
    /// `If-None-Match` names the page's current ETag: 304.
    pub fresh: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
