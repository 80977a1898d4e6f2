//! RESP, the Redis protocol, as much as `--target redis://` needs: the
//! commands muxload sends, and cutting replies and pub/sub pushes out of a
//! byte stream.
//!
//! Like [`crate::codec::frame`], this is a pure function over bytes:
//! "incomplete" is a normal answer, nothing is allocated per value, and a
//! message push hands back its payload borrowed from the read buffer (the
//! receive path runs millions of times a second, and the comparison with
//! muxchatd is only fair if both targets are decoded at the same cost).
//! Every length is checked against a limit before anything waits for it.
//!
//! ```text
//!  RESP3 push of a published message (what every subscriber receives):
//!  >3\r\n $7\r\n message\r\n $5\r\n #room\r\n $64\r\n <64 payload bytes>\r\n
//! ```

use std::io::{self, Read, Write};

/// Aggregates nested deeper than this are refused (a reply to our few
/// commands is never more than two levels deep).
const MAX_DEPTH: usize = 8;
/// Elements one aggregate may declare.
const MAX_ELEMENTS: i64 = 1 << 20;

/// One reply or push, as much of it as muxload looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A pub/sub message: `["message", channel, payload]`.
    Message {
        /// The channel (muxload's room).
        channel: &'a [u8],
        /// The published bytes.
        payload: &'a [u8],
    },
    /// Another aggregate whose first element is a string: `subscribe`
    /// confirmations, RESP2 `pong` pushes. `second` is its second element
    /// when that is a string (the channel of a `subscribe`).
    Kind {
        /// The first element.
        kind: &'a [u8],
        /// The second element, if a string.
        second: Option<&'a [u8]>,
    },
    /// A simple string (`+OK`, `+PONG`).
    Simple(&'a [u8]),
    /// An error (`-ERR ...`).
    Error(&'a [u8]),
    /// An integer (PUBLISH answers with its receiver count).
    Integer(i64),
    /// Anything else (HELLO's map, a null, a number).
    Other,
}

/// What [`parse`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole value, and the bytes it occupied.
    Value(Reply<'a>, usize),
    /// Not a whole value yet.
    Incomplete,
    /// Not RESP, or over a limit: fatal for the connection.
    Invalid(&'static str),
}

/// Inner results: `Ok(None)` is "incomplete".
type Step<T> = Result<Option<T>, &'static str>;

/// The line starting at `pos` (without its CRLF) and where the next begins.
fn line(buf: &[u8], pos: usize) -> Step<(&[u8], usize)> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) if i + 1 < rest.len() => {
            if rest[i + 1] != b'\n' {
                return Err("CR without LF");
            }
            Ok(Some((&rest[..i], pos + i + 2)))
        }
        _ => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad number")
}

/// A value that is a string (simple or bulk) at `pos`: `Ok(Some((Some(s),
/// next)))`; another kind of value is skipped and gives `None`.
fn string_or_skip(
    buf: &[u8],
    pos: usize,
    max_bulk: usize,
    depth: usize,
) -> Step<(Option<&[u8]>, usize)> {
    let Some((head, next)) = line(buf, pos)? else {
        return Ok(None);
    };
    let Some((&kind, body)) = head.split_first() else {
        return Err("empty line");
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
            Ok(Some(((kind == b'+').then_some(body), next)))
        }
        b'$' | b'=' | b'!' => {
            let len = number(body)?;
            if len < 0 {
                return Ok(Some((None, next)));
            }
            if len as u64 > max_bulk as u64 {
                return Err("bulk string over the limit");
            }
            let end = next + len as usize;
            match buf.get(end..end + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(((kind == b'$').then(|| &buf[next..end]), end + 2))),
                Some(_) => Err("bulk string without CRLF"),
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            if depth >= MAX_DEPTH {
                return Err("nested too deep");
            }
            let n = number(body)?;
            if n > MAX_ELEMENTS {
                return Err("aggregate over the limit");
            }
            let n = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut at = next;
            for _ in 0..n.max(0) {
                let Some((_, after)) = string_or_skip(buf, at, max_bulk, depth + 1)? else {
                    return Ok(None);
                };
                at = after;
            }
            Ok(Some((None, at)))
        }
        _ => Err("unknown RESP type"),
    }
}

