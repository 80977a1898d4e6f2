//! [`ServerMessage`]: every frame the server sends, version 1 and 2, its
//! payload layout decoded (borrowing) and encoded (one whole frame); and
//! [`peek_message`], the load generator's unvalidated MESSAGE reader.

use super::super::frame::{begin_frame, end_frame};
use super::{code, put_str, put_u16, put_u32, put_u64, DecodeError, ErrorCode, Fields};

/// The `seq` and text of a MESSAGE payload, for a receiver that handles
/// millions of them a second and needs nothing else (the load generator).
///
/// The layout is checked exactly as [`ServerMessage::decode`] checks it
/// (every length, no trailing bytes), but no field's UTF-8 is validated and
/// the text comes back as bytes: validating room, nick and text of every
/// message was a third of the load generator's time. Anything that shows
/// text to a person must use [`ServerMessage::decode`].
pub fn peek_message(payload: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut f = Fields { rest: payload };
    f.str_bytes()?;
    let seq = f.u64()?;
    f.str_bytes()?;
    let text = f.str_bytes()?;
    f.end((seq, text))
}

/// A frame from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ServerMessage<'a> {
    /// `error` is kept as the raw wire value so that a client can show an
    /// error code newer than itself; see [`ErrorCode::from_u16`].
    Error {
        error: u16,
        request: u16,
        detail: &'a str,
    },
    Welcome {
        version: u8,
        nick: &'a str,
        server: &'a str,
        heartbeat_ms: u32,
        max_payload: u32,
    },
    Joined {
        room: &'a str,
        nick: &'a str,
    },
    Left {
        room: &'a str,
        nick: &'a str,
        reason: &'a str,
    },
    Message {
        room: &'a str,
        seq: u64,
        from: &'a str,
        text: &'a str,
    },
    WhisperFrom {
        from: &'a str,
        text: &'a str,
    },
    NickChanged {
        old: &'a str,
        new: &'a str,
    },
    RoomList(Vec<(&'a str, u32)>),
    UserList {
        room: &'a str,
        nicks: Vec<&'a str>,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Shutdown {
        grace_ms: u32,
        reason: &'a str,
    },
    Bye {
        reason: &'a str,
    },
    StatsReply(Vec<(&'a str, u64)>),
    /// Version 2: sent right after the session's own JOINED, before any
    /// MESSAGE of the room. `last_seq` and `first_held` are 0 when there is
    /// none.
    RoomState {
        room: &'a str,
        epoch: u64,
        last_seq: u64,
        first_held: u64,
    },
    /// Version 2: one held message of a HISTORY reply. `time_ms` is the
    /// server's wall clock (ms since the Unix epoch) when it took the SAY.
    HistoryMessage {
        room: &'a str,
        seq: u64,
        time_ms: u64,
        from: &'a str,
        text: &'a str,
    },
    /// Version 2: closes every HISTORY reply. `status` is a set of
    /// `history_status` bits.
    HistoryEnd {
        room: &'a str,
        epoch: u64,
        newest: u64,
        status: u8,
    },
}

impl<'a> ServerMessage<'a> {
    /// The message's wire code.
    pub fn code(&self) -> u16 {
        match self {
            ServerMessage::Error { .. } => code::ERROR,
            ServerMessage::Welcome { .. } => code::WELCOME,
            ServerMessage::Joined { .. } => code::JOINED,
            ServerMessage::Left { .. } => code::LEFT,
            ServerMessage::Message { .. } => code::MESSAGE,
            ServerMessage::WhisperFrom { .. } => code::WHISPER_FROM,
            ServerMessage::NickChanged { .. } => code::NICK_CHANGED,
            ServerMessage::RoomList(_) => code::ROOM_LIST,
            ServerMessage::UserList { .. } => code::USER_LIST,
            ServerMessage::Ping { .. } => code::SERVER_PING,
            ServerMessage::Pong { .. } => code::SERVER_PONG,
            ServerMessage::Shutdown { .. } => code::SHUTDOWN,
            ServerMessage::Bye { .. } => code::BYE,
            ServerMessage::StatsReply(_) => code::STATS_REPLY,
            ServerMessage::RoomState { .. } => code::ROOM_STATE,
            ServerMessage::HistoryMessage { .. } => code::HISTORY_MESSAGE,
            ServerMessage::HistoryEnd { .. } => code::HISTORY_END,
        }
    }

    /// An ERROR frame's message for a known code.
    pub fn error(error: ErrorCode, request: u16, detail: &'a str) -> ServerMessage<'a> {
        ServerMessage::Error {
            error: error as u16,
            request,
            detail,
        }
    }

    /// Decodes a payload received with `code`.
    pub fn decode(code: u16, payload: &'a [u8]) -> Result<ServerMessage<'a>, DecodeError> {
        let mut f = Fields { rest: payload };
        let msg = match code {
            code::ERROR => ServerMessage::Error {
                error: f.u16()?,
                request: f.u16()?,
                detail: f.str()?,
            },
            code::WELCOME => ServerMessage::Welcome {
                version: f.u8()?,
                nick: f.str()?,
                server: f.str()?,
                heartbeat_ms: f.u32()?,
                max_payload: f.u32()?,
            },
            code::JOINED => ServerMessage::Joined {
                room: f.str()?,
                nick: f.str()?,
            },
            code::LEFT => ServerMessage::Left {
                room: f.str()?,
                nick: f.str()?,
                reason: f.str()?,
            },
            code::MESSAGE => ServerMessage::Message {
                room: f.str()?,
                seq: f.u64()?,
                from: f.str()?,
                text: f.str()?,
            },
            code::WHISPER_FROM => ServerMessage::WhisperFrom {
                from: f.str()?,
                text: f.str()?,
            },
            code::NICK_CHANGED => ServerMessage::NickChanged {
                old: f.str()?,
                new: f.str()?,
            },
            code::ROOM_LIST => {
                let count = f.u16()? as usize;
                // Each entry is at least 6 bytes: a count cannot make us
                // reserve more than the payload could hold.
                let mut rooms = Vec::with_capacity(count.min(f.rest.len() / 6));
                for _ in 0..count {
                    rooms.push((f.str()?, f.u32()?));
                }
                ServerMessage::RoomList(rooms)
            }
            code::USER_LIST => {
                let room = f.str()?;
                let count = f.u16()? as usize;
                let mut nicks = Vec::with_capacity(count.min(f.rest.len() / 2));
                for _ in 0..count {
                    nicks.push(f.str()?);
                }
                ServerMessage::UserList { room, nicks }
            }
            code::SERVER_PING => ServerMessage::Ping { token: f.u64()? },
            code::SERVER_PONG => ServerMessage::Pong { token: f.u64()? },
            code::SHUTDOWN => ServerMessage::Shutdown {
                grace_ms: f.u32()?,
                reason: f.str()?,
            },
            code::BYE => ServerMessage::Bye { reason: f.str()? },
            code::STATS_REPLY => {
                let count = f.u16()? as usize;
                let mut stats = Vec::with_capacity(count.min(f.rest.len() / 10));
                for _ in 0..count {
                    stats.push((f.str()?, f.u64()?));
                }
                ServerMessage::StatsReply(stats)
            }
            code::ROOM_STATE => ServerMessage::RoomState {
                room: f.str()?,
                epoch: f.u64()?,
                last_seq: f.u64()?,
                first_held: f.u64()?,
            },
            code::HISTORY_MESSAGE => ServerMessage::HistoryMessage {
                room: f.str()?,
                seq: f.u64()?,
                time_ms: f.u64()?,
                from: f.str()?,
                text: f.str()?,
            },
            code::HISTORY_END => ServerMessage::HistoryEnd {
                room: f.str()?,
                epoch: f.u64()?,
                newest: f.u64()?,
                status: f.u8()?,
            },
            _ => return Err(DecodeError::UnknownCode),
        };
        f.end(msg)
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.code());
        match self {
            ServerMessage::Error {
                error,
                request,
                detail,
            } => {
                put_u16(out, *error);
                put_u16(out, *request);
                put_str(out, detail);
            }
            ServerMessage::Welcome {
                version,
                nick,
                server,
                heartbeat_ms,
                max_payload,
            } => {
                out.push(*version);
                put_str(out, nick);
                put_str(out, server);
                put_u32(out, *heartbeat_ms);
                put_u32(out, *max_payload);
            }
            ServerMessage::Joined { room: a, nick: b }
            | ServerMessage::WhisperFrom { from: a, text: b }
            | ServerMessage::NickChanged { old: a, new: b } => {
                put_str(out, a);
                put_str(out, b);
            }
            ServerMessage::Left { room, nick, reason } => {
                put_str(out, room);
                put_str(out, nick);
                put_str(out, reason);
            }
            ServerMessage::Message {
                room,
                seq,
                from,
                text,
            } => {
                put_str(out, room);
                put_u64(out, *seq);
                put_str(out, from);
                put_str(out, text);
            }
            ServerMessage::RoomList(rooms) => {
                put_u16(out, rooms.len().min(u16::MAX as usize) as u16);
                for (room, members) in rooms.iter().take(u16::MAX as usize) {
                    put_str(out, room);
                    put_u32(out, *members);
                }
            }
            ServerMessage::UserList { room, nicks } => {
                put_str(out, room);
                put_u16(out, nicks.len().min(u16::MAX as usize) as u16);
                for nick in nicks.iter().take(u16::MAX as usize) {
                    put_str(out, nick);
                }
            }
            ServerMessage::Ping { token } | ServerMessage::Pong { token } => put_u64(out, *token),
            ServerMessage::Shutdown { grace_ms, reason } => {
                put_u32(out, *grace_ms);
                put_str(out, reason);
            }
            ServerMessage::Bye { reason } => put_str(out, reason),
            ServerMessage::StatsReply(stats) => {
                put_u16(out, stats.len().min(u16::MAX as usize) as u16);
                for (key, value) in stats.iter().take(u16::MAX as usize) {
                    put_str(out, key);
                    put_u64(out, *value);
                }
            }
            ServerMessage::RoomState {
                room,
                epoch,
                last_seq,
                first_held,
            } => {
                put_str(out, room);
                put_u64(out, *epoch);
                put_u64(out, *last_seq);
                put_u64(out, *first_held);
            }
            ServerMessage::HistoryMessage {
                room,
                seq,
                time_ms,
                from,
                text,
            } => {
                put_str(out, room);
                put_u64(out, *seq);
                put_u64(out, *time_ms);
                put_str(out, from);
                put_str(out, text);
            }
            ServerMessage::HistoryEnd {
                room,
                epoch,
                newest,
                status,
            } => {
                put_str(out, room);
                put_u64(out, *epoch);
                put_u64(out, *newest);
                out.push(*status);
            }
        }
        end_frame(out, start);
    }
}
