//! The WebSocket door: RFC 6455 framing as a pure codec over bytes.
//!
//! After the HTTP upgrade (the daemon's HTTP door) a connection carries the
//! binary protocol inside WebSocket binary messages: each message from the
//! client holds one or more whole protocol frames, and so does each message
//! from the server. This module never sees a socket:
//!
//! - [`Decoder`] takes client bytes as they arrive (a WebSocket frame may be
//!   split across reads like any TCP data), checks every rule, and unmasks
//!   payload bytes straight into the caller's buffer, where the protocol
//!   layer cuts its own frames out as usual. It keeps only the frame header
//!   and a control frame's payload (at most 125 bytes), never a message.
//! - [`WsWriter`] wraps output at flush time: everything pending in a
//!   session's `OutBuf` (whole protocol frames, appended once by the
//!   fan-out) goes out as *one* binary message behind a 2-10 byte header,
//!   written with one `writev`. Server frames are not masked, so wrapping
//!   costs a few header bytes per session per flush: no copy and no
//!   re-encode per message.
//!
//! Why not tungstenite: its `WebSocket` owns the stream and its own write
//! buffer and takes one `Message` (an owned payload) per send, so fan-out to
//! N WebSocket members would copy or re-frame each message per member and
//! batching into one frame per flush would need a second buffer. Its
//! frame-level types would still leave us the flush state machine below.
//! The part of RFC 6455 a server needs is small; writing it here keeps the
//! one-buffer-per-session design and its bounds.
//!
//! Fatal cases, as docs/PROTOCOL.md requires (each is a [`WsError`] naming
//! the protocol error and the close code): a text message (MALFORMED,
//! 1003); a message longer than the maximum payload plus the protocol
//! header (FRAME_TOO_LARGE, 1009); an unmasked client frame, reserved bits
//! or opcodes, a bad control frame or fragmentation out of order
//! (MALFORMED, 1002). A protocol frame split across messages is the caller's
//! check at [`Event::MessageEnd`], since only the caller knows its frames.
//!
//! This file holds the shared types (opcodes, close codes, [`WsError`],
//! [`Event`]); `decoder` the client-to-server half ([`Decoder`],
//! [`FrameTracker`]), `writer` the server-to-client half ([`WsWriter`],
//! [`server_header`]), `client` the client's side ([`encode_client_frame`],
//! [`peek_frame`]) and `fuzz` the fuzz target's check.

mod client;
mod decoder;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod writer;

pub use self::client::{encode_client_frame, peek_frame, FrameHead};
pub use self::decoder::{Decoder, FrameTracker};
#[doc(hidden)]
#[cfg(any(test, feature = "fuzzing"))]
pub use self::fuzz::fuzz_check;
pub use self::writer::{close_payload, encode_server_frame, server_header, WsWriter};

use crate::codec::ErrorCode;

/// The largest server frame header: 2 bytes, then a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;
/// The largest control frame payload (RFC 6455 section 5.5).
pub const MAX_CONTROL: usize = 125;

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (refused here: the protocol is binary).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close status codes we send (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A data type we do not accept (text).
    pub const UNSUPPORTED: u16 = 1003;
    /// A policy violation (slow consumer, timeouts).
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// A fatal framing error: the ERROR to send (best effort), then a close
/// frame with `close`, then the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// The protocol error for the ERROR frame.
    pub error: ErrorCode,
    /// The WebSocket close code.
    pub close: u16,
    /// What was wrong, for the ERROR detail and the close reason.
    pub why: &'static str,
}

impl WsError {
    const fn protocol(why: &'static str) -> WsError {
        WsError {
            error: ErrorCode::Malformed,
            close: close_code::PROTOCOL,
            why,
        }
    }
}