/// Cuts the first reply or push out of `buf`; bulk strings longer than
/// `max_bulk` are refused before they are waited for.
pub fn parse(buf: &[u8], max_bulk: usize) -> Parsed<'_> {
    match parse_step(buf, max_bulk) {
        Ok(Some((reply, used))) => Parsed::Value(reply, used),
        Ok(None) => Parsed::Incomplete,
        Err(why) => Parsed::Invalid(why),
    }
}

fn parse_step(buf: &[u8], max_bulk: usize) -> Step<(Reply<'_>, usize)> {
    let Some((head, next)) = line(buf, 0)? else {
        return Ok(None);
    };
    let Some((&kind, body)) = head.split_first() else {
        return Err("empty line");
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(body), next))),
        b'-' => Ok(Some((Reply::Error(body), next))),
        b':' => Ok(Some((Reply::Integer(number(body)?), next))),
        b'*' | b'>' => {
            let n = number(body)?;
            if n > MAX_ELEMENTS {
                return Err("aggregate over the limit");
            }
            let mut strings: [Option<&[u8]>; 3] = [None; 3];
            let mut at = next;
            for k in 0..n.max(0) as usize {
                let Some((s, after)) = string_or_skip(buf, at, max_bulk, 1)? else {
                    return Ok(None);
                };
                if let Some(slot) = strings.get_mut(k) {
                    *slot = s;
                }
                at = after;
            }
            let reply = match strings {
                [Some(b"message"), Some(channel), Some(payload)] if n == 3 => {
                    Reply::Message { channel, payload }
                }
                [Some(kind), second, _] => Reply::Kind { kind, second },
                _ => Reply::Other,
            };
            Ok(Some((reply, at)))
        }
        _ => Ok(string_or_skip(buf, 0, max_bulk, 0)?.map(|(_, used)| (Reply::Other, used))),
    }
}

/// Appends `*n\r\n`: an array of `n` elements follows.
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "*{n}\r\n");
}

/// Appends `$len\r\n`: a bulk string of `len` bytes follows (then CRLF).
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "${len}\r\n");
}

/// Appends one bulk string.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    bulk_header(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends one command (an array of bulk strings) to `out`: the daemon's
/// cluster link encodes its calls the same way.
pub use crate::codec::resp::encode as command;

/// A reassembly buffer for RESP, the counterpart of
/// [`crate::codec::FrameReader`] for this other protocol: one per
/// worker, serving its connections in turn.
///
/// Invariants: `buf[start..end]` is received and not yet parsed; `buf` is
/// initialised to its full length. A partial value left at the end of a
/// connection's reads is moved out with [`RespReader::take_rest`].
#[derive(Debug)]
pub struct RespReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_bulk: usize,
}

impl RespReader {
    /// A reader of `capacity` bytes refusing bulk strings over `max_bulk`.
    pub fn new(max_bulk: usize, capacity: usize) -> RespReader {
        RespReader {
            buf: vec![0; capacity.max(2 * max_bulk + 64)],
            start: 0,
            end: 0,
            max_bulk,
        }
    }

