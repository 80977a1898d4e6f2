//! The `v3_payloads` fuzz target: protocol version 3's layouts both ways.
//!
//! Input: a code selector (below 0x80: an index into the version-3 codes;
//! otherwise the next two bytes are the raw code), then the payload.
//! Checks: whatever `ClientV3` or `ServerV3` accepts re-encodes to the very
//! same frame and decodes again to the same value; UnknownCode exactly for
//! codes outside a direction's table; `decode_say` agrees with the strict
//! SAY decode (a strict SAY with a non-zero msg_id is `Say` with the same
//! fields; anything `decode_say` refuses the strict decode refuses too),
//! and a `Malformed` outcome's room is a prefix-free copy of the payload's
//! room or empty.

use muxchat::codec::v3::{self, decode_say, ClientV3, SayV3, ServerV3};
use muxchat::codec::{DecodeError, Header, HEADER_LEN};

use super::Bytes;

pub fn check(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let known = v3::CLIENT_CODES.len() + v3::SERVER_CODES.len();
    let code = if sel < 0x80 {
        let i = usize::from(sel) % known;
        if i < v3::CLIENT_CODES.len() {
            v3::CLIENT_CODES[i]
        } else {
            v3::SERVER_CODES[i - v3::CLIENT_CODES.len()]
        }
    } else {
        u16::from_be_bytes([input.u8(), input.u8()])
    };
    let payload = input.rest;
    let mut frame = Header {
        code,
        flags: 0,
        length: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    frame.extend_from_slice(payload);

    let client = ClientV3::decode(code, payload);
    match &client {
        Ok(m) => {
            assert!(v3::CLIENT_CODES.contains(&code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(ClientV3::decode(code, &out[HEADER_LEN..]).as_ref(), Ok(m));
        }
        Err(DecodeError::UnknownCode) => assert!(!v3::CLIENT_CODES.contains(&code)),
        Err(DecodeError::Malformed) => assert!(v3::CLIENT_CODES.contains(&code)),
    }

    match ServerV3::decode(code, payload) {
        Ok(m) => {
            assert!(v3::SERVER_CODES.contains(&code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(ServerV3::decode(code, &out[HEADER_LEN..]), Ok(m));
        }
        Err(DecodeError::UnknownCode) => assert!(!v3::SERVER_CODES.contains(&code)),
        Err(DecodeError::Malformed) => assert!(v3::SERVER_CODES.contains(&code)),
    }

    // The SAY rule, on every payload whatever the code.
    let strict = ClientV3::decode(v3::code::SAY, payload);
    match (decode_say(payload), strict) {
        (
            Ok(SayV3::Say { room, text, msg_id }),
            Ok(ClientV3::Say {
                room: r,
                text: t,
                msg_id: m,
            }),
        ) => {
            assert_eq!((room, text, msg_id), (r, t, m));
            assert_ne!(msg_id, 0);
        }
        (Ok(SayV3::Say { .. }), other) => panic!("decode_say accepted what SAY refuses: {other:?}"),
        (Ok(SayV3::Malformed { room, msg_id }), strict) => {
            if let Ok(ClientV3::Say {
                msg_id: m, room: r, ..
            }) = strict
            {
                // Strictly well formed: only msg_id 0 makes it malformed.
                assert_eq!((m, msg_id, r), (0, 0, room));
            }
            let stated = u16::from_be_bytes([payload[0], payload[1]]) as usize;
            assert!(room.is_empty() || room.as_bytes() == &payload[2..2 + stated]);
        }
        (Err(DecodeError::Malformed), strict) => assert!(strict.is_err()),
        (Err(DecodeError::UnknownCode), _) => panic!("decode_say has no code to refuse"),
    }
}
