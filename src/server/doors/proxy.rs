//! The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a
//! proxy in `--proxy-from` may put in front of a connection to say whose
//! it is, and the CIDR lists that name those proxies.
//!
//! This module owns the parsing: [`parse`] looks at the bytes a
//! connection starts with (peeked by `take`, so nothing is consumed
//! until a whole header is there) and says how long the header is and
//! which address it names. Which connections may carry a header, and what
//! the session's peer address becomes, is the event loop's business.
//!
//! Bounded: a version 1 header is at most [`V1_MAX`] bytes, a version 2
//! header at most [`MAX_HEADER`] (16 bytes and the address block with its
//! TLVs); anything longer is refused, not buffered.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::str::FromStr;

/// The longest version 1 header, CRLF included (the spec's 107).
pub const V1_MAX: usize = 107;
/// Version 2's fixed part: signature, version and command, family, length.
pub const V2_FIXED: usize = 16;
/// The longest version 2 header accepted: the fixed part, the largest
/// address block (two Unix paths, 216 bytes) and room for TLVs (HAProxy
/// adds a few, e.g. ALPN or SSL details, usually far below this).
pub const MAX_HEADER: usize = V2_FIXED + 1024;
/// The first bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// What the start of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// It could still be a header: wait for more bytes.
    Incomplete,
    /// Not a PROXY header at all: the connection speaks for itself.
    NotProxy,
    /// A whole header of `len` bytes naming `source` as the client; `None`
    /// for a header that names nobody (v1 `UNKNOWN`, v2 `LOCAL` such as a
    /// health check, or an address family other than TCP over IP): the
    /// connection's own address stands.
    Header {
        /// Bytes the header takes, to consume before the protocol starts.
        len: usize,
        /// The client's address, as the proxy saw it.
        source: Option<SocketAddr>,
    },
}

/// A header that starts like one and then breaks the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader(pub &'static str);

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// What the start of a connection from a trusted proxy was.
#[derive(Debug)]
pub enum ProxyStart {
    /// Part of a header so far: wait for more bytes.
    Partial,
    /// The peer closed before a header or anything else.
    Eof,
    /// No header: the protocol starts at once (a direct connection from the
    /// proxy's host, say).
    Absent,
    /// A header, consumed; the client's address if it named one.
    Header(Option<SocketAddr>),
    /// A header that breaks the spec.
    Bad(BadHeader),
}

/// Looks for a header at the start of `stream`. The bytes are peeked, like
/// the door's first byte, and only a whole header is consumed, so the
/// protocol behind it reaches the door untouched. `WouldBlock` (nothing
/// there yet) comes back as an error, like a read's.
pub(super) fn take(stream: &TcpStream) -> io::Result<ProxyStart> {
    let mut buf = [0u8; MAX_HEADER];
    let n = stream.peek(&mut buf)?;
    if n == 0 {
        return Ok(ProxyStart::Eof);
    }
    Ok(match parse(&buf[..n]) {
        Ok(Parsed::Incomplete) => ProxyStart::Partial,
        Ok(Parsed::NotProxy) => ProxyStart::Absent,
        Ok(Parsed::Header { len, source }) => {
            // Peeked, so all `len` bytes are in the socket already.
            (&*stream).read_exact(&mut buf[..len])?;
            ProxyStart::Header(source)
        }
        Err(bad) => ProxyStart::Bad(bad),
    })
}

