//! RESP2: encoding commands and parsing replies and pushes incrementally.
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

use std::io::Write;

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
            limits,
            budget: limits.max_elements,
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

enum Stop {
    Incomplete,
    Invalid(&'static str),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    /// Array elements the value may still announce.
    budget: usize,
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
            b'$' => match self.length(self.limits.max_bulk, "bulk string too long")? {
                None => Value::Nil,
                Some(n) => {
                    let rest = &self.buf[self.pos..];
                    // n + 2 may not fit a usize on a small target.
                    if rest.len() < n || rest.len() - n < 2 {
                        return Err(Stop::Incomplete);
                    }
                    if &rest[n..n + 2] != b"\r\n" {
                        return Err(Stop::Invalid("bulk string not followed by CRLF"));
                    }
                    self.pos += n + 2;
                    Value::Bulk(if build {
                        rest[..n].to_vec()
                    } else {
                        Vec::new()
                    })
                }
            },
            b'*' => match self.length(self.budget, "too many array elements")? {
                None => Value::Nil,
                Some(n) => {
                    if depth >= self.limits.max_depth.min(HARD_MAX_DEPTH) {
                        return Err(Stop::Invalid("arrays nested too deep"));
                    }
                    self.budget -= n;
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
            _ => return Err(Stop::Invalid("unknown RESP2 type byte")),
        };
        Ok(build.then_some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bulk(b: &[u8]) -> Value {
        Value::Bulk(b.to_vec())
    }

    fn samples() -> Vec<(&'static [u8], Value)> {
        use Value::*;
        vec![
            (b"+OK\r\n", Simple(b"OK".to_vec())),
            (b"+\r\n", Simple(vec![])),
            (
                b"-ERR unknown command\r\n",
                Error(b"ERR unknown command".to_vec()),
            ),
            (b":12\r\n", Int(12)),
            (b":-9223372036854775808\r\n", Int(i64::MIN)),
            (b":9223372036854775807\r\n", Int(i64::MAX)),
            (b"$3\r\nabc\r\n", bulk(b"abc")),
            (b"$0\r\n\r\n", bulk(b"")),
            (b"$4\r\na\r\nb\r\n", bulk(b"a\r\nb")),
            (b"$-1\r\n", Nil),
            (b"*-1\r\n", Nil),
            (b"*0\r\n", Array(vec![])),
            (
                b"*3\r\n$7\r\nmessage\r\n$5\r\n#room\r\n$2\r\nhi\r\n",
                Array(vec![bulk(b"message"), bulk(b"#room"), bulk(b"hi")]),
            ),
            (
                b"*2\r\n*2\r\n:1\r\n$-1\r\n*1\r\n+x\r\n",
                Array(vec![
                    Array(vec![Int(1), Nil]),
                    Array(vec![Simple(b"x".to_vec())]),
                ]),
            ),
        ]
    }

    #[test]
    fn every_type_parses_and_every_prefix_is_incomplete() {
        let limits = Limits::default();
        for (bytes, want) in samples() {
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse(&bytes[..cut], &limits),
                    Parse::Incomplete,
                    "{bytes:?} cut at {cut}"
                );
            }
            assert_eq!(
                parse(bytes, &limits),
                Parse::Done(want, bytes.len()),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn pipelined_values_consume_exactly_their_length() {
        let limits = Limits::default();
        let mut stream: Vec<u8> = samples().iter().flat_map(|(b, _)| b.to_vec()).collect();
        stream.extend_from_slice(b"*2\r\n$1\r\n"); // a value still arriving
        let mut at = 0;
        for (bytes, want) in samples() {
            assert_eq!(
                parse(&stream[at..], &limits),
                Parse::Done(want, bytes.len())
            );
            at += bytes.len();
        }
        assert_eq!(parse(&stream[at..], &limits), Parse::Incomplete);
    }

    #[test]
    fn limits_are_invalid() {
        let l = Limits {
            max_bulk: 4,
            max_elements: 3,
            max_depth: 2,
        };
        assert_eq!(parse(b"$4\r\nabcd\r\n", &l), Parse::Done(bulk(b"abcd"), 10));
        let cases: [&[u8]; 7] = [
            b"$5\r\n", // announced too long: no need to wait for it
            b"+abcde", // a line past max_bulk without its CRLF
            b"-abcde\r\n",
            b"*4\r\n",
            b"*2\r\n*2\r\n",       // 4 elements across the whole value
            b"*1\r\n*1\r\n*1\r\n", // depth 3
            b"*99999999999999999\r\n",
        ];
        for bytes in cases {
            assert!(matches!(parse(bytes, &l), Parse::Invalid(_)), "{bytes:?}");
        }
        // A huge announced count within the limits allocates nothing yet.
        assert_eq!(parse(b"*65536\r\n", &Limits::default()), Parse::Incomplete);
        let deep = Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        };
        let nested = b"*1\r\n".repeat(HARD_MAX_DEPTH + 1);
        assert!(matches!(parse(&nested, &deep), Parse::Invalid(_)));
    }

    #[test]
    fn malformed_input_is_invalid() {
        let limits = Limits::default();
        // One case per '|': negative lengths, loose integers, overflow, an
        // integer line too long, bare LF or CR, a bulk without its CRLF,
        // RESP3 and unknown types.
        let cases = "$-2\r\n|*-2\r\n|$-0x\r\n|:+1\r\n|:\r\n|:1a\r\n|: 1\r\n|$\r\n\
            |:9223372036854775808\r\n|:123456789012345678901|+OK\n|+OK\rx\
            |$3\r\nabcXY|_\r\n|%1\r\n|*1\r\n?";
        for case in cases.split('|') {
            let r = parse(case.as_bytes(), &limits);
            assert!(matches!(r, Parse::Invalid(_)), "{case:?}: {r:?}");
        }
        assert_eq!(parse(b"", &limits), Parse::Incomplete);
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::Int(-3).as_int(), Some(-3));
        assert_eq!(bulk(b"42").as_int(), Some(42));
        assert_eq!(Value::Simple(b"-7".to_vec()).as_int(), Some(-7));
        assert_eq!(bulk(b"4x").as_int(), None);
        assert_eq!(Value::Nil.as_int(), None);
        assert_eq!(bulk(b"a").as_bytes(), Some(&b"a"[..]));
        assert_eq!(Value::Error(b"E".to_vec()).as_bytes(), None);
        assert_eq!(Value::Error(b"E".to_vec()).error(), Some(&b"E"[..]));
        assert_eq!(bulk(b"E").error(), None);
        assert_eq!(
            Value::Array(vec![Value::Nil]).as_array(),
            Some(&[Value::Nil][..])
        );
        assert_eq!(Value::Nil.as_array(), None);
    }

    #[test]
    fn encode_writes_an_array_of_bulks() {
        let mut out = b"x".to_vec();
        encode(&mut out, &[b"PUBLISH", b"#r", b""]);
        assert_eq!(out, b"x*3\r\n$7\r\nPUBLISH\r\n$2\r\n#r\r\n$0\r\n\r\n");
    }

    proptest! {
        #[test]
        fn encoded_commands_parse_back(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let mut out = Vec::new();
            encode(&mut out, &refs);
            let want = Value::Array(args.iter().map(|a| bulk(a)).collect());
            prop_assert_eq!(parse(&out, &Limits::default()), Parse::Done(want, out.len()));
            prop_assert_eq!(parse(&out[..cut.index(out.len())], &Limits::default()), Parse::Incomplete);
        }
    }
}
