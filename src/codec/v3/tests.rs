use super::*;
use crate::codec::{decode, Decoded, ErrorCode};

fn payload_of(frame: &[u8]) -> (u16, &[u8]) {
    match decode(frame, 1 << 20) {
        Decoded::Frame(f, n) => {
            assert_eq!(n, frame.len());
            (f.code, f.payload)
        }
        _ => panic!("not one whole frame"),
    }
}

fn c(m: &ClientV3<'_>) {
    let mut out = Vec::new();
    m.encode(&mut out);
    let (code, p) = payload_of(&out);
    assert_eq!(code, m.code());
    assert_eq!(&ClientV3::decode(code, p).unwrap(), m);
}

fn s(m: &ServerV3<'_>) {
    let mut out = Vec::new();
    m.encode(&mut out);
    let (code, p) = payload_of(&out);
    assert_eq!(code, m.code());
    assert_eq!(&ServerV3::decode(code, p).unwrap(), m);
}

fn say_payload(room: &[u8], text: &[u8], msg_id: u64, trailing: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(room.len() as u16).to_be_bytes());
    p.extend_from_slice(room);
    p.extend_from_slice(&(text.len() as u16).to_be_bytes());
    p.extend_from_slice(text);
    p.extend_from_slice(&msg_id.to_be_bytes());
    p.extend_from_slice(trailing);
    p
}

#[test]
fn every_layout_round_trips() {
    c(&ClientV3::Hello {
        version: 3,
        nick: "",
        token: Secret("a.b.c"),
        session_key: Secret("0123456789abcdef0123456789abcdef"),
    });
    c(&ClientV3::Say {
        room: "#r",
        text: "hi",
        msg_id: u64::MAX,
    });
    c(&ClientV3::Refresh { token: Secret("t") });
    c(&ClientV3::Topic {
        room: "#r",
        topic: "",
    });
    c(&ClientV3::Kick {
        room: "#r",
        nick: "~bob",
        reason: "x",
    });
    c(&ClientV3::Ban {
        room: "*",
        mask: "ip:10.0.0.0/8",
        duration_s: 60,
        reason: "",
    });
    c(&ClientV3::Unban {
        room: "#r",
        mask: "nick:b*",
    });
    c(&ClientV3::ListBans { room: "#r" });
    c(&ClientV3::Mode {
        room: "#r",
        set: 3,
        clear: 4,
    });
    c(&ClientV3::Invite {
        room: "#r",
        nick: "bob",
    });
    c(&ClientV3::Op {
        room: "#r",
        nick: "bob",
        grant: 1,
    });
    c(&ClientV3::Kill {
        nick: "bob",
        reason: "spam",
    });
    s(&ServerV3::Welcome {
        version: 3,
        nick: "alice",
        server: "n1",
        heartbeat_ms: 30_000,
        max_payload: 65_536,
        account: "alice@example.org",
        role: role::ACCOUNT,
        session_key: Secret("0123456789abcdef0123456789abcdef"),
        token_exp_ms: 1_800_000_000_000,
    });
    s(&ServerV3::say_refused(7, "#r", ErrorCode::RateLimited));
    s(&ServerV3::SayResult {
        msg_id: 7,
        room: "#r",
        epoch: 2,
        seq: 9,
        error: 0,
    });
    s(&ServerV3::Refreshed { token_exp_ms: 5 });
    s(&ServerV3::RoomInfo {
        room: "#r",
        topic: "t",
        topic_by: "alice",
        topic_time_ms: 1,
        modes: modes::ALL,
    });
    s(&ServerV3::WhisperSent {
        to: "bob",
        text: "psst",
    });
    s(&ServerV3::Moderation {
        room: "*",
        actor: "root",
        action: action::KILL,
        target: "bob",
        reason: "",
        until_ms: 0,
    });
    s(&ServerV3::BanList {
        room: "#r",
        bans: vec![],
    });
    s(&ServerV3::BanList {
        room: "#r",
        bans: vec![
            BanEntry {
                mask: "account:x",
                by: "a",
                reason: "r",
                until_ms: 0,
            },
            BanEntry {
                mask: "nick:?b*",
                by: "a",
                reason: "",
                until_ms: 9,
            },
        ],
    });
    s(&ServerV3::Invited {
        room: "#r",
        by: "alice",
    });
}

