//! Answers on the command link, in the order the calls went: each one
//! for what it was for (`Expect`). The answers of the calls that recover
//! from faults (claims, heartbeat, rebuild, announced leaves) are handled
//! in [`super::recovery`].

use crate::server::sessions::registry::Sessions;
use log::warn;
use mio::Token;

use crate::codec::{ErrorCode, ServerMessage};

use super::super::rooms::RoomId;
use super::super::{encode_into, Chat};
use crate::codec::resp::Value;
use crate::server::cluster::{fold, num, Cluster, Expect};

impl Chat {
    pub(super) fn on_answer(&mut self, sessions: &mut Sessions, v: Result<Value, String>) {
        let Some(expect) = self.cluster.as_deref_mut().and_then(Cluster::answered) else {
            warn!("cluster: an answer from Redis nobody asked for");
            return;
        };
        self.answer(sessions, expect, v);
    }

    /// One answer (or its loss with the link), for what it was for.
    pub(super) fn answer(
        &mut self,
        sessions: &mut Sessions,
        expect: Expect,
        v: Result<Value, String>,
    ) {
        use crate::codec::code;
        let v = match v {
            Ok(v) => match v.error() {
                Some(e) => Err(String::from_utf8_lossy(e).into_owned()),
                None => Ok(v),
            },
            Err(e) => Err(e),
        };
        match expect {
            Expect::Ignore(what) => {
                if let Err(e) = v {
                    warn!("cluster: {what}: {e}");
                }
            }
            Expect::Hello {
                t,
                sid,
                version,
                nick,
            } => match v.as_ref().map(claim_time) {
                Ok(Some(at)) if sessions.get_live(t, sid).is_some() => {
                    self.welcome(sessions, t, version, &nick);
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.sids.insert(sid, t);
                        c.claims.insert(sid, at);
                    }
                    self.wake(sessions, t, sid);
                }
                Ok(Some(_)) => {
                    // Gone meanwhile: give the nick back.
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.bye(&fold(&nick), sid);
                    }
                }
                Ok(_) => {
                    if sessions.get_live(t, sid).is_some() {
                        self.error(sessions, t, ErrorCode::NickInUse, code::HELLO, "");
                        self.wake(sessions, t, sid);
                    }
                }
                Err(_) => self.unavailable(sessions, t, sid, code::HELLO),
            },
            Expect::Join { t, sid, room } => {
                if v.as_ref().is_err_and(|e| e.starts_with("RECOVERING")) {
                    self.join_again_later(room, sid);
                } else if v.is_err() {
                    self.drop_waiter(room, sid);
                    self.unavailable(sessions, t, sid, code::JOIN);
                    self.forget_room_if_idle(sessions, room);
                }
            }
            Expect::Leave { t, sid, room } => match v.as_ref().map(Value::as_int) {
                // The store did not have it as a member (it lost it while
                // this node could not reach it): no LEFT event will come,
                // so the leave completes here.
                Ok(Some(0)) => {
                    self.drop_waiter(room, sid);
                    self.left_here(sessions, room, t, sid);
                }
                Ok(_) => {}
                Err(_) => {
                    self.drop_waiter(room, sid);
                    self.unavailable(sessions, t, sid, code::LEAVE);
                }
            },
            Expect::Say { t, sid, room } => {
                if v.as_ref().is_err_and(|e| e.starts_with("NOROOM")) {
                    self.store_forgot_us(sessions);
                }
                if v.as_ref().is_err_and(|e| e.starts_with("NOTMEMBER")) {
                    // Only members speak. A session this node still has in
                    // the room was lost by the store (a reap, a flush): it
                    // is put back, and announced JOINED if it was LEFT.
                    let live = self.live_member(sessions, t, sid);
                    if live.is_some_and(|m| m.membership(room).is_some()) {
                        self.store_forgot_us(sessions);
                    }
                    if sessions.get_live(t, sid).is_some() {
                        self.error(sessions, t, ErrorCode::NotInRoom, code::SAY, "");
                    }
                    return;
                }
                if v.is_err() {
                    // The session is not waiting: SAYs are pipelined.
                    if sessions.get_live(t, sid).is_some() {
                        if let Some(c) = self.cluster.as_deref_mut() {
                            c.stats.unavailable += 1;
                        }
                        self.error(sessions, t, ErrorCode::Unavailable, code::SAY, "");
                    }
                }
            }
            Expect::Whisper { t, sid } => match v.as_ref().map(Value::as_int) {
                Ok(Some(0)) => {
                    if sessions.get_live(t, sid).is_some() {
                        self.error(sessions, t, ErrorCode::NoSuchNick, code::WHISPER, "");
                    }
                    self.wake(sessions, t, sid);
                }
                Ok(_) => self.wake(sessions, t, sid),
                Err(_) => self.unavailable(sessions, t, sid, code::WHISPER),
            },
            Expect::Nick {
                t,
                sid,
                new,
                forced: Some(tries),
            } => self.renamed_after_clash(sessions, t, sid, &new, tries, v),
            Expect::Nick {
                t,
                sid,
                new,
                forced: None,
            } => match v.as_ref().map(claim_time) {
                Ok(Some(at)) if sessions.get_live(t, sid).is_some() => {
                    self.rename(t, &new);
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.claims.insert(sid, at);
                    }
                    self.wake(sessions, t, sid);
                }
                Ok(Some(_)) => {
                    // Gone meanwhile (its close gave back the old nick):
                    // give back the new one too.
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.bye(&fold(&new), sid);
                    }
                }
                Ok(_) => {
                    if sessions.get_live(t, sid).is_some() {
                        self.error(sessions, t, ErrorCode::NickInUse, code::NICK, "");
                    }
                    self.wake(sessions, t, sid);
                }
                Err(_) => self.unavailable(sessions, t, sid, code::NICK),
            },
            Expect::Rooms => self.rooms_listed(sessions, v),
            Expect::Users { key } => self.users_listed(sessions, &key, v),
            Expect::History {
                t,
                sid,
                room,
                epoch,
                newest,
                after,
                cap,
                status,
                newest_first,
            } => match v {
                Ok(v) => {
                    if sessions.get_live(t, sid).is_some() {
                        let q = super::requests::HistoryQuery {
                            room,
                            epoch,
                            newest,
                            after,
                            cap,
                            status,
                            newest_first,
                        };
                        self.history_from(sessions, t, &q, &v);
                    }
                    self.wake(sessions, t, sid);
                }
                Err(_) => self.unavailable(sessions, t, sid, code::HISTORY),
            },
            Expect::Fill { room, epoch, upto } => self.filled(sessions, room, epoch, upto, v),
            Expect::Claim => self.claimed(sessions, v),
            Expect::Alive { sent } => self.alive_answered(sessions, sent, v),
            Expect::Sync { sent } => self.synced(sent, v),
            Expect::Gone(sent) => self.gone_answered(sent, v),
            Expect::Restore { room, epoch } => self.restored(sessions, room, epoch, v),
            Expect::Moderation(m) => self.moderation_answer(sessions, m, v),
            Expect::Account(e) => self.account_answer(sessions, e, v),
        }
    }

    /// A LEAVE the store had nothing to do for: LEFT to the leaver (and
    /// the room's members here, under the presence limit), and it is out.
    fn left_here(&mut self, sessions: &mut Sessions, id: RoomId, t: Token, sid: u64) {
        let Some(index) = self
            .live_member(sessions, t, sid)
            .and_then(|m| m.membership(id))
        else {
            return self.wake(sessions, t, sid);
        };
        let room = self.rooms.get(id);
        encode_into(
            &mut self.frame,
            &ServerMessage::Left {
                room: &room.name,
                nick: self.members.at(t).nick(),
                reason: "",
            },
        );
        if room.members.len() > self.config.presence_limit {
            sessions.deliver(t, &self.frame);
        } else {
            self.send_members(sessions, id);
        }
        self.drop_member(t, index);
        self.wake(sessions, t, sid);
        self.forget_room_if_idle(sessions, id);
    }

    /// Forgets a JOIN or LEAVE that will get no event.
    fn drop_waiter(&mut self, room: RoomId, sid: u64) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.waits.remove(&sid);
        if let Some(r) = c.rooms.get_mut(&room) {
            r.joins.retain(|w| w.sid != sid);
            r.leaves.retain(|w| w.sid != sid);
        }
    }

    /// Handles `v` as the command link's answer to the oldest call in
    /// flight (see [`Chat::feed_push`]). Exists for fuzzing and tests.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn feed_answer(&mut self, sessions: &mut Sessions, v: Value) {
        self.on_answer(sessions, Ok(v));
        self.flush_cast(sessions);
    }

    /// What the oldest call in flight waits for: its kind ("fill",
    /// "join", ...), and for a fill or a HISTORY the first and last seq
    /// it asks for.
    /// Exists for fuzzing and tests, to shape an answer that fits.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn oldest_call(&self) -> Option<(&'static str, u64, u64)> {
        let f = self.cluster.as_deref()?.in_flight.front()?;
        Some(match &f.expect {
            Expect::Fill { room, epoch, upto } => {
                let from = self
                    .rooms
                    .get_incarnation(*room, *epoch)
                    .map_or(0, |r| r.seq.saturating_add(1));
                ("fill", from, *upto)
            }
            Expect::Ignore(_) => ("ignore", 0, 0),
            Expect::Hello { .. } => ("hello", 0, 0),
            Expect::Join { .. } => ("join", 0, 0),
            Expect::Leave { .. } => ("leave", 0, 0),
            Expect::Say { .. } => ("say", 0, 0),
            Expect::Whisper { .. } => ("whisper", 0, 0),
            Expect::Nick { .. } => ("nick", 0, 0),
            Expect::Rooms => ("rooms", 0, 0),
            Expect::Users { .. } => ("users", 0, 0),
            Expect::History { after, newest, .. } => ("history", after.saturating_add(1), *newest),
            Expect::Restore { .. } => ("restore", 0, 0),
            Expect::Alive { .. } => ("alive", 0, 0),
            Expect::Claim => ("claim", 0, 0),
            Expect::Sync { .. } => ("sync", 0, 0),
            Expect::Gone(_) => ("gone", 0, 0),
            Expect::Moderation(_) => ("moderation", 0, 0),
            Expect::Account(_) => ("account", 0, 0),
        })
    }
}

/// A claim's time in an answer (a decimal string), or `None` for 0 (the
/// nick is taken).
pub(super) fn claim_time(v: &Value) -> Option<u64> {
    v.as_bytes().and_then(num).filter(|&at| at > 0)
}
