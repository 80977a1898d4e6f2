//! Protocol version 3: the layouts it changes (HELLO, WELCOME and SAY, for
//! version-3 sessions only) and the codes it adds (identity, exactly-once
//! sending, moderation).
//!
//! Kept apart from [`super::message`] on purpose: a version-1 or -2
//! session's frames decode exactly as before through `ClientMessage` and
//! `ServerMessage`, and the server picks this module's decoders only for a
//! session that said HELLO with version 3 (or, for HELLO itself, after
//! [`hello_version`] read the first byte).
//!
//! SAY (v3) has its own rule for bad payloads: every SAY gets exactly one
//! SAY_RESULT, so a payload whose `msg_id` can still be read but is
//! otherwise broken (trailing bytes, bad UTF-8, msg_id 0) decodes to
//! [`SayV3::Malformed`], answered with SAY_RESULT(MALFORMED); only one
//! whose msg_id cannot be found is [`DecodeError::Malformed`], answered
//! with ERROR(MALFORMED).

use super::frame::{begin_frame, end_frame};
use super::message::{put_str, put_u16, put_u32, put_u64, DecodeError, Fields};

/// The version byte of a version-3 HELLO and WELCOME.
pub const VERSION_3: u8 = 3;

/// Codes version 3 adds (HELLO, WELCOME and SAY keep theirs).
pub mod code {
    #![allow(missing_docs)]
    pub use crate::codec::message::code::{HELLO, SAY, WELCOME};
    // Client to server.
    pub const REFRESH: u16 = 113;
    pub const TOPIC: u16 = 114;
    pub const KICK: u16 = 115;
    pub const BAN: u16 = 116;
    pub const UNBAN: u16 = 117;
    pub const LIST_BANS: u16 = 118;
    pub const MODE: u16 = 119;
    pub const INVITE: u16 = 120;
    pub const OP: u16 = 121;
    pub const KILL: u16 = 122;
    // Server to client.
    pub const SAY_RESULT: u16 = 216;
    pub const REFRESHED: u16 = 217;
    pub const ROOM_INFO: u16 = 218;
    pub const WHISPER_SENT: u16 = 219;
    pub const MODERATION: u16 = 220;
    pub const BAN_LIST: u16 = 221;
    pub const INVITED: u16 = 222;
}

/// WELCOME's `role`.
pub mod role {
    /// A guest (no token).
    pub const GUEST: u8 = 0;
    /// An account.
    pub const ACCOUNT: u8 = 1;
    /// A server administrator.
    pub const ADMIN: u8 = 2;
}

/// ROOM_INFO's and MODE's `modes` bits.
pub mod modes {
    /// Only operators may SAY.
    pub const MODERATED: u16 = 1;
    /// JOIN needs an INVITE or operator rights.
    pub const INVITE_ONLY: u16 = 2;
    /// Guests may not JOIN.
    pub const ACCOUNTS_ONLY: u16 = 4;
    /// Every bit defined.
    pub const ALL: u16 = 7;
}

/// MODERATION's `action`.
pub mod action {
    #![allow(missing_docs)]
    pub const KICK: u8 = 1;
    pub const BAN: u8 = 2;
    pub const UNBAN: u8 = 3;
    pub const OP: u8 = 4;
    pub const DEOP: u8 = 5;
    pub const INVITE: u8 = 6;
    pub const KILL: u8 = 7;
}

/// The version byte a HELLO payload starts with, whatever follows: the
/// server reads it first to pick the layout (v1/v2 or v3).
pub fn hello_version(payload: &[u8]) -> Option<u8> {
    payload.first().copied()
}

/// Whether `code` is a client request that only version 3 has (113-122):
/// UNKNOWN_CODE from a version-1 or -2 session.
pub fn is_version_3_code(code: u16) -> bool {
    (code::REFRESH..=code::KILL).contains(&code)
}

/// A version-3 SAY as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SayV3<'a> {
    /// Well formed with a non-zero msg_id (the text may still be empty or
    /// too long: the chat checks those in the usual order).
    Say {
        room: &'a str,
        text: &'a str,
        msg_id: u64,
    },
    /// msg_id readable, the rest not (trailing bytes, bad UTF-8, or
    /// msg_id 0): SAY_RESULT(MALFORMED) with this room (empty when the
    /// room was not UTF-8).
    Malformed { room: &'a str, msg_id: u64 },
}

