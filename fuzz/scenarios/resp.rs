//! The `resp` fuzz target: the Redis links' RESP2 parser.

use super::Bytes;

/// The Redis links' RESP2 parser (`codec::resp`) over a stream of
/// pipelined values under small limits: each `Done` uses at least one byte
/// and no more than is there, parses the same from exactly its own bytes,
/// was `Incomplete` at every shorter prefix, and re-encodes (canonically)
/// to bytes that parse back to the same value; a command-shaped value (an
/// array of bulks) re-encodes through `resp::encode`. The stream ends at
/// the first `Incomplete` or `Invalid`, as the link would wait or reset.
/// muxload's one-pass view (`resp::parse_reply`, RESP3 types accepted)
/// takes exactly the same bytes for every RESP2 value, and over the same
/// stream keeps the same promises (at least one byte, no more than is
/// there, the same answer from its own bytes, `Incomplete` at every
/// shorter prefix).
///
/// Input: two limits bytes (bulk 0..=63 and depth 0..=3, then elements
/// 0..=31), then the stream.
pub fn check(data: &[u8]) {
    use muxchat::codec::resp::{encode, parse, parse_reply, Limits, Parse, Parsed, Value};

    fn reencode(v: &Value, out: &mut Vec<u8>) {
        let mut put = |tag: u8, line: &[u8]| {
            out.push(tag);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        };
        match v {
            Value::Simple(s) => put(b'+', s),
            Value::Error(s) => put(b'-', s),
            Value::Int(n) => put(b':', n.to_string().as_bytes()),
            Value::Nil => put(b'$', b"-1"),
            Value::Bulk(b) => {
                put(b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                put(b'*', items.len().to_string().as_bytes());
                for item in items {
                    reencode(item, out);
                }
            }
        }
    }

    let mut input = Bytes { rest: data };
    let (a, b) = (input.u8(), input.u8());
    let limits = Limits {
        max_bulk: usize::from(a & 63),
        max_elements: usize::from(b & 31),
        max_depth: usize::from(a >> 6),
    };
    let mut rest = input.rest;
    while let Parse::Done(v, used) = parse(rest, &limits) {
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        let own = &rest[..used];
        assert_eq!(parse(own, &limits), Parse::Done(v.clone(), used));
        assert!(
            matches!(parse_reply(own, &limits), Parsed::Value(_, n) if n == used),
            "parse_reply disagrees on {own:?}"
        );
        // Bounded so that one input stays cheap: prefixes cost used^2.
        if used <= 256 {
            for cut in 0..used {
                assert_eq!(parse(&own[..cut], &limits), Parse::Incomplete, "cut {cut}");
            }
        }
        let mut canon = Vec::new();
        reencode(&v, &mut canon);
        // Canonical lengths are never longer, so the same limits hold.
        assert!(canon.len() <= used);
        assert_eq!(parse(&canon, &limits), Parse::Done(v.clone(), canon.len()));
        if let Some(items) = v.as_array() {
            let args: Option<Vec<&[u8]>> = items
                .iter()
                .map(|i| match i {
                    Value::Bulk(b) => Some(b.as_slice()),
                    _ => None,
                })
                .collect();
            if let Some(args) = args {
                let mut cmd = Vec::new();
                encode(&mut cmd, &args);
                assert_eq!(cmd, canon);
            }
        }
        rest = &rest[used..];
    }

    let mut rest = input.rest;
    while let Parsed::Value(reply, used) = parse_reply(rest, &limits) {
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        let own = &rest[..used];
        assert_eq!(parse_reply(own, &limits), Parsed::Value(reply, used));
        if used <= 256 {
            for cut in 0..used {
                assert_eq!(
                    parse_reply(&own[..cut], &limits),
                    Parsed::Incomplete,
                    "cut {cut}"
                );
            }
        }
        rest = &rest[used..];
    }
}
