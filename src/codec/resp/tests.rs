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

fn reply_of(buf: &[u8], max_bulk: usize) -> Parsed<'_> {
    let limits = Limits {
        max_bulk,
        max_elements: READER_MAX_ELEMENTS,
        max_depth: READER_MAX_DEPTH,
    };
    parse_reply(buf, &limits)
}

fn message_push(payload: &[u8]) -> Vec<u8> {
    let mut v = b">3\r\n$7\r\nmessage\r\n$5\r\n#room\r\n".to_vec();
    v.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn a_message_push_is_incomplete_at_every_split() {
    let bytes = message_push(b"hello\r\nworld");
    for cut in 0..bytes.len() {
        assert_eq!(
            reply_of(&bytes[..cut], 1024),
            Parsed::Incomplete,
            "cut {cut}"
        );
    }
    assert_eq!(
        reply_of(&bytes, 1024),
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
        reply_of(&resp2, 1024),
        Parsed::Value(Reply::Message { .. }, _)
    ));
}

#[test]
fn replies_muxload_meets() {
    let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n+OK\r\n";
    let n = hello.len() - 5;
    assert_eq!(reply_of(hello, 64), Parsed::Value(Reply::Other, n));
    assert_eq!(
        reply_of(b">3\r\n$9\r\nsubscribe\r\n$5\r\n#room\r\n:1\r\n", 64),
        Parsed::Value(
            Reply::Kind {
                kind: b"subscribe",
                second: Some(b"#room")
            },
            34
        )
    );
    assert_eq!(
        reply_of(b":1000\r\n", 64),
        Parsed::Value(Reply::Integer(1000), 7)
    );
    assert_eq!(
        reply_of(b"+PONG\r\n", 64),
        Parsed::Value(Reply::Simple(b"PONG"), 7)
    );
    assert_eq!(
        reply_of(b"-ERR no\r\n", 64),
        Parsed::Value(Reply::Error(b"ERR no"), 9)
    );
    assert_eq!(reply_of(b"$-1\r\n", 64), Parsed::Value(Reply::Other, 5));
}

#[test]
fn reply_limits_and_garbage_are_refused_early() {
    assert!(matches!(reply_of(b"$100000\r\n", 64), Parsed::Invalid(_)));
    assert!(matches!(reply_of(b"?\r\n", 64), Parsed::Invalid(_)));
    assert!(matches!(reply_of(b"$3\r\nabcXY", 64), Parsed::Invalid(_)));
    assert!(matches!(reply_of(b":x\r\n", 64), Parsed::Invalid(_)));
    let deep = "*1\r\n".repeat(20);
    assert!(matches!(reply_of(deep.as_bytes(), 64), Parsed::Invalid(_)));
}

#[test]
fn commands_and_the_reader() {
    let mut out = Vec::new();
    encode(&mut out, &[b"PUBLISH", b"#r", b"hi"]);
    assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\n#r\r\n$2\r\nhi\r\n");
    // Two pushes split across reads, with the tail parked between them.
    let mut stream = message_push(b"one");
    stream.extend_from_slice(&message_push(b"two"));
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