/// Decodes a version-3 SAY payload; `Err(Malformed)` only when its msg_id
/// cannot be read (a length runs past the end, or fewer than 8 bytes
/// follow the two strings).
pub fn decode_say(payload: &[u8]) -> Result<SayV3<'_>, DecodeError> {
    let mut f = Fields { rest: payload };
    let room = f.str_bytes()?;
    let text = f.str_bytes()?;
    let msg_id = f.u64()?;
    let room_str = std::str::from_utf8(room).ok();
    match (room_str, std::str::from_utf8(text)) {
        (Some(room), Ok(text)) if f.rest.is_empty() && msg_id != 0 => {
            Ok(SayV3::Say { room, text, msg_id })
        }
        _ => Ok(SayV3::Malformed {
            room: room_str.unwrap_or(""),
            msg_id,
        }),
    }
}

/// A version-3 client request other than SAY (see [`decode_say`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ClientV3<'a> {
    Hello {
        version: u8,
        nick: &'a str,
        token: Secret<'a>,
        session_key: Secret<'a>,
    },
    Say {
        room: &'a str,
        text: &'a str,
        msg_id: u64,
    },
    Refresh {
        token: Secret<'a>,
    },
    Topic {
        room: &'a str,
        topic: &'a str,
    },
    Kick {
        room: &'a str,
        nick: &'a str,
        reason: &'a str,
    },
    Ban {
        room: &'a str,
        mask: &'a str,
        duration_s: u32,
        reason: &'a str,
    },
    Unban {
        room: &'a str,
        mask: &'a str,
    },
    ListBans {
        room: &'a str,
    },
    Mode {
        room: &'a str,
        set: u16,
        clear: u16,
    },
    Invite {
        room: &'a str,
        nick: &'a str,
    },
    Op {
        room: &'a str,
        nick: &'a str,
        grant: u8,
    },
    Kill {
        nick: &'a str,
        reason: &'a str,
    },
}

/// A secret field (a token, a session key): its `Debug` shows its length
/// only, so a message printed with `{:?}` never leaks it into a log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a>(pub &'a str);

impl std::fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl<'a> ClientV3<'a> {
    /// The request's wire code.
    pub fn code(&self) -> u16 {
        match self {
            ClientV3::Hello { .. } => code::HELLO,
            ClientV3::Say { .. } => code::SAY,
            ClientV3::Refresh { .. } => code::REFRESH,
            ClientV3::Topic { .. } => code::TOPIC,
            ClientV3::Kick { .. } => code::KICK,
            ClientV3::Ban { .. } => code::BAN,
            ClientV3::Unban { .. } => code::UNBAN,
            ClientV3::ListBans { .. } => code::LIST_BANS,
            ClientV3::Mode { .. } => code::MODE,
            ClientV3::Invite { .. } => code::INVITE,
            ClientV3::Op { .. } => code::OP,
            ClientV3::Kill { .. } => code::KILL,
        }
    }

    /// Decodes HELLO (v3) and codes 113-122. SAY is here too, strictly
    /// (any fault is `Malformed`); the server uses [`decode_say`] for its
    /// SAY_RESULT rule. Other codes: `UnknownCode` (decode them with
    /// `ClientMessage`).
    pub fn decode(code: u16, payload: &'a [u8]) -> Result<ClientV3<'a>, DecodeError> {
        let mut f = Fields { rest: payload };
        let msg = match code {
            code::HELLO => ClientV3::Hello {
                version: f.u8()?,
                nick: f.str()?,
                token: Secret(f.str()?),
                session_key: Secret(f.str()?),
            },
            code::SAY => ClientV3::Say {
                room: f.str()?,
                text: f.str()?,
                msg_id: f.u64()?,
            },
            code::REFRESH => ClientV3::Refresh {
                token: Secret(f.str()?),
            },
            code::TOPIC => ClientV3::Topic {
                room: f.str()?,
                topic: f.str()?,
            },
            code::KICK => ClientV3::Kick {
                room: f.str()?,
                nick: f.str()?,
                reason: f.str()?,
            },
            code::BAN => ClientV3::Ban {
                room: f.str()?,
                mask: f.str()?,
                duration_s: f.u32()?,
                reason: f.str()?,
            },
            code::UNBAN => ClientV3::Unban {
                room: f.str()?,
                mask: f.str()?,
            },
            code::LIST_BANS => ClientV3::ListBans { room: f.str()? },
            code::MODE => ClientV3::Mode {
                room: f.str()?,
                set: f.u16()?,
                clear: f.u16()?,
            },
            code::INVITE => ClientV3::Invite {
                room: f.str()?,
                nick: f.str()?,
            },
            code::OP => ClientV3::Op {
                room: f.str()?,
                nick: f.str()?,
                grant: f.u8()?,
            },
            code::KILL => ClientV3::Kill {
                nick: f.str()?,
                reason: f.str()?,
            },
            _ => return Err(DecodeError::UnknownCode),
        };
        f.end(msg)
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.code());
        match *self {
            ClientV3::Hello {
                version,
                nick,
                token,
                session_key,
            } => {
                out.push(version);
                put_str(out, nick);
                put_str(out, token.0);
                put_str(out, session_key.0);
            }
            ClientV3::Say { room, text, msg_id } => {
                put_str(out, room);
                put_str(out, text);
                put_u64(out, msg_id);
            }
            ClientV3::Refresh { token } => put_str(out, token.0),
            ClientV3::Topic { room, topic: b }
            | ClientV3::Unban { room, mask: b }
            | ClientV3::Invite { room, nick: b }
            | ClientV3::Kill {
                nick: room,
                reason: b,
            } => {
                put_str(out, room);
                put_str(out, b);
            }
            ClientV3::Kick { room, nick, reason } => {
                put_str(out, room);
                put_str(out, nick);
                put_str(out, reason);
            }
            ClientV3::Ban {
                room,
                mask,
                duration_s,
                reason,
            } => {
                put_str(out, room);
                put_str(out, mask);
                put_u32(out, duration_s);
                put_str(out, reason);
            }
            ClientV3::ListBans { room } => put_str(out, room),
            ClientV3::Mode { room, set, clear } => {
                put_str(out, room);
                put_u16(out, set);
                put_u16(out, clear);
            }
            ClientV3::Op { room, nick, grant } => {
                put_str(out, room);
                put_str(out, nick);
                out.push(grant);
            }
        }
        end_frame(out, start);
    }
}

