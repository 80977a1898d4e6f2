//! [`ClientMessage`]: every frame a client sends, version 1 and 2, its
//! payload layout decoded (borrowing) and encoded (one whole frame).

use super::super::frame::{begin_frame, end_frame};
use super::{code, put_str, put_u16, put_u64, DecodeError, Fields};

/// A frame from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ClientMessage<'a> {
    Hello {
        version: u8,
        nick: &'a str,
    },
    Join {
        room: &'a str,
    },
    Leave {
        room: &'a str,
    },
    Say {
        room: &'a str,
        text: &'a str,
    },
    Whisper {
        nick: &'a str,
        text: &'a str,
    },
    Nick {
        nick: &'a str,
    },
    ListRooms,
    ListUsers {
        room: &'a str,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Quit {
        reason: &'a str,
    },
    Stats,
    /// Version 2. `epoch` 0 asks for the newest held messages (what a
    /// client shows on joining); otherwise the messages after `after_seq`
    /// of that epoch. `limit` 0 means the server's maximum.
    History {
        room: &'a str,
        epoch: u64,
        after_seq: u64,
        limit: u16,
    },
}

impl<'a> ClientMessage<'a> {
    /// Whether `code` is a client-to-server message of any version
    /// (HISTORY included: a version-1 session that sends it gets
    /// UNKNOWN_CODE from the server, a decision the codec leaves to it).
    pub fn is_known(code: u16) -> bool {
        (code::HELLO..=code::HISTORY).contains(&code)
    }

    /// The message's wire code.
    pub fn code(&self) -> u16 {
        match self {
            ClientMessage::Hello { .. } => code::HELLO,
            ClientMessage::Join { .. } => code::JOIN,
            ClientMessage::Leave { .. } => code::LEAVE,
            ClientMessage::Say { .. } => code::SAY,
            ClientMessage::Whisper { .. } => code::WHISPER,
            ClientMessage::Nick { .. } => code::NICK,
            ClientMessage::ListRooms => code::LIST_ROOMS,
            ClientMessage::ListUsers { .. } => code::LIST_USERS,
            ClientMessage::Ping { .. } => code::PING,
            ClientMessage::Pong { .. } => code::PONG,
            ClientMessage::Quit { .. } => code::QUIT,
            ClientMessage::Stats => code::STATS,
            ClientMessage::History { .. } => code::HISTORY,
        }
    }

    /// Decodes a payload received with `code`.
    pub fn decode(code: u16, payload: &'a [u8]) -> Result<ClientMessage<'a>, DecodeError> {
        let mut f = Fields { rest: payload };
        let msg = match code {
            code::HELLO => ClientMessage::Hello {
                version: f.u8()?,
                nick: f.str()?,
            },
            code::JOIN => ClientMessage::Join { room: f.str()? },
            code::LEAVE => ClientMessage::Leave { room: f.str()? },
            code::SAY => ClientMessage::Say {
                room: f.str()?,
                text: f.str()?,
            },
            code::WHISPER => ClientMessage::Whisper {
                nick: f.str()?,
                text: f.str()?,
            },
            code::NICK => ClientMessage::Nick { nick: f.str()? },
            code::LIST_ROOMS => ClientMessage::ListRooms,
            code::LIST_USERS => ClientMessage::ListUsers { room: f.str()? },
            code::PING => ClientMessage::Ping { token: f.u64()? },
            code::PONG => ClientMessage::Pong { token: f.u64()? },
            code::QUIT => ClientMessage::Quit { reason: f.str()? },
            code::STATS => ClientMessage::Stats,
            code::HISTORY => ClientMessage::History {
                room: f.str()?,
                epoch: f.u64()?,
                after_seq: f.u64()?,
                limit: f.u16()?,
            },
            _ => return Err(DecodeError::UnknownCode),
        };
        f.end(msg)
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.code());
        match *self {
            ClientMessage::Hello { version, nick } => {
                out.push(version);
                put_str(out, nick);
            }
            ClientMessage::Join { room }
            | ClientMessage::Leave { room }
            | ClientMessage::ListUsers { room } => put_str(out, room),
            ClientMessage::Say { room: a, text: b }
            | ClientMessage::Whisper { nick: a, text: b } => {
                put_str(out, a);
                put_str(out, b);
            }
            ClientMessage::Nick { nick } => put_str(out, nick),
            ClientMessage::ListRooms | ClientMessage::Stats => {}
            ClientMessage::Ping { token } | ClientMessage::Pong { token } => put_u64(out, token),
            ClientMessage::Quit { reason } => put_str(out, reason),
            ClientMessage::History {
                room,
                epoch,
                after_seq,
                limit,
            } => {
                put_str(out, room);
                put_u64(out, epoch);
                put_u64(out, after_seq);
                put_u16(out, limit);
            }
        }
        end_frame(out, start);
    }
}