/// Looks at the first bytes of a connection (all that has arrived so far,
/// at most [`MAX_HEADER`] of them are needed).
pub fn parse(buf: &[u8]) -> Result<Parsed, BadHeader> {
    if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_FIXED {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    Ok(Parsed::NotProxy)
}

/// Whether `buf` and `prefix` agree on their common length (an empty
/// buffer could be anything).
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, BadHeader> {
    let window = &buf[..buf.len().min(V1_MAX)];
    // The first CR or LF decides, so every prefix agrees with the whole.
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(BadHeader("PROXY v1 header longer than 107 bytes"));
        }
        return Ok(Parsed::Incomplete);
    };
    match (window[cr], window.get(cr + 1)) {
        (b'\r', None) if buf.len() < V1_MAX => return Ok(Parsed::Incomplete),
        (b'\r', Some(b'\n')) => {}
        _ => return Err(BadHeader("PROXY v1 header ends without CR LF")),
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..cr])
        .map_err(|_| BadHeader("PROXY v1 header is not ASCII"))?;
    let len = cr + 2;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The spec lets the rest be anything: the proxy could not say.
        return Ok(Parsed::Header { len, source: None });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(BadHeader("PROXY v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(BadHeader("PROXY v1 header needs four fields"));
    };
    let ip = |s: &str| -> Result<IpAddr, BadHeader> {
        let ip = if v6 {
            Ipv6Addr::from_str(s).map(IpAddr::V6)
        } else {
            Ipv4Addr::from_str(s).map(IpAddr::V4)
        };
        ip.map_err(|_| BadHeader("PROXY v1 address does not match its family"))
    };
    let port = |s: &str| -> Result<u16, BadHeader> {
        // No sign, no leading zero: the spec's form, and no ambiguity.
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(BadHeader("PROXY v1 port is not a number"));
        }
        s.parse()
            .map_err(|_| BadHeader("PROXY v1 port is out of range"))
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    ip(dst)?;
    port(dport)?;
    Ok(Parsed::Header {
        len,
        source: Some(source),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, BadHeader> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(BadHeader("PROXY v2 header with a version other than 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(BadHeader("PROXY v2 command is neither LOCAL nor PROXY")),
    };
    let family = buf[13];
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = V2_FIXED + body;
    if len > MAX_HEADER {
        return Err(BadHeader("PROXY v2 header longer than the daemon accepts"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let block = &buf[V2_FIXED..len];
    let need = match family >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(BadHeader("PROXY v2 address family is unknown")),
    };
    if block.len() < need {
        return Err(BadHeader(
            "PROXY v2 address block is shorter than its family",
        ));
    }
    if !matches!(family & 0x0f, 0..=2) {
        return Err(BadHeader("PROXY v2 transport is unknown"));
    }
    if local || family & 0x0f != 1 {
        // LOCAL (the proxy's own health check), UNSPEC, UDP or a Unix
        // socket: no TCP client address to stand for.
        return Ok(Parsed::Header { len, source: None });
    }
    let source = match family >> 4 {
        1 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            SocketAddr::new(ip.into(), u16::from_be_bytes([block[8], block[9]]))
        }
        2 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let port = u16::from_be_bytes([block[32], block[33]]);
            SocketAddr::new(Ipv6Addr::from(octets).into(), port)
        }
        _ => return Ok(Parsed::Header { len, source: None }),
    };
    Ok(Parsed::Header {
        len,
        source: Some(source),
    })
}

/// One network, `ADDR/BITS` (or a bare address: all its bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr)
            .map_err(|_| format!("`{s}`: not an IP address (want ADDR or ADDR/BITS)"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// `--proxy-from`'s value: the networks whose connections may start with
/// a PROXY header. Empty: none may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cidrs(pub Vec<Cidr>);

impl Cidrs {
    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

impl FromStr for Cidrs {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidrs, String> {
        s.split(',')
            .map(|part| part.trim().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Cidrs)
    }
}

impl fmt::Display for Cidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The fuzz check (`fuzz/fuzz_targets/proxy_header.rs`, replayed by
/// `tests/fuzz_corpus.rs`): no panic on any input; bounded (at
/// [`MAX_HEADER`] bytes the answer is never "wait for more"); a header's
/// length fits the input and the spec's limits; and every prefix agrees
/// with the whole, as the bytes of a connection arrive one read at a time:
/// "wait" before the header is whole, the same header once it is, and
/// never a header where a shorter prefix was already refused or not one.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let whole = parse(data);
    if data.len() >= MAX_HEADER {
        assert_ne!(whole, Ok(Parsed::Incomplete), "unbounded wait");
    }
    let settled_at = match whole {
        Ok(Parsed::Header { len, source }) => {
            assert!(len <= data.len() && len <= MAX_HEADER);
            if data.starts_with(V1_PREFIX) {
                assert!(len <= V1_MAX);
            }
            assert_eq!(parse(&data[..len]), Ok(Parsed::Header { len, source }));
            len
        }
        _ => data.len(),
    };
    for cut in 0..settled_at {
        match parse(&data[..cut]) {
            Ok(Parsed::Incomplete) => {}
            earlier => assert_eq!(earlier, whole, "prefix {cut} settled differently"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn v2_tcp4(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut block = src.to_vec();
        block.extend_from_slice(&[127, 0, 0, 1]);
        block.extend_from_slice(&sport.to_be_bytes());
        block.extend_from_slice(&25000u16.to_be_bytes());
        block.extend_from_slice(tlvs);
        v2(1, 0x11, &block)
    }

    /// Every prefix of a whole header is Incomplete; the whole, with any
    /// protocol bytes behind it, is the header; nothing behind is consumed.
    fn check_split(header: &[u8], want: Option<SocketAddr>) {
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(header)
            );
        }
        let mut with_tail = header.to_vec();
        with_tail.extend_from_slice(b"\x00\x6cHELLO");
        for input in [header, &with_tail[..]] {
            assert_eq!(
                parse(input),
                Ok(Parsed::Header {
                    len: header.len(),
                    source: want
                })
            );
        }
    }

    #[test]
    fn v1_at_every_split() {
        check_split(
            b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 25000\r\n",
            Some("192.0.2.7:51234".parse().unwrap()),
        );
        check_split(
            b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
            Some("[2001:db8::1]:1".parse().unwrap()),
        );
        check_split(b"PROXY UNKNOWN\r\n", None);
        check_split(b"PROXY UNKNOWN ffff:f...f:ffff 1 2 3\r\n", None);
        // The longest legal v1 line is exactly 107 bytes (UNKNOWN with
        // two full IPv6 addresses).
        let ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {ff} {ff} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX);
        check_split(longest.as_bytes(), None);
        let tcp6 = format!("PROXY TCP6 {ff} {ff} 65535 65535\r\n");
        check_split(
            tcp6.as_bytes(),
            Some(format!("[{ff}]:65535").parse().unwrap()),
        );
    }

    #[test]
    fn v2_at_every_split() {
        check_split(
            &v2_tcp4([198, 51, 100, 9], 40000, &[]),
            Some("198.51.100.9:40000".parse().unwrap()),
        );
        // TLVs after the addresses are skipped.
        check_split(
            &v2_tcp4([10, 0, 0, 1], 1, &[0x01, 0x00, 0x02, b'h', b'2']),
            Some("10.0.0.1:1".parse().unwrap()),
        );
        let mut block = vec![0u8; 36];
        block[0] = 0x20;
        block[1] = 0x01;
        block[15] = 0x05;
        block[32..34].copy_from_slice(&443u16.to_be_bytes());
        check_split(&v2(1, 0x21, &block), Some("[2001::5]:443".parse().unwrap()));
        // LOCAL (a health check), UNSPEC, UDP, Unix: no address.
        check_split(&v2(0, 0x00, &[]), None);
        check_split(&v2(0, 0x11, &[0; 12]), None);
        check_split(&v2(1, 0x00, &[]), None);
        check_split(&v2(1, 0x12, &[0; 12]), None);
        check_split(&v2(1, 0x31, &[0; 216]), None);
    }

    #[test]
    fn not_a_header() {
        for input in [
            &b"\x00\x6c"[..],
            b"GET / HTTP/1.1\r\n",
            b"POST /",
            b"PROXZ",
            b"\x16\x03\x01",
            b"\r\n\r\n\0\r\nQUIX",
        ] {
            assert_eq!(parse(input), Ok(Parsed::NotProxy), "{input:?}");
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let long_v1 = format!("PROXY TCP4 {}", "1".repeat(200));
        let mut bad_len = V2_SIGNATURE.to_vec();
        bad_len.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        for input in [
            long_v1.as_bytes(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            &bad_len,
            &v2(2, 0x11, &[0; 12]),
            &v2(1, 0x41, &[0; 12]),
            &v2(1, 0x13, &[0; 12]),
            &v2(1, 0x11, &[0; 11]),
            &v2(1, 0x21, &[0; 12]),
        ] {
            assert!(
                parse(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut v1_header = v2(1, 0x11, &[0; 12]);
        v1_header[12] = 0x11;
        assert!(parse(&v1_header).is_err());
    }

    #[test]
    fn cidrs() {
        let c: Cidrs = "10.0.0.0/8, 192.0.2.1,2001:db8::/32,::1".parse().unwrap();
        assert_eq!(
            c.to_string(),
            "10.0.0.0/8,192.0.2.1/32,2001:db8::/32,::1/128"
        );
        for yes in [
            "10.1.2.3",
            "192.0.2.1",
            "2001:db8:1::9",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(c.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.0.2.2", "2001:db9::", "127.0.0.1"] {
            assert!(!c.contains(no.parse().unwrap()), "{no}");
        }
        let all: Cidrs = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(all.contains("::2".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "host",
            "10.0.0.0/x",
            "10.0.0.0,",
        ] {
            assert!(bad.parse::<Cidrs>().is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The fuzz check on inputs that start like a header (or not),
        /// so stable `cargo test` explores what the fuzzer would.
        #[test]
        fn fuzz_check_holds(start in 0u8..4, body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut data = match start {
                0 => b"PROXY TCP4 ".to_vec(),
                1 => b"PROXY ".to_vec(),
                2 => V2_SIGNATURE.to_vec(),
                _ => Vec::new(),
            };
            data.extend_from_slice(&body);
            fuzz_check(&data);
        }
    }
}
