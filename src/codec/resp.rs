//! RESP, the Redis protocol: encoding commands, and the one parser of
//! replies and pushes, for the cluster link and for muxload.
//!
//! A pure function over bytes, like the chat codec: [`parse`] looks at the
//! start of a buffer and says `Done` (with how much it used), `Incomplete`
//! (read more; nothing consumed) or `Invalid` (the link is broken and
//! resets). Every size Redis can announce is checked against [`Limits`]
//! before anything is allocated, and a value still arriving allocates
//! nothing: `parse` first walks the bytes without building (every length,
//! every line ending, the element and depth budgets), and builds the
//! [`Value`] only once the whole value is there. A link that retries after
//! each read therefore pays a scan of what it holds, never a rebuilt tree.
//!
//! The cluster link speaks RESP2 and wants owned [`Value`]s. muxload
//! (`--target redis://`) says `HELLO 3`, so its replies are RESP3, and its
//! receive path runs millions of times a second: [`parse_reply`] walks the
//! same cursor, under the same [`Limits`], in one pass, accepting RESP3's
//! types and handing back a [`Reply`] that borrows its strings from the
//! read buffer (nothing is allocated per value). [`RespReader`] is that
//! side's reassembly buffer, the counterpart of
//! [`FrameReader`](super::FrameReader).
//!
//! ```text
//!  RESP3 push of a published message (what every subscriber receives):
//!  >3\r\n $7\r\n message\r\n $5\r\n #room\r\n $64\r\n <64 payload bytes>\r\n
//! ```

use std::io::{self, Read, Write};

/// One RESP2 value (replies on the command link; pushes on the subscriber
/// link are Arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK\r\n`
    Simple(Vec<u8>),
    /// `-ERR ...\r\n`
    Error(Vec<u8>),
    /// `:1\r\n`
    Int(i64),
    /// `$3\r\nabc\r\n`
    Bulk(Vec<u8>),
    /// `$-1\r\n` and `*-1\r\n`
    Nil,
    /// `*2\r\n...`
    Array(Vec<Value>),
}

impl Value {
    /// An Int, or a Bulk/Simple holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bulk(b) | Value::Simple(b) => parse_int(b),
            _ => None,
        }
    }
    /// The bytes of a Bulk or Simple.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }
    /// The elements of an Array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
    /// The message of an Error.
    pub fn error(&self) -> Option<&[u8]> {
        match self {
            Value::Error(m) => Some(m),
            _ => None,
        }
    }
}

/// What one value may cost. A value past any of these is `Invalid`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string, and longest simple string or error line.
    pub max_bulk: usize,
    /// Array elements in the whole value, nested arrays' included.
    pub max_elements: usize,
    /// Arrays nested in arrays; a top-level array is depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 1 << 20,
            max_elements: 65_536,
            max_depth: 8,
        }
    }
}

/// The outcome of [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole value and the bytes it took from the start of the buffer.
    Done(Value, usize),
    /// A prefix of a value: wait for more bytes (nothing consumed).
    Incomplete,
    /// Not RESP2, or past a limit: the stream is broken.
    Invalid(&'static str),
}

/// One reply or push, as much of it as muxload looks at (see
/// [`parse_reply`]).
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

