//! Messages: SAY (encoded once, batched per room, copied into each
//! member's output) and WHISPER.

use crate::server::sessions::registry::Sessions;
use std::mem;

use mio::Token;

use crate::codec::v3::{ServerV3, VERSION_3};
use crate::codec::{code, valid_room, ErrorCode, NameKey, ServerMessage};

use super::super::history::{self};
use super::super::{encode_into, Chat};

/// A run of SAYs to one room is fanned out once it holds this many bytes
/// (or a quarter of `--max-outbuf`, if smaller), which bounds the batch and
/// the delay of the slow-consumer check. The batch is not counted by the
/// sender's pause check until it is fanned out, so with the pause at half
/// of `--max-outbuf` a pipelining sender's own echo never reaches the cut.
const CAST_LIMIT: usize = 64 * 1024;

/// The size at which a batch of MESSAGEs is fanned out (see `CAST_LIMIT`).
pub(in crate::server) fn cast_limit(max_outbuf: usize) -> usize {
    CAST_LIMIT.min(max_outbuf / 4)
}

impl Chat {
    pub(in crate::server) fn say(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: &str,
        text: &str,
    ) {
        let index = match self.check_say(t, room, text) {
            Ok(index) => index,
            Err(e) => return self.error(sessions, t, e, code::SAY, ""),
        };
        if self.cluster.is_some() {
            return self.cluster_say(sessions, t, index, text);
        }
        self.say_in(sessions, t, index, text);
    }

    /// What every SAY (version 2 or 3) must pass: a valid room, a text
    /// within bounds, membership, and the room's modes. The index of the
    /// room in `t`'s membership list, or the refusal.
    pub(in crate::server) fn check_say(
        &self,
        t: Token,
        room: &str,
        text: &str,
    ) -> Result<usize, ErrorCode> {
        if !valid_room(room) {
            return Err(ErrorCode::BadRoom);
        }
        self.check_text(text)?;
        let index = self.member_of(t, room).ok_or(ErrorCode::NotInRoom)?;
        self.may_say(t, self.members.at(t).rooms()[index].room)?;
        Ok(index)
    }

    /// An accepted SAY from `t` to the room at `index` of its membership
    /// list: batched for the fan-out and held. Returns its (epoch, seq).
    pub(in crate::server) fn say_in(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        index: usize,
        text: &str,
    ) -> (u64, u64) {
        sessions.stats.messages += 1;
        let id = self.members.at(t).rooms()[index].room;
        if self.cast_room != Some(id) {
            self.flush_cast(sessions);
            self.cast_room = Some(id);
        }
        let nick = self.members.at(t).nick();
        let r = self.rooms.get_mut(id);
        r.seq += 1;
        // Encode once; every member gets a copy of the same bytes.
        ServerMessage::Message {
            room: &r.name,
            seq: r.seq,
            from: nick,
            text,
        }
        .encode(&mut self.cast);
        // One more copy of the bytes for history, none per member.
        self.history
            .store(r.ring, &r.name, r.seq, history::now_ms(), nick, text);
        let taken = (r.epoch, r.seq);
        self.cast_frames += 1;
        if self.cast.len() >= cast_limit(sessions.marks().max_outbuf) {
            self.flush_cast(sessions);
        }
        taken
    }

    /// Fans out the batched MESSAGEs: one bulk copy per member instead of
    /// one small copy per member per message. Copying a member's whole run
    /// at once writes its buffer sequentially, where a copy per message
    /// interleaved 1,000 write streams and missed the cache on nearly every
    /// one. Called before anything else is queued for anyone, so every
    /// member still sees frames in exactly the order they were produced.
    pub(in crate::server) fn flush_cast(&mut self, sessions: &mut Sessions) {
        let Some(id) = self.cast_room.take() else {
            return;
        };
        let frames = mem::take(&mut self.cast_frames);
        let room = self.rooms.get(id);
        let members = &room.members;
        self.trace
            .cast(&room.name, members.len(), frames, self.cast.len());
        sessions.hist.fanout_size.observe(members.len() as u64);
        // The loop's invariants in locals: with the sessions a separate
        // borrow, the compiler reloaded them for every member.
        let (cast, now) = (&self.cast[..], Some(self.now));
        for &member in members {
            sessions.deliver_messages(member, cast, frames, now);
        }
        self.cast.clear();
    }

    pub(in crate::server) fn whisper(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        text: &str,
    ) {
        if !self.valid_target(nick) {
            return self.error(sessions, t, ErrorCode::BadNick, code::WHISPER, "");
        }
        if let Err(e) = self.check_text(text) {
            return self.error(sessions, t, e, code::WHISPER, "");
        }
        if self.cluster.is_some() {
            return self.cluster_whisper(sessions, t, nick, text);
        }
        let Some(&target) = NameKey::new(nick).and_then(|k| self.nicks.get(&k)) else {
            return self.error(sessions, t, ErrorCode::NoSuchNick, code::WHISPER, "");
        };
        let from = self.members.at(t).nick();
        encode_into(&mut self.frame, &ServerMessage::WhisperFrom { from, text });
        // To each session of an account.
        for s in self.sessions_of_member(target) {
            sessions.deliver(s, &self.frame);
        }
        // The sender's other sessions see what it sent.
        let mine = self.sessions_of_member(t);
        if mine.len() > 1 {
            let to = self.members.at(target).nick().to_owned();
            self.frame.clear();
            ServerV3::WhisperSent { to: &to, text }.encode(&mut self.frame);
            for s in mine {
                if s != t && self.members.at(s).version() >= VERSION_3 {
                    sessions.deliver(s, &self.frame);
                }
            }
        }
    }

    pub(in crate::server) fn check_text(&self, text: &str) -> Result<(), ErrorCode> {
        if text.is_empty() {
            Err(ErrorCode::Malformed)
        } else if text.len() > self.config.max_text {
            Err(ErrorCode::TextTooLong)
        } else {
            Ok(())
        }
    }
}