#[test]
fn say_v3_malformed_gets_a_result_when_its_msg_id_reads() {
    let ok = say_payload(b"#r", b"hi", 5, b"");
    assert_eq!(
        decode_say(&ok),
        Ok(SayV3::Say {
            room: "#r",
            text: "hi",
            msg_id: 5
        })
    );
    // Empty text is the chat's check (MALFORMED after BAD_ROOM).
    assert!(matches!(
        decode_say(&say_payload(b"#r", b"", 5, b"")),
        Ok(SayV3::Say { text: "", .. })
    ));
    for (p, room) in [
        (say_payload(b"#r", b"hi", 5, b"x"), "#r"),
        (say_payload(b"#r", b"\xff", 5, b""), "#r"),
        (say_payload(b"#\xff", b"hi", 5, b""), ""),
    ] {
        assert_eq!(decode_say(&p), Ok(SayV3::Malformed { room, msg_id: 5 }));
    }
    assert_eq!(
        decode_say(&say_payload(b"#r", b"hi", 0, b"")),
        Ok(SayV3::Malformed {
            room: "#r",
            msg_id: 0
        })
    );
    // No msg_id to answer: ERROR(MALFORMED).
    assert_eq!(decode_say(&ok[..ok.len() - 1]), Err(DecodeError::Malformed));
    assert_eq!(decode_say(&[0, 9, b'#']), Err(DecodeError::Malformed));
    assert_eq!(decode_say(&[]), Err(DecodeError::Malformed));
}

#[test]
fn the_byte_layouts_of_the_docs() {
    // docs/PROTOCOL.md "Version 3": SAY_RESULT accepted.
    let mut out = Vec::new();
    ServerV3::SayResult {
        msg_id: 1,
        room: "#a",
        epoch: 2,
        seq: 3,
        error: 0,
    }
    .encode(&mut out);
    assert_eq!(
        out,
        [
            0, 216, 0, 0, 0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, b'#', b'a', 0, 0, 0, 0, 0, 0,
            0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0
        ]
    );
    let hex = |h: &str| -> Vec<u8> {
        h.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    let mut out = Vec::new();
    ClientV3::Hello {
        version: 3,
        nick: "alice",
        token: Secret("a.b.c"),
        session_key: Secret(""),
    }
    .encode(&mut out);
    assert_eq!(
        out,
        hex("00 64 00 00 00 00 00 11 03 00 05 61 6c 69 63 65 00 05 61 2e 62 2e 63 00 00")
    );
    out.clear();
    ClientV3::Say {
        room: "#rust",
        text: "hi",
        msg_id: 1,
    }
    .encode(&mut out);
    assert_eq!(
        out,
        hex("00 67 00 00 00 00 00 13 00 05 23 72 75 73 74 00 02 68 69 00 00 00 00 00 00 00 01")
    );
    out.clear();
    ServerV3::SayResult {
        msg_id: 1,
        room: "#rust",
        epoch: 0x1d,
        seq: 7,
        error: 0,
    }
    .encode(&mut out);
    assert_eq!(
        out,
        hex(
            "00 d8 00 00 00 00 00 21 00 00 00 00 00 00 00 01 00 05 23 72 75 73 74 \
             00 00 00 00 00 00 00 1d 00 00 00 00 00 00 00 07 00 00"
        )
    );
    out.clear();
    ServerV3::Welcome {
        version: 3,
        nick: "alice",
        server: "n1",
        heartbeat_ms: 30_000,
        max_payload: 65_536,
        account: "alice",
        role: role::ACCOUNT,
        session_key: Secret("0123456789abcdef0123456789abcdef"),
        token_exp_ms: 1_800_000_000_000,
    }
    .encode(&mut out);
    assert_eq!(out.len(), 8 + 70);
    assert_eq!(hello_version(&[3, 0, 0]), Some(3));
    assert!(is_version_3_code(113) && is_version_3_code(122));
    assert!(!is_version_3_code(112) && !is_version_3_code(123));
}

#[test]
fn codes_outside_version_3_are_unknown_here() {
    assert_eq!(ClientV3::decode(101, &[]), Err(DecodeError::UnknownCode));
    assert_eq!(ServerV3::decode(201, &[]), Err(DecodeError::UnknownCode));
    // A BAN_LIST count the payload cannot hold.
    let mut p = vec![0, 1, b'#', 0xff, 0xff];
    p.extend_from_slice(&[0; 14]);
    assert_eq!(
        ServerV3::decode(code::BAN_LIST, &p),
        Err(DecodeError::Malformed)
    );
}

#[test]
fn secrets_show_their_length_only() {
    let hello = ClientV3::Hello {
        version: 3,
        nick: "a",
        token: Secret("secret.token.here"),
        session_key: Secret("k"),
    };
    let shown = format!("{hello:?}");
    assert!(
        !shown.contains("secret") && shown.contains("<17 bytes>"),
        "{shown}"
    );
}
