//! The `frame_decode` fuzz target: the frame codec against the clients'
//! reassembly buffer.

use muxchat::codec::{decode, Decoded, FrameError, FrameReader, Header, HEADER_LEN};

use super::Bytes;

/// What cutting a stream into frames yields, owned so two cutters compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    Frame {
        code: u16,
        flags: u16,
        payload: Vec<u8>,
    },
    TooLarge(Header),
}

/// `decode` (the daemon's codec, one whole buffer) against `FrameReader`
/// (the clients' reassembly buffer) fed the same stream in arbitrary
/// chunks, by `extend` or by `read_from`: the same frames, the same
/// TooLarge error, each reported in the very step its last needed byte
/// arrived (a frame as soon as it is whole, TooLarge as soon as the header
/// is), and the same bytes left over.
///
/// Input: a maximum payload selector, a chunk plan, then the stream.
pub fn check(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let max_payload = match sel % 4 {
        0 => u32::from(sel / 4), // 0..=63: TooLarge is common
        1 => 1024,
        2 => muxchat::codec::frame::DEFAULT_MAX_PAYLOAD,
        _ => u32::MAX, // nothing is too large; huge lengths stay Incomplete
    };
    let plan_len = usize::from(input.u8() % 16) + 1;
    // Each plan byte: low 7 bits the chunk size - 1, the high bit picks
    // read_from over extend. The plan repeats until the stream is fed.
    let plan = input.take(plan_len).to_vec();
    let stream = input.rest;

    // The reference: decode over the whole stream, remembering where each
    // result's last needed byte lies.
    let mut want: Vec<(Cut, usize)> = Vec::new();
    let mut off = 0;
    let leftover = loop {
        let rest = &stream[off..];
        match decode(rest, max_payload) {
            Decoded::Frame(f, used) => {
                let h = Header::parse(rest).expect("a frame has a header");
                assert_eq!(used, HEADER_LEN + f.payload.len());
                assert_eq!(h.length as usize, f.payload.len());
                assert!(h.length <= max_payload);
                assert_eq!((h.code, h.flags), (f.code, f.flags));
                assert_eq!(f.payload, &rest[HEADER_LEN..used]);
                off += used;
                want.push((
                    Cut::Frame {
                        code: f.code,
                        flags: f.flags,
                        payload: f.payload.to_vec(),
                    },
                    off,
                ));
            }
            Decoded::TooLarge(h) => {
                assert!(h.length > max_payload);
                assert_eq!(Header::parse(rest), Some(h));
                want.push((Cut::TooLarge(h), off + HEADER_LEN));
                break None;
            }
            Decoded::Incomplete(need) => {
                check_incomplete(rest, need, max_payload);
                break Some(rest.len());
            }
        }
    };

    // The reader, fed chunk by chunk; `fed` counts bytes handed over.
    let mut reader = FrameReader::new(max_payload);
    // Each result with the bytes fed before and after the step that gave it.
    let mut got: Vec<(Cut, usize, usize)> = Vec::new();
    let mut fed = 0;
    let mut failed = false;
    let mut step = 0;
    while fed < stream.len() && !failed {
        let p = plan[step % plan.len()];
        step += 1;
        let n = (usize::from(p & 0x7f) + 1).min(stream.len() - fed);
        let chunk = &stream[fed..fed + n];
        if p & 0x80 != 0 {
            let mut src = chunk;
            let read = reader.read_from(&mut src).expect("a slice never fails");
            assert_eq!(read, n, "read_from leaves room for a whole small read");
        } else {
            reader.extend(chunk);
        }
        let before = fed;
        fed += n;
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => got.push((
                    Cut::Frame {
                        code: f.code,
                        flags: f.flags,
                        payload: f.payload.to_vec(),
                    },
                    before,
                    fed,
                )),
                Ok(None) => break,
                Err(FrameError::TooLarge(h)) => {
                    got.push((Cut::TooLarge(h), before, fed));
                    failed = true;
                    break;
                }
            }
        }
    }

    assert_eq!(got.len(), want.len(), "frame counts differ");
    for ((g, before, after), (w, end)) in got.iter().zip(&want) {
        assert_eq!(g, w);
        // Reported in the very step that delivered its last needed byte.
        assert!(
            before < end && end <= after,
            "{g:?} needs {end} bytes, reported after {before}..{after}"
        );
    }
    if let Some(left) = leftover {
        assert_eq!(reader.buffered(), left, "bytes left over differ");
    }
}

/// `Incomplete(need)` is exact: with `need - 1` more bytes it is still
/// incomplete, and once the header is whole, `need` more make the frame.
fn check_incomplete(rest: &[u8], need: usize, max_payload: u32) {
    assert!(need > 0);
    // A declared length near u32::MAX asks for gigabytes: only check
    // what can be built cheaply.
    if need > 1 << 20 {
        assert!(
            rest.len() >= HEADER_LEN,
            "a missing header needs <= 8 bytes"
        );
        return;
    }
    let mut more = rest.to_vec();
    more.resize(rest.len() + need - 1, 0);
    assert!(matches!(decode(&more, max_payload), Decoded::Incomplete(1)));
    if rest.len() >= HEADER_LEN {
        more.push(0);
        match decode(&more, max_payload) {
            Decoded::Frame(_, used) => assert_eq!(used, more.len()),
            other => panic!("{need} more bytes should complete the frame: {other:?}"),
        }
    } else {
        assert_eq!(need, HEADER_LEN - rest.len());
    }
}
