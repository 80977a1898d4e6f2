//! The `message_decode` fuzz target: every message both ways, decoded and
//! re-encoded.

use muxchat::codec::{
    code, peek_message, ClientMessage, DecodeError, ErrorCode, Header, ServerMessage, HEADER_LEN,
};

use super::Bytes;

/// Every client-to-server code.
pub const CLIENT_CODES: &[u16] = &[
    code::HELLO,
    code::JOIN,
    code::LEAVE,
    code::SAY,
    code::WHISPER,
    code::NICK,
    code::LIST_ROOMS,
    code::LIST_USERS,
    code::PING,
    code::PONG,
    code::QUIT,
    code::STATS,
    code::HISTORY,
];

/// Every server-to-client code.
pub const SERVER_CODES: &[u16] = &[
    code::ERROR,
    code::WELCOME,
    code::JOINED,
    code::LEFT,
    code::MESSAGE,
    code::WHISPER_FROM,
    code::NICK_CHANGED,
    code::ROOM_LIST,
    code::USER_LIST,
    code::SERVER_PING,
    code::SERVER_PONG,
    code::SHUTDOWN,
    code::BYE,
    code::STATS_REPLY,
    code::ROOM_STATE,
    code::HISTORY_MESSAGE,
    code::HISTORY_END,
];

/// One payload decoded as a client message and as a server message: what
/// either decoder accepts re-encodes to the very same frame, decodes again
/// to the same value, and reports its own code; a code outside a
/// direction's table is UnknownCode there whatever the payload; the load
/// generator's `peek_message` agrees with the full MESSAGE decode.
///
/// Input: a code selector (below 0x80: an index into the known codes;
/// otherwise the next two bytes are the raw code), then the payload.
pub fn check(data: &[u8]) {
    let mut input = Bytes { rest: data };
    let sel = input.u8();
    let known = CLIENT_CODES.len() + SERVER_CODES.len();
    let code = if sel < 0x80 {
        let i = usize::from(sel) % known;
        if i < CLIENT_CODES.len() {
            CLIENT_CODES[i]
        } else {
            SERVER_CODES[i - CLIENT_CODES.len()]
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

    match ClientMessage::decode(code, payload) {
        Ok(m) => {
            assert!(CLIENT_CODES.contains(&code));
            assert!(ClientMessage::is_known(code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(ClientMessage::decode(code, &out[HEADER_LEN..]), Ok(m));
        }
        Err(DecodeError::UnknownCode) => {
            assert!(!CLIENT_CODES.contains(&code));
            assert!(!ClientMessage::is_known(code));
        }
        Err(DecodeError::Malformed) => {
            assert!(CLIENT_CODES.contains(&code));
        }
    }

    let server = ServerMessage::decode(code, payload);
    match &server {
        Ok(m) => {
            assert!(SERVER_CODES.contains(&code));
            assert_eq!(m.code(), code);
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, frame, "{m:?} re-encodes differently");
            assert_eq!(
                ServerMessage::decode(code, &out[HEADER_LEN..]).as_ref(),
                Ok(m)
            );
            if let ServerMessage::Error { error, .. } = m {
                if let Some(e) = ErrorCode::from_u16(*error) {
                    assert_eq!(e as u16, *error);
                }
            }
        }
        Err(DecodeError::UnknownCode) => assert!(!SERVER_CODES.contains(&code)),
        Err(DecodeError::Malformed) => assert!(SERVER_CODES.contains(&code)),
    }

    // peek_message checks MESSAGE's layout but not its UTF-8: it accepts
    // a superset of what the full decode accepts, with the same fields.
    let peek = peek_message(payload);
    if code == code::MESSAGE {
        match (&server, &peek) {
            (Ok(ServerMessage::Message { seq, text, .. }), Ok((pseq, ptext))) => {
                assert_eq!((*seq, text.as_bytes()), (*pseq, *ptext));
            }
            (Ok(m), Err(e)) => panic!("peek_message refused {m:?}: {e:?}"),
            _ => {}
        }
    }
    if let Ok((seq, text)) = peek {
        // Whatever peek accepts is a MESSAGE layout whatever the code: the
        // full decode may only add a UTF-8 complaint.
        match ServerMessage::decode(code::MESSAGE, payload) {
            Ok(ServerMessage::Message {
                seq: s, text: t, ..
            }) => assert_eq!((s, t.as_bytes()), (seq, text)),
            Ok(other) => panic!("MESSAGE decoded as {other:?}"),
            Err(e) => assert_eq!(e, DecodeError::Malformed),
        }
    }
}