/// One entry of BAN_LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BanEntry<'a> {
    pub mask: &'a str,
    pub by: &'a str,
    pub reason: &'a str,
    pub until_ms: u64,
}

/// A version-3 frame from the server (WELCOME v3 and codes 216-222).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ServerV3<'a> {
    Welcome {
        version: u8,
        nick: &'a str,
        server: &'a str,
        heartbeat_ms: u32,
        max_payload: u32,
        account: &'a str,
        role: u8,
        session_key: Secret<'a>,
        token_exp_ms: u64,
    },
    SayResult {
        msg_id: u64,
        room: &'a str,
        epoch: u64,
        seq: u64,
        error: u16,
    },
    Refreshed {
        token_exp_ms: u64,
    },
    RoomInfo {
        room: &'a str,
        topic: &'a str,
        topic_by: &'a str,
        topic_time_ms: u64,
        modes: u16,
    },
    WhisperSent {
        to: &'a str,
        text: &'a str,
    },
    Moderation {
        room: &'a str,
        actor: &'a str,
        action: u8,
        target: &'a str,
        reason: &'a str,
        until_ms: u64,
    },
    BanList {
        room: &'a str,
        bans: Vec<BanEntry<'a>>,
    },
    Invited {
        room: &'a str,
        by: &'a str,
    },
}

impl<'a> ServerV3<'a> {
    /// The frame's wire code.
    pub fn code(&self) -> u16 {
        match self {
            ServerV3::Welcome { .. } => code::WELCOME,
            ServerV3::SayResult { .. } => code::SAY_RESULT,
            ServerV3::Refreshed { .. } => code::REFRESHED,
            ServerV3::RoomInfo { .. } => code::ROOM_INFO,
            ServerV3::WhisperSent { .. } => code::WHISPER_SENT,
            ServerV3::Moderation { .. } => code::MODERATION,
            ServerV3::BanList { .. } => code::BAN_LIST,
            ServerV3::Invited { .. } => code::INVITED,
        }
    }