/// What [`parse_reply`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole value, and the bytes it occupied.
    Value(Reply<'a>, usize),
    /// Not a whole value yet.
    Incomplete,
    /// Not RESP, or over a limit: fatal for the connection.
    Invalid(&'static str),
}

/// Recursion is bounded by `max_depth`; this keeps a careless limit from
/// turning a deep input into a stack overflow.
const HARD_MAX_DEPTH: usize = 128;
/// `-9223372036854775808`: the longest line an integer or length takes.
const MAX_INT_LINE: usize = 20;
/// The shortest encoded value (`+\r\n`), to bound a capacity by the bytes.
const MIN_VALUE_LEN: usize = 3;

/// Parses one value from the start of `buf`. Incomplete: wait for more
/// bytes (nothing consumed). Invalid: the stream is broken (the link will
/// reset). Never panics, never allocates beyond the limits.
pub fn parse(buf: &[u8], limits: &Limits) -> Parse {
    let run = |build: bool| {
        let mut c = Cursor {
            buf,
            pos: 0,
            limits: *limits,
            budget: limits.max_elements,
            resp3: false,
        };
        c.value(0, build).map(|v| (v, c.pos))
    };
    match run(false) {
        Err(Stop::Incomplete) => Parse::Incomplete,
        Err(Stop::Invalid(why)) => Parse::Invalid(why),
        // The scan accepted these very bytes, so building cannot stop.
        Ok(_) => match run(true) {
            Ok((Some(v), used)) => Parse::Done(v, used),
            _ => Parse::Invalid("internal: build disagrees with scan"),
        },
    }
}

/// Cuts the first reply or push (RESP3 or RESP2) out of `buf`, in one pass
/// and borrowing from it: muxload's receive path. The same cursor and
/// bounds as [`parse`] (a `%` map or `|` attribute of n pairs counts 2n
/// elements); RESP3's other types are checked and skipped as `Other`.
pub fn parse_reply<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let mut c = Cursor {
        buf,
        pos: 0,
        limits: *limits,
        budget: limits.max_elements,
        resp3: true,
    };
    match c.reply() {
        Ok(reply) => Parsed::Value(reply, c.pos),
        Err(Stop::Incomplete) => Parsed::Incomplete,
        Err(Stop::Invalid(why)) => Parsed::Invalid(why),
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

/// Appends one command as an array of bulk strings: `*N\r\n$len\r\narg\r\n...`
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Strict decimal: an optional `-`, then one or more digits, within i64.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulating on the sign's side reaches i64::MIN without overflow.
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// A reassembly buffer for RESP, the counterpart of
/// [`FrameReader`](super::FrameReader) for this other protocol: one per
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
    limits: Limits,
}

impl RespReader {
    /// A reader of `capacity` bytes refusing bulk strings over `max_bulk`.
    pub fn new(max_bulk: usize, capacity: usize) -> RespReader {
        RespReader {
            buf: vec![0; capacity.max(2 * max_bulk + 64)],
            start: 0,
            end: 0,
            limits: Limits {
                max_bulk,
                // A reply to muxload's few commands is never more than two
                // levels deep, nor more than a handful of elements.
                max_elements: READER_MAX_ELEMENTS,
                max_depth: READER_MAX_DEPTH,
            },
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
            limits,
        } = self;
        match parse_reply(&buf[*start..*end], limits) {
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

/// Elements one reply to muxload may hold, nested ones included.
const READER_MAX_ELEMENTS: usize = 1 << 20;
/// Aggregates nested in a reply to muxload.
const READER_MAX_DEPTH: usize = 8;

enum Stop {
    Incomplete,
    Invalid(&'static str),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
    /// Array elements the value may still announce.
    budget: usize,
    /// RESP3's types are accepted (and only checked, never built).
    resp3: bool,
}

impl<'a> Cursor<'a> {
    /// The line at the cursor without its CRLF, at most `max` bytes; the
    /// search never looks further than that, so a missing CRLF is found
    /// out after `max + 2` bytes, not never.
    fn line(&mut self, max: usize) -> Result<&'a [u8], Stop> {
        let rest = &self.buf[self.pos..];
        for (i, &b) in rest.iter().enumerate().take(max.saturating_add(1)) {
            match b {
                b'\r' => {
                    return match rest.get(i + 1) {
                        None => Err(Stop::Incomplete),
                        Some(b'\n') => {
                            self.pos += i + 2;
                            Ok(&rest[..i])
                        }
                        Some(_) => Err(Stop::Invalid("CR not followed by LF")),
                    }
                }
                b'\n' => return Err(Stop::Invalid("LF without CR")),
                _ if i == max => return Err(Stop::Invalid("line too long")),
                _ => {}
            }
        }
        Err(Stop::Incomplete)
    }

    fn int_line(&mut self) -> Result<i64, Stop> {
        let line = self.line(MAX_INT_LINE)?;
        parse_int(line).ok_or(Stop::Invalid("not a decimal integer"))
    }

    /// A length after `$` or `*`: `None` for the nil -1, at most `max`.
    fn length(&mut self, max: usize, too_big: &'static str) -> Result<Option<usize>, Stop> {
        match self.int_line()? {
            -1 => Ok(None),
            n if n < 0 => Err(Stop::Invalid("negative length")),
            n => match usize::try_from(n) {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(Stop::Invalid(too_big)),
            },
        }
    }

    /// One value at the cursor; built only when `build`, else just checked.
    fn value(&mut self, depth: usize, build: bool) -> Result<Option<Value>, Stop> {
        let Some(&tag) = self.buf.get(self.pos) else {
            return Err(Stop::Incomplete);
        };
        self.pos += 1;
        let v = match tag {
            b'+' | b'-' => {
                let line = self.line(self.limits.max_bulk)?;
                let bytes = if build { line.to_vec() } else { Vec::new() };
                if tag == b'+' {
                    Value::Simple(bytes)
                } else {
                    Value::Error(bytes)
                }
            }
            b':' => Value::Int(self.int_line()?),
            b'$' => match self.bulk_body()? {
                None => Value::Nil,
                Some(body) => Value::Bulk(if build { body.to_vec() } else { Vec::new() }),
            },
            b'*' => match self.aggregate(depth, false)? {
                None => Value::Nil,
                Some(n) => {
                    // n is within the element budget; when building, the
                    // scan has also seen all n elements in these bytes.
                    let room = (self.buf.len() - self.pos) / MIN_VALUE_LEN;
                    let mut items = Vec::with_capacity(if build { n.min(room) } else { 0 });
                    for _ in 0..n {
                        if let Some(item) = self.value(depth + 1, build)? {
                            items.push(item);
                        }
                    }
                    Value::Array(items)
                }
            },
            _ if self.resp3 => {
                self.resp3_value(tag, depth)?;
                Value::Nil
            }
            _ => return Err(Stop::Invalid("unknown RESP2 type byte")),
        };
        Ok(build.then_some(v))
    }

    /// A bulk string's body after its `$` (`None` for the nil `$-1`); the
    /// length is checked against `max_bulk` before anything waits for it.
    fn bulk_body(&mut self) -> Result<Option<&'a [u8]>, Stop> {
        let Some(n) = self.length(self.limits.max_bulk, "bulk string too long")? else {
            return Ok(None);
        };
        let rest = &self.buf[self.pos..];
        // n + 2 may not fit a usize on a small target.
        if rest.len() < n || rest.len() - n < 2 {
            return Err(Stop::Incomplete);
        }
        if &rest[n..n + 2] != b"\r\n" {
            return Err(Stop::Invalid("bulk string not followed by CRLF"));
        }
        self.pos += n + 2;
        Ok(Some(&rest[..n]))
    }

    /// An aggregate's element count after its type byte (`None` for the
    /// nil `*-1`), taken from the value's element budget; `pairs` (a map,
    /// an attribute) counts two elements per entry.
    fn aggregate(&mut self, depth: usize, pairs: bool) -> Result<Option<usize>, Stop> {
        let max = if pairs { self.budget / 2 } else { self.budget };
        let Some(n) = self.length(max, "too many array elements")? else {
            return Ok(None);
        };
        if depth >= self.limits.max_depth.min(HARD_MAX_DEPTH) {
            return Err(Stop::Invalid("arrays nested too deep"));
        }
        let n = if pairs { 2 * n } else { n };
        self.budget -= n;
        Ok(Some(n))
    }

    /// RESP3's other types (after `HELLO 3`), checked and skipped: muxload
    /// looks at none of them.
    fn resp3_value(&mut self, tag: u8, depth: usize) -> Result<(), Stop> {
        match tag {
            // Null, boolean, double, big number: one line.
            b'_' | b'#' | b',' | b'(' => {
                self.line(self.limits.max_bulk)?;
            }
            // Verbatim string, blob error: a bulk.
            b'=' | b'!' => {
                self.bulk_body()?;
            }
            b'~' | b'>' | b'%' | b'|' => {
                if let Some(n) = self.aggregate(depth, matches!(tag, b'%' | b'|'))? {
                    for _ in 0..n {
                        self.value(depth + 1, false)?;
                    }
                }
            }
            _ => return Err(Stop::Invalid("unknown RESP type byte")),
        }
        Ok(())
    }

    /// The reply at the cursor, for muxload: one pass, strings borrowed.
    fn reply(&mut self) -> Result<Reply<'a>, Stop> {
        let Some(&tag) = self.buf.get(self.pos) else {
            return Err(Stop::Incomplete);
        };
        match tag {
            b'+' | b'-' => {
                self.pos += 1;
                let line = self.line(self.limits.max_bulk)?;
                Ok(if tag == b'+' {
                    Reply::Simple(line)
                } else {
                    Reply::Error(line)
                })
            }
            b':' => {
                self.pos += 1;
                Ok(Reply::Integer(self.int_line()?))
            }
            b'*' | b'>' => {
                self.pos += 1;
                let Some(n) = self.aggregate(0, false)? else {
                    return Ok(Reply::Other);
                };
                let mut strings: [Option<&'a [u8]>; 3] = [None; 3];
                for k in 0..n {
                    let s = self.string_or_skip(1)?;
                    if let Some(slot) = strings.get_mut(k) {
                        *slot = s;
                    }
                }
                Ok(match strings {
                    [Some(b"message"), Some(channel), Some(payload)] if n == 3 => {
                        Reply::Message { channel, payload }
                    }
                    [Some(kind), second, _] => Reply::Kind { kind, second },
                    _ => Reply::Other,
                })
            }
            _ => {
                self.value(0, false)?;
                Ok(Reply::Other)
            }
        }
    }

    /// A simple or bulk string at the cursor, borrowed; any other value
    /// (a nil bulk included) is checked, skipped and gives `None`.
    fn string_or_skip(&mut self, depth: usize) -> Result<Option<&'a [u8]>, Stop> {
        match self.buf.get(self.pos) {
            Some(b'+') => {
                self.pos += 1;
                self.line(self.limits.max_bulk).map(Some)
            }
            Some(b'$') => {
                self.pos += 1;
                self.bulk_body()
            }
            _ => self.value(depth, false).map(|_| None),
        }
    }
}

#[cfg(test)]
mod tests;
