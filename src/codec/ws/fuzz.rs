//! The fuzz target `ws_frames`'s check, shared with the corpus replay in
//! `cargo test`.

use std::io::{self, Write};

use super::*;

/// The fuzz target `ws_frames`'s check (also replayed from the committed
/// corpus by `cargo test`): panics on a bug, returns on anything else.
///
/// Input: a maximum message size, a chunk plan, then client bytes.
/// - The stream decoded in chunks with [`Decoder::feed`] and decoded whole
///   in place with [`Decoder::feed_in_place`] yield the same events, the
///   same payload bytes and the same error; no message passes the maximum;
///   nothing is decoded after an error or a close.
/// - The same bytes, as a server's pending output, written by a
///   [`WsWriter`] through a writer that takes a few bytes at a time, come
///   out as well-formed unmasked frames whose binary payloads are exactly
///   those bytes, with the queued pong and close where they belong.
#[doc(hidden)]
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let [m, plan_len, rest @ ..] = data else {
        return;
    };
    let max = 1 + usize::from(*m) * 8;
    let plan_len = usize::from(*plan_len % 16).min(rest.len());
    let (plan, stream) = rest.split_at(plan_len);

    // Chunked, copying.
    type Outcome = (Vec<Event>, Vec<u8>, Option<WsError>);
    let chunked: Outcome = {
        let mut dec = Decoder::new(max);
        let (mut events, mut out, mut err) = (Vec::new(), Vec::new(), None);
        let mut pos = 0;
        let mut step = 0;
        let mut msg_start = 0;
        'feed: while pos < stream.len() {
            let size = 1 + usize::from(plan.get(step % plan.len().max(1)).copied().unwrap_or(7));
            step += 1;
            let chunk = &stream[pos..(pos + size).min(stream.len())];
            pos += chunk.len();
            let mut at = 0;
            loop {
                match dec.feed(&chunk[at..], &mut out) {
                    Ok((n, Event::NeedMore)) => {
                        assert_eq!(at + n, chunk.len());
                        break;
                    }
                    Ok((n, ev)) => {
                        at += n;
                        if ev == Event::MessageEnd {
                            assert!(out.len() - msg_start <= max, "message past the maximum");
                            msg_start = out.len();
                        }
                        events.push(ev);
                        if matches!(ev, Event::Close { .. }) {
                            break 'feed;
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break 'feed;
                    }
                }
            }
            assert!(
                out.len() - msg_start <= max,
                "partial message past the maximum"
            );
        }
        (events, out, err)
    };

    // Whole, in place.
    let whole: Outcome = {
        let mut dec = Decoder::new(max);
        let mut buf = stream.to_vec();
        let (mut r, mut w) = (0, 0);
        let (mut events, mut err) = (Vec::new(), None);
        loop {
            match dec.feed_in_place(&mut buf, &mut r, stream.len(), &mut w) {
                Ok(Event::NeedMore) => break,
                Ok(ev) => {
                    events.push(ev);
                    if matches!(ev, Event::Close { .. }) {
                        break;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            assert!(w <= r);
        }
        buf.truncate(w);
        (events, buf, err)
    };
    assert_eq!(chunked, whole);

    // The writer.
    let mut wr = WsWriter::default();
    let mut sink = TrickleSink {
        taken: Vec::new(),
        plan,
        step: 0,
    };
    let mut rounds = 0;
    let split = stream.len() / 2;
    let mut second_half_added = false;
    let mut cur = &stream[..split];
    loop {
        let n = wr.write_to(cur, &mut sink).expect("a trickle never fails");
        cur = &cur[n..];
        rounds += 1;
        if rounds == 2 {
            wr.queue_pong(&stream[..stream.len().min(MAX_CONTROL)]);
        }
        if cur.is_empty() && !second_half_added {
            second_half_added = true;
            cur = &stream[split..];
        }
        if cur.is_empty() && !wr.has_pending() {
            break;
        }
        assert!(rounds < 100_000, "the writer makes no progress");
    }
    let mut out = sink.taken.as_slice();
    let mut data = Vec::new();
    let mut pongs = 0;
    while !out.is_empty() {
        let h = peek_frame(out).expect("a whole frame");
        assert!(h.fin && !h.masked);
        let end = h.header_len + h.payload_len as usize;
        let payload = &out[h.header_len..end];
        match h.opcode {
            opcode::BINARY => data.extend_from_slice(payload),
            opcode::PONG => pongs += 1,
            other => panic!("unexpected opcode {other}"),
        }
        out = &out[end..];
    }
    assert_eq!(data, stream);
    assert!(pongs <= 1);
}

/// A writer that takes what its plan says per call and sometimes blocks.
#[cfg(any(test, feature = "fuzzing"))]
struct TrickleSink<'a> {
    taken: Vec<u8>,
    plan: &'a [u8],
    step: usize,
}

#[cfg(any(test, feature = "fuzzing"))]
impl Write for TrickleSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let p = self
            .plan
            .get(self.step % self.plan.len().max(1))
            .copied()
            .unwrap_or(64);
        self.step += 1;
        if p % 5 == 0 && self.step % 2 == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(1 + usize::from(p));
        self.taken.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
