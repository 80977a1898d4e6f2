//! Messages: what each frame's payload means, in both directions.
//!
//! Decoding borrows: a decoded message's strings point into the frame's
//! payload, so decoding allocates nothing. Encoding appends one whole frame
//! (header included) to a `Vec<u8>`, so a sender can queue many frames into
//! one buffer and hand them to the kernel in a single `write()`.
//!
//! This file holds what both directions share: the versions, the codes,
//! [`ErrorCode`], the field cursor and writers. Each direction's messages
//! are a child module: `client` ([`ClientMessage`]) and `server`
//! ([`ServerMessage`], [`peek_message`]).

mod client;
mod server;

pub use client::ClientMessage;
pub use server::{peek_message, ServerMessage};

/// Protocol version 1: every code but the version-2 ones.
///
/// Kept under its old name for code that speaks only version 1 (the load
/// generator's plain sessions). A peer that speaks both compares against
/// [`VERSION_1`] and [`VERSION_2`] and checks support with
/// [`is_supported_version`].
pub const PROTOCOL_VERSION: u8 = VERSION_1;

/// Protocol version 1.
pub const VERSION_1: u8 = 1;

/// Protocol version 2: version 1 plus room state, history and resume
/// (HISTORY, ROOM_STATE, HISTORY_MESSAGE, HISTORY_END). Nothing in version 1
/// changes, so a version-2 peer can always fall back to version 1.
pub const VERSION_2: u8 = 2;

/// The newest version this crate speaks.
pub const LATEST_VERSION: u8 = VERSION_2;

/// Whether a HELLO with `version` is one this crate speaks (1 or 2); any
/// other version is answered with BAD_VERSION.
pub fn is_supported_version(version: u8) -> bool {
    (VERSION_1..=LATEST_VERSION).contains(&version)
}

/// Whether `code` exists only in version 2 (either direction): a server
/// never sends such a frame to a version-1 session, and answers HISTORY
/// from one with UNKNOWN_CODE.
pub fn is_version_2_code(code: u16) -> bool {
    matches!(
        code,
        code::HISTORY | code::ROOM_STATE | code::HISTORY_MESSAGE | code::HISTORY_END
    )
}

/// The bits of HISTORY_END's `status`. 0 means complete: every message
/// asked for, up to `newest`, was sent.
pub mod history_status {
    /// The limit cut the reply short: ask again after the last seq received
    /// (for an epoch-0 request: older messages are held).
    pub const MORE: u8 = 1;
    /// Some messages after `after_seq` are no longer held: the first
    /// HISTORY_MESSAGE is not `after_seq + 1`. Never set for epoch 0.
    pub const GAP: u8 = 2;
    /// The epoch asked for is gone (the room was re-created); nothing else
    /// is set and nothing was sent.
    pub const NEW_EPOCH: u8 = 4;
}

/// Message codes, as on the wire.
pub mod code {
    #![allow(missing_docs)]
    // Server to client.
    pub const ERROR: u16 = 50;
    pub const WELCOME: u16 = 200;
    pub const JOINED: u16 = 201;
    pub const LEFT: u16 = 202;
    pub const MESSAGE: u16 = 203;
    pub const WHISPER_FROM: u16 = 204;
    pub const NICK_CHANGED: u16 = 205;
    pub const ROOM_LIST: u16 = 206;
    pub const USER_LIST: u16 = 207;
    pub const SERVER_PING: u16 = 208;
    pub const SERVER_PONG: u16 = 209;
    pub const SHUTDOWN: u16 = 210;
    pub const BYE: u16 = 211;
    pub const STATS_REPLY: u16 = 212;
    // Server to client, version 2 only.
    pub const ROOM_STATE: u16 = 213;
    pub const HISTORY_MESSAGE: u16 = 214;
    pub const HISTORY_END: u16 = 215;
    // Client to server.
    pub const HELLO: u16 = 100;
    pub const JOIN: u16 = 101;
    pub const LEAVE: u16 = 102;
    pub const SAY: u16 = 103;
    pub const WHISPER: u16 = 104;
    pub const NICK: u16 = 105;
    pub const LIST_ROOMS: u16 = 106;
    pub const LIST_USERS: u16 = 107;
    pub const PING: u16 = 108;
    pub const PONG: u16 = 109;
    pub const QUIT: u16 = 110;
    pub const STATS: u16 = 111;
    // Client to server, version 2 only.
    pub const HISTORY: u16 = 112;
}