/// What [`Decoder::feed`] stopped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The input is used up. Any payload bytes went to the caller's buffer.
    NeedMore,
    /// A binary message ended. Its bytes are all in the caller's buffer;
    /// after cutting out whole protocol frames, nothing may be left over
    /// (a protocol frame split across messages is fatal: MALFORMED, 1002).
    MessageEnd,
    /// A ping: answer with a pong carrying [`Decoder::control_payload`].
    Ping,
    /// A pong (unsolicited or not): nothing to do.
    Pong,
    /// The client closes: echo a close frame with this code (the client's
    /// own code, or 1000 when it gave none), then end the connection.
    Close {
        /// The status code to echo.
        code: u16,
    },
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    use super::decoder::unmask_into;
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn client(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_client_frame(op, fin, MASK, payload, &mut v);
        v
    }

    /// Feeds everything, collecting events and the data.
    fn run(dec: &mut Decoder, input: &[u8]) -> (Vec<Event>, Vec<u8>, Option<WsError>) {
        let (mut events, mut out, mut pos) = (Vec::new(), Vec::new(), 0);
        loop {
            match dec.feed(&input[pos..], &mut out) {
                Ok((n, Event::NeedMore)) => {
                    pos += n;
                    assert_eq!(pos, input.len());
                    return (events, out, None);
                }
                Ok((n, ev)) => {
                    pos += n;
                    events.push(ev);
                }
                Err(e) => return (events, out, Some(e)),
            }
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: a masked "Hello" (as text; here the same
        // bytes as binary).
        let mut input = vec![
            0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (ev, out, err) = run(&mut Decoder::new(100), &input);
        assert_eq!(
            (ev, out.as_slice(), err),
            (vec![Event::MessageEnd], &b"Hello"[..], None)
        );
        input[0] = 0x81;
        let (_, _, err) = run(&mut Decoder::new(100), &input);
        assert_eq!(err.unwrap().close, close_code::UNSUPPORTED);
    }

    #[test]
    fn split_at_every_offset() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let mut input = client(opcode::BINARY, false, &payload[..100]);
        input.extend(client(opcode::PING, true, b"hi"));
        input.extend(client(opcode::CONTINUATION, true, &payload[100..]));
        input.extend(client(opcode::BINARY, true, &[]));
        for cut in 0..=input.len() {
            let mut dec = Decoder::new(1000);
            let (mut ev, mut out, err) = run(&mut dec, &input[..cut]);
            assert!(err.is_none());
            let (ev2, out2, err) = run(&mut dec, &input[cut..]);
            assert!(err.is_none());
            ev.extend(ev2);
            out.extend(out2);
            assert_eq!(
                ev,
                [Event::Ping, Event::MessageEnd, Event::MessageEnd],
                "cut {cut}"
            );
            assert_eq!(out, payload, "cut {cut}");
        }
    }

    #[test]
    fn ping_payload_and_close_code() {
        let mut dec = Decoder::new(100);
        let mut out = Vec::new();
        let p = client(opcode::PING, true, b"abc");
        assert_eq!(dec.feed(&p, &mut out), Ok((p.len(), Event::Ping)));
        assert_eq!(dec.control_payload(), b"abc");
        let c = client(opcode::CLOSE, true, &close_payload(1001, "bye"));
        assert_eq!(
            dec.feed(&c, &mut out),
            Ok((c.len(), Event::Close { code: 1001 }))
        );
        // After a close, input is ignored.
        let more = client(opcode::BINARY, true, b"x");
        assert_eq!(dec.feed(&more, &mut out), Ok((more.len(), Event::NeedMore)));
        assert!(out.is_empty());
        let c = client(opcode::CLOSE, true, &[]);
        let (ev, _, _) = run(&mut Decoder::new(10), &c);
        assert_eq!(ev, [Event::Close { code: 1000 }]);
    }

    fn error_of(input: &[u8], max: usize) -> WsError {
        run(&mut Decoder::new(max), input).2.expect("an error")
    }

    #[test]
    fn violations() {
        let proto = |input: &[u8]| {
            let e = error_of(input, 100);
            assert_eq!(
                (e.error, e.close),
                (ErrorCode::Malformed, 1002),
                "{}",
                e.why
            );
        };
        // Unmasked.
        proto(&[0x82, 0x01, b'x']);
        // RSV1 set.
        let mut f = client(opcode::BINARY, true, b"x");
        f[0] |= 0x40;
        proto(&f);
        // Reserved opcodes.
        proto(&client(0x3, true, b"x"));
        proto(&client(0xB, true, b"x"));
        // Continuation with no message.
        proto(&client(opcode::CONTINUATION, true, b"x"));
        // A new message inside a fragmented one.
        let mut f = client(opcode::BINARY, false, b"x");
        f.extend(client(opcode::BINARY, true, b"y"));
        proto(&f);
        // Fragmented and oversized control frames.
        proto(&client(opcode::PING, false, b"x"));
        proto(&client(opcode::PING, true, &[0; 126]));
        // Bad close payloads.
        proto(&client(opcode::CLOSE, true, &[3]));
        proto(&client(opcode::CLOSE, true, &close_payload(1005, "")));
        proto(&client(opcode::CLOSE, true, &[0x03, 0xe8, 0xff]));
        // A 64-bit length with the top bit set.
        proto(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        // Text: 1003.
        let e = error_of(&client(opcode::TEXT, true, b"hi"), 100);
        assert_eq!((e.error, e.close), (ErrorCode::Malformed, 1003));
    }

    #[test]
    fn too_large_is_refused_on_the_declared_length() {
        let e = error_of(&client(opcode::BINARY, true, &[0; 101])[..8], 100);
        assert_eq!((e.error, e.close), (ErrorCode::FrameTooLarge, 1009));
        // Fragments count together.
        let mut f = client(opcode::BINARY, false, &[0; 60]);
        f.extend(client(opcode::CONTINUATION, true, &[0; 41]));
        let e = error_of(&f, 100);
        assert_eq!(e.close, 1009);
        let mut f = client(opcode::BINARY, false, &[0; 60]);
        f.extend(client(opcode::CONTINUATION, true, &[0; 40]));
        assert!(run(&mut Decoder::new(100), &f).2.is_none());
        // The declared length alone is enough: no payload needed.
        let e = error_of(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], 65544);
        assert_eq!(e.close, 1009);
    }

    #[test]
    fn server_headers() {
        let mut h = [0u8; MAX_SERVER_HEADER];
        assert_eq!(server_header(opcode::BINARY, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(server_header(opcode::BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(server_header(opcode::BINARY, 65536, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let f = peek_frame(&h[..10]).unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.header_len, f.payload_len),
            (true, 2, 10, 65536)
        );
        assert_eq!(peek_frame(&h[..9]), None);
    }

    /// A writer taking at most `chunk` bytes per call and blocking after
    /// `calls` calls.
    struct Trickle {
        taken: Vec<u8>,
        chunk: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let n = b.len().min(self.chunk);
            self.taken.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Splits a server byte stream into (opcode, payload) frames.
    fn frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(h) = peek_frame(buf) {
            assert!(!h.masked && h.fin);
            let end = h.header_len + h.payload_len as usize;
            v.push((h.opcode, buf[h.header_len..end].to_vec()));
            buf = &buf[end..];
        }
        assert!(buf.is_empty());
        v
    }

    #[test]
    fn writer_wraps_each_flush_in_one_message_across_partial_writes() {
        for chunk in [1, 3, 7, 100, 10_000] {
            let mut wr = WsWriter::default();
            let mut out = Trickle {
                taken: Vec::new(),
                chunk,
                calls: 0,
            };
            let mut pending: Vec<u8> = (0..200u8).collect();
            let mut sent = 0;
            // Flush with a few calls at a time; more output arrives
            // mid-message and a ping arrives too.
            for round in 0..2000 {
                out.calls = 2;
                let n = wr.write_to(&pending, &mut out).unwrap();
                pending.drain(..n);
                sent += n;
                if round == 1 {
                    pending.extend(200..=255u8);
                    wr.queue_pong(b"p");
                }
                if pending.is_empty() && !wr.has_pending() && round > 1 {
                    break;
                }
            }
            assert_eq!(sent, 256);
            let f = frames(&out.taken);
            let data: Vec<u8> = f
                .iter()
                .filter(|(op, _)| *op == opcode::BINARY)
                .flat_map(|(_, p)| p.clone())
                .collect();
            assert_eq!(data, (0..=255u8).collect::<Vec<_>>(), "chunk {chunk}");
            assert!(f.contains(&(opcode::PONG, b"p".to_vec())), "chunk {chunk}");
            // The first flush's bytes went out as one message.
            assert_eq!(f[0].0, opcode::BINARY);
            if chunk >= 202 {
                assert_eq!(f.len(), 3, "one message per flush and a pong");
            }
        }
    }

    #[test]
    fn close_goes_after_pending_and_ends_output() {
        let mut wr = WsWriter::default();
        let mut sink = Vec::new();
        wr.queue_close(close_code::PROTOCOL, "bad");
        assert!(wr.closing());
        let n = wr.write_to(b"ERRORFRAME", &mut sink).unwrap();
        assert_eq!(n, 10);
        assert!(wr.close_sent());
        // Anything after the close is dropped.
        assert_eq!(wr.write_to(b"more", &mut sink).unwrap(), 4);
        let f = frames(&sink);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], (opcode::BINARY, b"ERRORFRAME".to_vec()));
        assert_eq!(f[1].0, opcode::CLOSE);
        assert_eq!(&f[1].1[..2], &1002u16.to_be_bytes());
    }

    #[test]
    fn ping_flood_holds_one_pong() {
        let mut wr = WsWriter::default();
        for i in 0..1000u32 {
            wr.queue_pong(&i.to_be_bytes());
        }
        let mut sink = Vec::new();
        wr.write_to(&[], &mut sink).unwrap();
        assert_eq!(
            frames(&sink),
            [(opcode::PONG, 999u32.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn tracker_follows_frames_at_every_split() {
        let mut stream = Vec::new();
        for len in [0u32, 5, 300] {
            stream.extend_from_slice(&[0, 103, 0, 0]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        let boundaries = [8, 8 + 13, stream.len()];
        for cut in 0..=stream.len() {
            let mut tr = FrameTracker::default();
            tr.advance(&stream[..cut]);
            assert_eq!(
                tr.at_boundary(),
                cut == 0 || boundaries.contains(&cut),
                "cut {cut}"
            );
            tr.advance(&stream[cut..]);
            assert!(tr.at_boundary());
        }
    }

    #[test]
    fn in_place_matches_copying_decode() {
        let mut input = client(opcode::BINARY, false, b"hello ");
        input.extend(client(opcode::PING, true, b"p"));
        input.extend(client(opcode::CONTINUATION, true, &[9u8; 200]));
        let mut buf = input.clone();
        let (mut r, mut w) = (0, 0);
        let mut dec = Decoder::new(1000);
        let end = buf.len();
        assert_eq!(
            dec.feed_in_place(&mut buf, &mut r, end, &mut w),
            Ok(Event::Ping)
        );
        assert_eq!(
            dec.feed_in_place(&mut buf, &mut r, end, &mut w),
            Ok(Event::MessageEnd)
        );
        assert_eq!(r, end);
        let mut want = b"hello ".to_vec();
        want.extend([9u8; 200]);
        assert_eq!(&buf[..w], &want[..]);
    }

    #[test]
    fn fuzz_check_holds_on_pseudo_random_and_valid_streams() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..3000 {
            let len = (i % 300) as usize;
            let mut data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_check(&data);
            // A valid stream behind the config bytes, too.
            data.truncate(4);
            data.resize(4, 3);
            data[1] = 3;
            data.extend(client(opcode::BINARY, i % 2 == 0, &[1, 2, 3, 4, 5]));
            data.extend(client(opcode::PING, true, b"x"));
            data.extend(client(opcode::CONTINUATION, true, b"yz"));
            data.extend(client(opcode::CLOSE, true, &[3, 232]));
            fuzz_check(&data);
        }
    }

    #[test]
    fn unmask_matches_bytewise() {
        let data: Vec<u8> = (0..37).collect();
        for off in 0..4 {
            let mut out = vec![9];
            unmask_into(&mut out, &data, MASK, off);
            let want: Vec<u8> = std::iter::once(9)
                .chain(
                    data.iter()
                        .enumerate()
                        .map(|(i, b)| b ^ MASK[(i + off as usize) % 4]),
                )
                .collect();
            assert_eq!(out, want);
        }
    }
}