    /// A refused SAY: its room as sent, epoch = seq = 0.
    pub fn say_refused(
        msg_id: u64,
        room: &'a str,
        error: super::message::ErrorCode,
    ) -> ServerV3<'a> {
        ServerV3::SayResult {
            msg_id,
            room,
            epoch: 0,
            seq: 0,
            error: error as u16,
        }
    }

    /// Decodes a version-3 server frame (code 200 as WELCOME v3); other
    /// codes: `UnknownCode` (decode them with `ServerMessage`).
    pub fn decode(code: u16, payload: &'a [u8]) -> Result<ServerV3<'a>, DecodeError> {
        let mut f = Fields { rest: payload };
        let msg = match code {
            code::WELCOME => ServerV3::Welcome {
                version: f.u8()?,
                nick: f.str()?,
                server: f.str()?,
                heartbeat_ms: f.u32()?,
                max_payload: f.u32()?,
                account: f.str()?,
                role: f.u8()?,
                session_key: Secret(f.str()?),
                token_exp_ms: f.u64()?,
            },
            code::SAY_RESULT => ServerV3::SayResult {
                msg_id: f.u64()?,
                room: f.str()?,
                epoch: f.u64()?,
                seq: f.u64()?,
                error: f.u16()?,
            },
            code::REFRESHED => ServerV3::Refreshed {
                token_exp_ms: f.u64()?,
            },
            code::ROOM_INFO => ServerV3::RoomInfo {
                room: f.str()?,
                topic: f.str()?,
                topic_by: f.str()?,
                topic_time_ms: f.u64()?,
                modes: f.u16()?,
            },
            code::WHISPER_SENT => ServerV3::WhisperSent {
                to: f.str()?,
                text: f.str()?,
            },
            code::MODERATION => ServerV3::Moderation {
                room: f.str()?,
                actor: f.str()?,
                action: f.u8()?,
                target: f.str()?,
                reason: f.str()?,
                until_ms: f.u64()?,
            },
            code::BAN_LIST => {
                let room = f.str()?;
                let count = f.u16()? as usize;
                // Each entry is at least 3 empty strs and a u64: a count
                // the payload cannot hold is refused before allocating.
                if count > f.rest.len() / 14 {
                    return Err(DecodeError::Malformed);
                }
                let mut bans = Vec::with_capacity(count);
                for _ in 0..count {
                    bans.push(BanEntry {
                        mask: f.str()?,
                        by: f.str()?,
                        reason: f.str()?,
                        until_ms: f.u64()?,
                    });
                }
                ServerV3::BanList { room, bans }
            }
            code::INVITED => ServerV3::Invited {
                room: f.str()?,
                by: f.str()?,
            },
            _ => return Err(DecodeError::UnknownCode),
        };
        f.end(msg)
    }

    /// Appends the whole frame (header and payload) to `out`. A BAN_LIST
    /// of more than 65,535 entries sends the first 65,535.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.code());
        match self {
            ServerV3::Welcome {
                version,
                nick,
                server,
                heartbeat_ms,
                max_payload,
                account,
                role,
                session_key,
                token_exp_ms,
            } => {
                out.push(*version);
                put_str(out, nick);
                put_str(out, server);
                put_u32(out, *heartbeat_ms);
                put_u32(out, *max_payload);
                put_str(out, account);
                out.push(*role);
                put_str(out, session_key.0);
                put_u64(out, *token_exp_ms);
            }
            ServerV3::SayResult {
                msg_id,
                room,
                epoch,
                seq,
                error,
            } => {
                put_u64(out, *msg_id);
                put_str(out, room);
                put_u64(out, *epoch);
                put_u64(out, *seq);
                put_u16(out, *error);
            }
            ServerV3::Refreshed { token_exp_ms } => put_u64(out, *token_exp_ms),
            ServerV3::RoomInfo {
                room,
                topic,
                topic_by,
                topic_time_ms,
                modes,
            } => {
                put_str(out, room);
                put_str(out, topic);
                put_str(out, topic_by);
                put_u64(out, *topic_time_ms);
                put_u16(out, *modes);
            }
            ServerV3::WhisperSent { to: a, text: b } | ServerV3::Invited { room: a, by: b } => {
                put_str(out, a);
                put_str(out, b);
            }
            ServerV3::Moderation {
                room,
                actor,
                action,
                target,
                reason,
                until_ms,
            } => {
                put_str(out, room);
                put_str(out, actor);
                out.push(*action);
                put_str(out, target);
                put_str(out, reason);
                put_u64(out, *until_ms);
            }
            ServerV3::BanList { room, bans } => {
                put_str(out, room);
                let n = bans.len().min(u16::MAX as usize);
                put_u16(out, n as u16);
                for b in &bans[..n] {
                    put_str(out, b.mask);
                    put_str(out, b.by);
                    put_str(out, b.reason);
                    put_u64(out, b.until_ms);
                }
            }
        }
        end_frame(out, start);
    }
}

/// Every version-3 client code with a layout here (HELLO and SAY included).
pub const CLIENT_CODES: [u16; 12] = [
    code::HELLO,
    code::SAY,
    code::REFRESH,
    code::TOPIC,
    code::KICK,
    code::BAN,
    code::UNBAN,
    code::LIST_BANS,
    code::MODE,
    code::INVITE,
    code::OP,
    code::KILL,
];

/// Every version-3 server code with a layout here (WELCOME included).
pub const SERVER_CODES: [u16; 8] = [
    code::WELCOME,
    code::SAY_RESULT,
    code::REFRESHED,
    code::ROOM_INFO,
    code::WHISPER_SENT,
    code::MODERATION,
    code::BAN_LIST,
    code::INVITED,
];

#[cfg(test)]
mod tests;
