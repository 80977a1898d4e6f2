//! The HTTP door's answers over the real binary: the page served from one
//! shared buffer (thousands of clients that never read hold no copy of
//! it), HEAD on every GET path, the page gzip-compressed when asked, with
//! an ETag (304 on a match) and a Content-Security-Policy, and the 426 a
//! plaintext request gets under `--tls-required`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT};
use muxchat::server::web::PAGE;

/// Sends `request` and reads the whole answer (the server closes after it).
fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).expect("send request");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the answer to {request:?}: {e}"),
        }
    }
    got
}

/// A parsed answer: status, headers (names lower-cased), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("a number")
    }
}

fn ask(addr: SocketAddr, request: &str) -> Answer {
    let bytes = exchange(addr, request);
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = std::str::from_utf8(&bytes[..text_end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Answer {
        status,
        headers,
        body: bytes[text_end + 4..].to_vec(),
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn head_answers_every_get_path_without_a_body() {
    let d = Daemon::start(&[]);
    for path in ["/", "/healthz", "/metrics", "/ws", "/nope"] {
        let get = ask(d.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let head = ask(d.addr, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} got a body");
        if path != "/metrics" {
            // /metrics changes between two requests; the others do not.
            assert_eq!(head.content_length(), get.body.len(), "HEAD {path}");
        }
        assert_eq!(head.header("content-type"), get.header("content-type"));
    }
    let page = ask(d.addr, "HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(page.status, 200);
    assert_eq!(page.content_length(), PAGE.len());
    // Other methods are still refused, naming both.
    let post = ask(d.addr, "POST / HTTP/1.1\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[test]
fn the_page_is_gzipped_when_asked_and_tagged() {
    let d = Daemon::start(&[]);
    let plain = ask(d.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, PAGE.as_bytes());
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    let gz = ask(
        d.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n",
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gz.content_length(), gz.body.len());
    assert!(
        gz.body.len() * 2 < PAGE.len(),
        "gzip body {} B for a {} B page",
        gz.body.len(),
        PAGE.len()
    );
    assert_eq!(gunzip(&gz.body), PAGE.as_bytes());

    // q=0 refuses gzip.
    let refused = ask(
        d.addr,
        "GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=0, identity\r\n\r\n",
    );
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, PAGE.as_bytes());

    // Each representation has its ETag; naming it gets 304, no body.
    let (etag, etag_gz) = (
        plain.header("etag").expect("ETag").to_string(),
        gz.header("etag").expect("ETag on gzip").to_string(),
    );
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_ne!(etag, etag_gz);
    for (tag, ae) in [(&etag, ""), (&etag_gz, "Accept-Encoding: gzip\r\n")] {
        let again = ask(
            d.addr,
            &format!("GET / HTTP/1.1\r\n{ae}If-None-Match: \"other\", {tag}\r\n\r\n"),
        );
        assert_eq!(again.status, 304, "If-None-Match: {tag}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(tag.as_str()));
    }
    let stale = ask(d.addr, "GET / HTTP/1.1\r\nIf-None-Match: \"old\"\r\n\r\n");
    assert_eq!(stale.status, 200);
}

#[test]
fn the_page_carries_a_content_security_policy() {
    let d = Daemon::start(&[]);
    let page = ask(d.addr, "GET / HTTP/1.1\r\n\r\n");
    let csp = page
        .header("content-security-policy")
        .expect("Content-Security-Policy");
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[test]
fn plaintext_http_under_tls_required_is_told_to_use_https() {
    let dir = std::env::temp_dir().join(format!("muxchat-http-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let d = Daemon::start(&["--tls-cert", &cert_s, "--tls-key", &key_s, "--tls-required"]);
    let r = ask(d.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.status, 426);
    let upgrade = r.header("upgrade").expect("Upgrade header on 426");
    assert!(upgrade.contains("TLS/1.2"), "Upgrade: {upgrade}");
    let connection = r.header("connection").expect("Connection");
    assert!(
        connection.to_ascii_lowercase().contains("upgrade"),
        "Connection: {connection}"
    );
    assert_eq!(
        r.headers.iter().filter(|(n, _)| n == "connection").count(),
        1,
        "one Connection header"
    );
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("https://"), "{body}");
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// 2,000 clients ask for the page and never read: each held a copy of the
/// 52 KB page (about 100 MiB for 2,000); with the shared page they hold
/// only their heads. The kernel's socket buffers are not the daemon's RSS.
#[test]
fn unread_page_requests_do_not_copy_the_page() {
    const CLIENTS: usize = 2000;
    muxchat::net::raise_nofile_limit().expect("raise the open file limit");
    let d = Daemon::start(&["--max-clients", "5000"]);
    // Warm up: the page and the allocator's first arenas.
    let _ = ask(d.addr, "GET / HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(d.pid());
    let started = Instant::now();
    let mut held = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small receive window: the page cannot hide in our buffers.
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&d.addr.into()).expect("connect");
        let mut s: TcpStream = s.into();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        held.push(s);
        assert!(started.elapsed() < 4 * WAIT, "connecting took too long");
    }
    // Let the daemon accept and answer them all.
    let mut peak = 0;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "RSS {} MiB before, peak {} MiB with {CLIENTS} unread page requests",
        before / 1024,
        peak / 1024
    );
    // With a copy each: ~100 MiB. Shared: sessions and heads, a few MiB.
    assert!(
        grew_mib < 40,
        "RSS grew {grew_mib} MiB for {CLIENTS} unread page requests (before {} MiB)",
        before / 1024
    );
    // The daemon still answers.
    let ok = ask(d.addr, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(ok.status, 200);
    drop(held);
}
