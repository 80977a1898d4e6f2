//! Exactly-once SAY (version 3): a msg_id seen before is answered from
//! the dedup table, and every SAY gets exactly one SAY_RESULT.

use crate::server::sessions::registry::Sessions;

use mio::Token;

use crate::codec::v3::{decode_say, SayV3, ServerV3};
use crate::codec::{code, ErrorCode};

use super::super::Chat;

impl Chat {
    /// SAY (v3): exactly one SAY_RESULT, no ERROR (unless the msg_id
    /// cannot be read).
    pub(in crate::server) fn say_v3(&mut self, sessions: &mut Sessions, t: Token, payload: &[u8]) {
        let (room, text, msg_id) = match decode_say(payload) {
            Err(_) => return self.error(sessions, t, ErrorCode::Malformed, code::SAY, ""),
            Ok(SayV3::Malformed { room, msg_id }) => {
                return self.say_refused(sessions, t, msg_id, room, ErrorCode::Malformed)
            }
            Ok(SayV3::Say { room, text, msg_id }) => (room, text, msg_id),
        };
        let key = self.members.at(t).key();
        if let Some((epoch, seq)) = key.and_then(|k| self.identity.dedup.lookup(&k, msg_id)) {
            self.identity.stats.deduplicated += 1;
            return self.say_result(sessions, t, msg_id, room, epoch, seq);
        }
        let index = match self.check_say(t, room, text) {
            Ok(index) => index,
            // In a cluster the msg_ids are Redis's: a resend is answered
            // from there before any refusal, as standalone.
            Err(e) if self.cluster.is_some() && key.is_some() => {
                return self.cluster_refused_say_v3(sessions, t, room, msg_id, key, e)
            }
            Err(e) => return self.say_refused(sessions, t, msg_id, room, e),
        };
        if self.cluster.is_some() {
            // Deduplicated and recorded in Redis, in the SAY's own call.
            return self.cluster_say_v3(sessions, t, index, (room, text), msg_id, key);
        }
        let (epoch, seq) = self.say_in(sessions, t, index, text);
        if let Some(k) = key {
            self.identity.dedup.record(k, msg_id, epoch, seq);
        }
        self.say_result(sessions, t, msg_id, room, epoch, seq);
    }

    /// A version-3 SAY refused before it was read far (rate limit, flags):
    /// SAY_RESULT with the code when its msg_id can be read.
    pub(in crate::server) fn refuse_say_v3(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        payload: &[u8],
        error: ErrorCode,
    ) {
        match decode_say(payload) {
            Ok(SayV3::Say { room, msg_id, .. } | SayV3::Malformed { room, msg_id }) => {
                self.say_refused(sessions, t, msg_id, room, error)
            }
            Err(_) => self.error(sessions, t, error, code::SAY, ""),
        }
    }

    pub(in crate::server) fn say_refused(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        msg_id: u64,
        room: &str,
        error: ErrorCode,
    ) {
        self.reply_v3(sessions, t, &ServerV3::say_refused(msg_id, room, error));
    }

    pub(in crate::server) fn say_result(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        msg_id: u64,
        room: &str,
        epoch: u64,
        seq: u64,
    ) {
        let msg = ServerV3::SayResult {
            msg_id,
            room,
            epoch,
            seq,
            error: 0,
        };
        self.reply_v3(sessions, t, &msg);
    }
}