/// The error codes of an ERROR frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum ErrorCode {
    BadFrame = 1,
    FrameTooLarge = 2,
    UnknownCode = 3,
    Malformed = 4,
    BadVersion = 5,
    NotRegistered = 6,
    AlreadyRegistered = 7,
    BadNick = 8,
    NickInUse = 9,
    BadRoom = 10,
    NotInRoom = 11,
    NoSuchNick = 12,
    TextTooLong = 13,
    TooManyRooms = 14,
    RateLimited = 15,
    ServerFull = 16,
    SlowConsumer = 17,
    PingTimeout = 18,
    AlreadyInRoom = 19,
    ShuttingDown = 20,
    LoginTimeout = 21,
    Unavailable = 22,
    TlsRequired = 23,
    // Version 3 (identity and moderation).
    AuthRequired = 24,
    AuthFailed = 25,
    TokenExpired = 26,
    NotAllowed = 27,
    Banned = 28,
    SessionLimit = 29,
    NotFound = 30,
    Killed = 31,
    InviteOnly = 32,
}

impl ErrorCode {
    /// Every error code, in numeric order.
    pub const ALL: [ErrorCode; 32] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownCode,
        ErrorCode::Malformed,
        ErrorCode::BadVersion,
        ErrorCode::NotRegistered,
        ErrorCode::AlreadyRegistered,
        ErrorCode::BadNick,
        ErrorCode::NickInUse,
        ErrorCode::BadRoom,
        ErrorCode::NotInRoom,
        ErrorCode::NoSuchNick,
        ErrorCode::TextTooLong,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::ServerFull,
        ErrorCode::SlowConsumer,
        ErrorCode::PingTimeout,
        ErrorCode::AlreadyInRoom,
        ErrorCode::ShuttingDown,
        ErrorCode::LoginTimeout,
        ErrorCode::Unavailable,
        ErrorCode::TlsRequired,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::NotAllowed,
        ErrorCode::Banned,
        ErrorCode::SessionLimit,
        ErrorCode::NotFound,
        ErrorCode::Killed,
        ErrorCode::InviteOnly,
    ];

    /// The code for a wire value, if it is one this crate knows.
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get((v as usize).wrapping_sub(1)).copied()
    }

    /// Whether the server closes the connection after sending it.
    /// NICK_IN_USE (fatal for a HELLO with a token) and BANNED (fatal at
    /// HELLO, not at JOIN) depend on the request: the sender decides.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge
                | ErrorCode::BadVersion
                | ErrorCode::ServerFull
                | ErrorCode::SlowConsumer
                | ErrorCode::PingTimeout
                | ErrorCode::LoginTimeout
                | ErrorCode::TlsRequired
                | ErrorCode::AuthRequired
                | ErrorCode::AuthFailed
                | ErrorCode::TokenExpired
                | ErrorCode::SessionLimit
                | ErrorCode::Killed
        )
    }

    /// The protocol's name for it, e.g. `NICK_IN_USE`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownCode => "UNKNOWN_CODE",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::NotRegistered => "NOT_REGISTERED",
            ErrorCode::AlreadyRegistered => "ALREADY_REGISTERED",
            ErrorCode::BadNick => "BAD_NICK",
            ErrorCode::NickInUse => "NICK_IN_USE",
            ErrorCode::BadRoom => "BAD_ROOM",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::NoSuchNick => "NO_SUCH_NICK",
            ErrorCode::TextTooLong => "TEXT_TOO_LONG",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServerFull => "SERVER_FULL",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::PingTimeout => "PING_TIMEOUT",
            ErrorCode::AlreadyInRoom => "ALREADY_IN_ROOM",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::LoginTimeout => "LOGIN_TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::TlsRequired => "TLS_REQUIRED",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::Banned => "BANNED",
            ErrorCode::SessionLimit => "SESSION_LIMIT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Killed => "KILLED",
            ErrorCode::InviteOnly => "INVITE_ONLY",
        }
    }

    /// A sentence for people (the chat client shows these).
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "the frame had reserved flags set",
            ErrorCode::FrameTooLarge => "the frame was larger than the server accepts",
            ErrorCode::UnknownCode => "the server does not know that command",
            ErrorCode::Malformed => "the command was malformed",
            ErrorCode::BadVersion => "the server does not speak that protocol version",
            ErrorCode::NotRegistered => "say HELLO (pick a nick) first",
            ErrorCode::AlreadyRegistered => "you are already registered",
            ErrorCode::BadNick => "nicks are 1-32 characters of A-Z a-z 0-9 _ -",
            ErrorCode::NickInUse => "that nick is taken",
            ErrorCode::BadRoom => "rooms are # and 1-63 characters of A-Z a-z 0-9 _ - .",
            ErrorCode::NotInRoom => "you are not in that room (or it does not exist)",
            ErrorCode::NoSuchNick => "nobody by that nick is connected",
            ErrorCode::TextTooLong => "that message is too long",
            ErrorCode::TooManyRooms => "you are in too many rooms",
            ErrorCode::RateLimited => "you are sending too fast; slow down",
            ErrorCode::ServerFull => "the server is full",
            ErrorCode::SlowConsumer => "you were not reading fast enough and were disconnected",
            ErrorCode::PingTimeout => "the server heard nothing from you and disconnected",
            ErrorCode::AlreadyInRoom => "you are already in that room",
            ErrorCode::ShuttingDown => "the server is shutting down",
            ErrorCode::LoginTimeout => "HELLO took too long",
            ErrorCode::Unavailable => "the server cannot do that right now; try again later",
            ErrorCode::TlsRequired => "the server accepts only TLS connections",
            ErrorCode::AuthRequired => "the server requires a token (sign in)",
            ErrorCode::AuthFailed => "the token was not accepted",
            ErrorCode::TokenExpired => "your token expired; sign in again",
            ErrorCode::NotAllowed => "you are not allowed to do that",
            ErrorCode::Banned => "you are banned",
            ErrorCode::SessionLimit => "your account has too many open sessions",
            ErrorCode::NotFound => "no such ban",
            ErrorCode::Killed => "an administrator ended your session",
            ErrorCode::InviteOnly => "that room is invite-only",
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The code is not a message of this direction.
    UnknownCode,
    /// Too short, trailing bytes, or a string that is not UTF-8.
    Malformed,
}

/// A cursor over a payload's fields; every read checks the length.
pub(super) struct Fields<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Malformed)?;
        self.rest = rest;
        Ok(*head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    pub(super) fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.str_bytes()?).map_err(|_| DecodeError::Malformed)
    }
    /// A `str` field's bytes, UTF-8 unchecked.
    pub(super) fn str_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        if self.rest.len() < len {
            return Err(DecodeError::Malformed);
        }
        let (s, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(s)
    }
    /// Trailing bytes are as malformed as missing ones.
    pub(super) fn end<T>(self, value: T) -> Result<T, DecodeError> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::Malformed)
        }
    }
}

pub(super) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// A `str` field. Longer than a u16 can say, it is cut at the last
/// character boundary that fits rather than sent corrupt.
pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    put_u16(out, len as u16);
    out.extend_from_slice(&s.as_bytes()[..len]);
}