    /// Puts back a connection's parked partial value.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// One `read()` from `r`; `Ok(0)` is end of stream, or a value larger
    /// than the whole buffer (also the end: nothing we asked for is).
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.buf.len() - self.end < self.buf.len() / 2 {
            self.compact();
        }
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The next whole value and its size, `Ok(None)` if there is none
    /// yet; `Err` is fatal for the connection.
    pub fn next_value(&mut self) -> Result<Option<(Reply<'_>, usize)>, &'static str> {
        let RespReader {
            buf,
            start,
            end,
            max_bulk,
        } = self;
        match parse(&buf[*start..*end], *max_bulk) {
            Parsed::Value(reply, used) => {
                *start += used;
                Ok(Some((reply, used)))
            }
            Parsed::Incomplete => Ok(None),
            Parsed::Invalid(why) => Err(why),
        }
    }

    /// Moves the unparsed bytes into `into` and empties the reader.
    pub fn take_rest(&mut self, into: &mut Vec<u8>) {
        into.clear();
        into.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(payload: &[u8]) -> Vec<u8> {
        let mut v = b">3\r\n$7\r\nmessage\r\n$5\r\n#room\r\n".to_vec();
        v.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        v.extend_from_slice(payload);
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn a_message_push_is_incomplete_at_every_split() {
        let bytes = push(b"hello\r\nworld");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], 1024), Parsed::Incomplete, "cut {cut}");
        }
        assert_eq!(
            parse(&bytes, 1024),
            Parsed::Value(
                Reply::Message {
                    channel: b"#room",
                    payload: b"hello\r\nworld"
                },
                bytes.len()
            )
        );
        // RESP2 sends the same as an array.
        let mut resp2 = bytes.clone();
        resp2[0] = b'*';
        assert!(matches!(
            parse(&resp2, 1024),
            Parsed::Value(Reply::Message { .. }, _)
        ));
    }

    #[test]
    fn replies_muxload_meets() {
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n+OK\r\n";
        let n = hello.len() - 5;
        assert_eq!(parse(hello, 64), Parsed::Value(Reply::Other, n));
        assert_eq!(
            parse(b">3\r\n$9\r\nsubscribe\r\n$5\r\n#room\r\n:1\r\n", 64),
            Parsed::Value(
                Reply::Kind {
                    kind: b"subscribe",
                    second: Some(b"#room")
                },
                34
            )
        );
        assert_eq!(
            parse(b":1000\r\n", 64),
            Parsed::Value(Reply::Integer(1000), 7)
        );
        assert_eq!(
            parse(b"+PONG\r\n", 64),
            Parsed::Value(Reply::Simple(b"PONG"), 7)
        );
        assert_eq!(
            parse(b"-ERR no\r\n", 64),
            Parsed::Value(Reply::Error(b"ERR no"), 9)
        );
        assert_eq!(parse(b"$-1\r\n", 64), Parsed::Value(Reply::Other, 5));
    }

    #[test]
    fn limits_and_garbage_are_refused_early() {
        assert!(matches!(parse(b"$100000\r\n", 64), Parsed::Invalid(_)));
        assert!(matches!(parse(b"?\r\n", 64), Parsed::Invalid(_)));
        assert!(matches!(parse(b"$3\r\nabcXY", 64), Parsed::Invalid(_)));
        assert!(matches!(parse(b":x\r\n", 64), Parsed::Invalid(_)));
        let deep = "*1\r\n".repeat(20);
        assert!(matches!(parse(deep.as_bytes(), 64), Parsed::Invalid(_)));
    }

    #[test]
    fn commands_and_the_reader() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"#r", b"hi"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\n#r\r\n$2\r\nhi\r\n");
        // Two pushes split across reads, with the tail parked between them.
        let mut stream = push(b"one");
        stream.extend_from_slice(&push(b"two"));
        let mut r = RespReader::new(64, 0);
        let mut parked = Vec::new();
        let mut seen = Vec::new();
        for chunk in stream.chunks(7) {
            r.extend(&parked);
            let mut src = chunk;
            r.read_from(&mut src).unwrap();
            while let Some((reply, _)) = r.next_value().unwrap() {
                if let Reply::Message { payload, .. } = reply {
                    seen.push(payload.to_vec());
                }
            }
            r.take_rest(&mut parked);
        }
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
        assert!(parked.is_empty());
    }
}
