//! Moderation (protocol version 3, codes 114-122: TOPIC .. KILL).
//!
//! A stub until the moderation handlers land (issue 21): every such
//! request from a version-3 session gets UNKNOWN_CODE.

use mio::Token;

use crate::codec::ErrorCode;

use super::super::Chat;

impl Chat {
    /// A moderation request (`code` 114-122) from a version-3 session.
    pub(in crate::server) fn moderation(&mut self, t: Token, code: u16, _payload: &[u8]) {
        self.error(t, ErrorCode::UnknownCode, code, "");
    }
}
