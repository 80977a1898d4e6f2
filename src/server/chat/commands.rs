//! The commands: one handler per client request, and the fan-out they
//! share. Every handler answers by appending encoded frames (through
//! [`Sessions::deliver`](super::super::event_loop::registry::Sessions::deliver)); none writes.

use std::mem;
use std::time::Instant;

use log::{debug, info};
use mio::Token;

use crate::codec::{
    code, history_status, is_supported_version, valid_nick, valid_room, ErrorCode, NameKey,
    ServerMessage, VERSION_2,
};

use super::history::{self, History, Plan, Request, RingId};
use super::members::Membership;
use super::rooms::{Room, RoomId, LINGER_OVERHEAD};
use super::{encode_into, Chat};

/// Lingering rooms expired per loop iteration at most (see
/// `Chat::expire_rooms`): about a millisecond's work.
const EXPIRE_BUDGET: usize = 4096;

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
    pub(in crate::server) fn hello(&mut self, t: Token, version: u8, nick: &str) {
        if !is_supported_version(version) {
            return self.error(
                t,
                ErrorCode::BadVersion,
                code::HELLO,
                "this server speaks versions 1 and 2",
            );
        }
        if !valid_nick(nick) {
            return self.error(t, ErrorCode::BadNick, code::HELLO, "");
        }
        if self.draining {
            return self.error(t, ErrorCode::ShuttingDown, code::HELLO, "");
        }
        let Some(key) = NameKey::new(nick) else {
            return self.error(t, ErrorCode::BadNick, code::HELLO, "");
        };
        if self.nicks.contains_key(&key) {
            return self.error(t, ErrorCode::NickInUse, code::HELLO, "");
        }
        if self.cluster.is_some() {
            return self.cluster_hello(t, version, nick, &key);
        }
        self.register(t, key, version, nick);
    }

    /// The nick is ours: the session is registered and welcomed.
    pub(in crate::server) fn register(&mut self, t: Token, key: NameKey, version: u8, nick: &str) {
        self.nicks.insert(key, t);
        let m = self.members.at_mut(t);
        m.replace_nick(nick);
        m.set_version(version);
        let s = self.sessions.at_mut(t);
        s.register();
        let t_ = s.transport();
        // One line per connection at info (with "opened" and "ended"): a
        // log pipeline follows a session by its peer address. The account
        // is empty until identity (protocol version 3) lands.
        info!(
            target: "muxchat::conn",
            peer:% = s.peer(), door = t_.door(), tls = t_.is_tls(), nick = nick, account = "";
            "registered: {nick} from {} (v{version})", s.peer()
        );
        let welcome = ServerMessage::Welcome {
            version,
            nick,
            server: &self.server_name,
            heartbeat_ms: self.config.heartbeat.as_millis() as u32,
            max_payload: self.config.max_payload,
        };
        encode_into(&mut self.frame, &welcome);
        self.sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn join(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::JOIN, "");
        }
        if self.draining {
            return self.error(t, ErrorCode::ShuttingDown, code::JOIN, "");
        }
        if self.member_of(t, room).is_some() {
            return self.error(t, ErrorCode::AlreadyInRoom, code::JOIN, "");
        }
        if self.members.at(t).rooms().len() >= self.config.max_rooms {
            return self.error(t, ErrorCode::TooManyRooms, code::JOIN, "");
        }
        if self.cluster.is_some() {
            return self.cluster_join(t, room);
        }
        let id = match self.rooms.find(room) {
            Some(id) => id,
            None => {
                let epoch = self.epochs.next_epoch();
                let ring = self.history.open();
                self.rooms.create(room, epoch, ring)
            }
        };
        let slot = self.rooms.join(id, t);
        let r = self.rooms.get(id);
        let m = self.members.at_mut(t);
        m.add_room(Membership {
            room: id,
            slot,
            joined_at_seq: r.seq,
        });
        let joined = ServerMessage::Joined {
            room: &r.name,
            nick: m.nick(),
        };
        encode_into(&mut self.frame, &joined);
        self.cast_presence(id, t);
        if self.members.at(t).version() >= VERSION_2 {
            // Right after its own JOINED, before any MESSAGE of the room:
            // nothing is batched (dispatch fanned out before this JOIN), so
            // every MESSAGE it gets from now on has seq > last_seq.
            let r = self.rooms.get(id);
            let state = ServerMessage::RoomState {
                room: &r.name,
                epoch: r.epoch,
                last_seq: r.seq,
                first_held: self.history.first_held(r.ring),
            };
            encode_into(&mut self.frame, &state);
            self.sessions.reply(t, &self.frame);
        }
    }

    /// HISTORY (version 2, members only): held messages of the room,
    /// copied from the store's encoded frames, then HISTORY_END. Nothing
    /// above the `last_seq` of the session's ROOM_STATE is sent (those
    /// came live). One reply's messages fit in a quarter of `--max-outbuf`
    /// and in what is left below the session's pause mark; what does not
    /// fit is "more" (status bit 1), to ask for again. So however many
    /// HISTORY requests one read carries, the session's output stays near
    /// its pause mark, its input pauses (backpressure) and it is never cut
    /// for its own replies.
    pub(in crate::server) fn history(
        &mut self,
        t: Token,
        room: &str,
        epoch: u64,
        after_seq: u64,
        limit: u16,
    ) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::HISTORY, "");
        }
        let Some(index) = self.member_of(t, room) else {
            return self.error(t, ErrorCode::NotInRoom, code::HISTORY, "");
        };
        if self.cluster.is_some() {
            return self.cluster_history(t, index, epoch, after_seq, limit);
        }
        let m = self.members.at(t).rooms()[index];
        let r = self.rooms.get(m.room);
        let req = Request {
            epoch,
            after_seq,
            limit,
            newest: m.joined_at_seq,
        };
        let mut plan = self.history.plan(r.ring, r.epoch, &req);
        let marks = self.sessions.marks();
        let pending = self.sessions.at(t).pending();
        let budget = (marks.max_outbuf / 4).min(marks.pause_above.saturating_sub(pending));
        // A session with next to nothing pending always gets a message, so
        // a message larger than the budget cannot stall a resume.
        let floor = u64::from(pending <= marks.resume_below);
        trim_to_bytes(&self.history, r.ring, &mut plan, epoch == 0, budget, floor);
        let (a, b) = self.history.frames(r.ring, &plan);
        encode_into(
            &mut self.frame,
            &ServerMessage::HistoryEnd {
                room: &r.name,
                epoch: r.epoch,
                newest: req.newest,
                status: plan.status,
            },
        );
        let s = self.sessions.at_mut(t);
        if s.life().muted() {
            return;
        }
        // Appended as a reply, not a delivery: a reply is bounded (above)
        // and its own input pauses past the pause mark, so it is never a
        // reason to cut the session.
        s.append(a, plan.count);
        s.append(b, 0);
        s.append(&self.frame, 1);
        self.sessions.stats.frames_out += plan.count + 1;
        self.sessions.stats.history_replies += 1;
        self.sessions.queue_flush(t);
    }

    pub(in crate::server) fn leave(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::LEAVE, "");
        }
        match self.member_of(t, room) {
            Some(index) if self.cluster.is_some() => self.cluster_leave(t, index),
            Some(index) => self.part(t, index, ""),
            None => self.error(t, ErrorCode::NotInRoom, code::LEAVE, ""),
        }
    }

    pub(in crate::server) fn say(&mut self, t: Token, room: &str, text: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::SAY, "");
        }
        if let Err(e) = self.check_text(text) {
            return self.error(t, e, code::SAY, "");
        }
        let Some(index) = self.member_of(t, room) else {
            return self.error(t, ErrorCode::NotInRoom, code::SAY, "");
        };
        if self.cluster.is_some() {
            return self.cluster_say(t, index, text);
        }
        self.sessions.stats.messages += 1;
        let id = self.members.at(t).rooms()[index].room;
        if self.cast_room != Some(id) {
            self.flush_cast();
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
        self.cast_frames += 1;
        if self.cast.len() >= cast_limit(self.sessions.marks().max_outbuf) {
            self.flush_cast();
        }
    }

    /// Fans out the batched MESSAGEs: one bulk copy per member instead of
    /// one small copy per member per message. Copying a member's whole run
    /// at once writes its buffer sequentially, where a copy per message
    /// interleaved 1,000 write streams and missed the cache on nearly every
    /// one. Called before anything else is queued for anyone, so every
    /// member still sees frames in exactly the order they were produced.
    pub(in crate::server) fn flush_cast(&mut self) {
        let Some(id) = self.cast_room.take() else {
            return;
        };
        let frames = mem::take(&mut self.cast_frames);
        self.trace.cast(self.rooms.get(id), frames, self.cast.len());
        let members = &self.rooms.get(id).members;
        self.sessions.hist.fanout_size.observe(members.len() as u64);
        for &member in members {
            self.sessions
                .deliver_messages(member, &self.cast, frames, Some(self.now));
        }
        self.cast.clear();
    }

    pub(in crate::server) fn whisper(&mut self, t: Token, nick: &str, text: &str) {
        if !valid_nick(nick) {
            return self.error(t, ErrorCode::BadNick, code::WHISPER, "");
        }
        if let Err(e) = self.check_text(text) {
            return self.error(t, e, code::WHISPER, "");
        }
        if self.cluster.is_some() {
            return self.cluster_whisper(t, nick, text);
        }
        let Some(&target) = NameKey::new(nick).and_then(|k| self.nicks.get(&k)) else {
            return self.error(t, ErrorCode::NoSuchNick, code::WHISPER, "");
        };
        let from = self.members.at(t).nick();
        encode_into(&mut self.frame, &ServerMessage::WhisperFrom { from, text });
        self.sessions.deliver(target, &self.frame);
    }

    pub(in crate::server) fn change_nick(&mut self, t: Token, new: &str) {
        if !valid_nick(new) {
            return self.error(t, ErrorCode::BadNick, code::NICK, "");
        }
        let Some(key) = NameKey::new(new) else {
            return self.error(t, ErrorCode::BadNick, code::NICK, "");
        };
        if self.nicks.get(&key).is_some_and(|&owner| owner != t) {
            return self.error(t, ErrorCode::NickInUse, code::NICK, "");
        }
        if self.cluster.is_some() {
            return self.cluster_nick(t, new);
        }
        let old = self.members.at_mut(t).replace_nick(new);
        if let Some(old_key) = NameKey::new(&old) {
            self.nicks.remove(&old_key);
        }
        self.nicks.insert(key, t);
        encode_into(
            &mut self.frame,
            &ServerMessage::NickChanged { old: &old, new },
        );
        // Once to the sender and once to each session sharing any room
        // with it, however many rooms they share: a fresh stamp marks who
        // already has it.
        self.stamp += 1;
        let stamp = self.stamp;
        self.members.at_mut(t).stamp(stamp);
        self.sessions.reply(t, &self.frame);
        let rooms: Vec<RoomId> = self.members.at(t).rooms().iter().map(|m| m.room).collect();
        for id in rooms {
            for &member in &self.rooms.get(id).members {
                if self.members.at_mut(member).stamp(stamp) {
                    self.sessions.deliver(member, &self.frame);
                }
            }
        }
    }

    pub(in crate::server) fn list_rooms(&mut self, t: Token) {
        if self.cluster.is_some() {
            return self.cluster_list_rooms(t);
        }
        // Truncated to what fits in one frame of the max payload.
        let mut room_budget = self.config.max_payload as usize - 2;
        let rooms: Vec<(&str, u32)> = self
            .rooms
            .iter_live()
            .map(|r| (r.name.as_str(), r.members.len() as u32))
            .take_while(|(name, _)| fits(&mut room_budget, 2 + name.len() + 4))
            .collect();
        encode_into(&mut self.frame, &ServerMessage::RoomList(rooms));
        self.sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn list_users(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::LIST_USERS, "");
        }
        if self.cluster.is_some() {
            return self.cluster_list_users(t, room);
        }
        let Some(id) = self.rooms.find(room) else {
            return self.error(t, ErrorCode::NotInRoom, code::LIST_USERS, "no such room");
        };
        let r = self.rooms.get(id);
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + r.name.len());
        let members = &self.members;
        let nicks: Vec<&str> = r
            .members
            .iter()
            .map(|&m| members.at(m).nick())
            .take_while(|nick| fits(&mut budget, 2 + nick.len()))
            .collect();
        encode_into(
            &mut self.frame,
            &ServerMessage::UserList {
                room: &r.name,
                nicks,
            },
        );
        self.sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn send_stats(&mut self, t: Token, now: Instant) {
        let stats = self.stats_list(now);
        encode_into(&mut self.frame, &ServerMessage::StatsReply(stats));
        self.sessions.reply(t, &self.frame);
    }

    /// What STATS reports, in its order (also rendered by `/metrics`).
    pub fn stats_list(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let st = &self.sessions.stats;
        let mut list = vec![
            (
                "uptime_ms",
                now.duration_since(self.started).as_millis() as u64,
            ),
            ("connections", self.sessions.len() as u64),
            ("accepted", st.accepted),
            ("sessions", self.nicks.len() as u64),
            ("rooms", self.rooms.live() as u64),
            ("rooms_lingering", self.rooms.lingering() as u64),
            ("rooms_lingering_bytes", self.rooms.lingering_bytes() as u64),
            ("rooms_evicted", self.rooms_evicted),
            ("frames_in", st.frames_in),
            ("frames_out", st.frames_out),
            ("bytes_in", st.bytes_in),
            ("bytes_out", st.bytes_out),
            ("poll_wakeups", st.poll_wakeups),
            ("events", st.events),
            ("kicked_slow", st.kicked_slow),
            ("kicked_timeout", st.kicked_timeout),
            ("rejected_full", st.rejected_full),
            ("rate_limited", st.rate_limited),
            ("messages", st.messages),
            ("history_bytes", self.history.held_bytes() as u64),
            ("history_messages", self.history.held_messages() as u64),
            ("history_evicted", self.history.evicted()),
            ("history_replies", st.history_replies),
        ];
        if let Some(c) = self.cluster.as_deref() {
            list.extend(c.stats_list());
        }
        list
    }

    // ----- shared by the commands and the reap stage -------------------

    fn check_text(&self, text: &str) -> Result<(), ErrorCode> {
        if text.is_empty() {
            Err(ErrorCode::Malformed)
        } else if text.len() > self.config.max_text {
            Err(ErrorCode::TextTooLong)
        } else {
            Ok(())
        }
    }

    /// Index in `t`'s membership list of the room `room`, if `t` is in it.
    fn member_of(&self, t: Token, room: &str) -> Option<usize> {
        let id = self.rooms.find(room)?;
        self.members.at(t).membership(id)
    }

    /// Sends the frame in `self.frame` (JOINED or LEFT) to the room, or
    /// only to `t` when the room is above the presence limit.
    fn cast_presence(&mut self, id: RoomId, t: Token) {
        let members = &self.rooms.get(id).members;
        if members.len() > self.config.presence_limit {
            self.sessions.deliver(t, &self.frame);
        } else {
            for &member in members {
                self.sessions.deliver(member, &self.frame);
            }
        }
    }

    /// `t` leaves the room at `index` of its membership list: LEFT to the
    /// room (the leaver included), then the member list shrinks by a
    /// swap-remove, fixing the slot of the member moved into the hole.
    pub(in crate::server) fn part(&mut self, t: Token, index: usize, reason: &str) {
        let me = self.members.at(t);
        let m = me.rooms()[index];
        let left = ServerMessage::Left {
            room: &self.rooms.get(m.room).name,
            nick: me.nick(),
            reason,
        };
        encode_into(&mut self.frame, &left);
        self.cast_presence(m.room, t);
        if let Some(moved) = self.rooms.leave(m.room, m.slot) {
            self.members.at_mut(moved).move_slot(m.room, m.slot);
        }
        self.members.at_mut(t).remove_room(index);
        if self.rooms.get(m.room).members.is_empty() {
            self.room_emptied(m.room);
        }
    }

    /// The last member left: the room goes now, or lingers unlisted for
    /// `--room-ttl-ms` with its epoch, seq and history, as the newest of
    /// the lingering rooms; past `--max-lingering-rooms` or
    /// `--lingering-memory` the oldest go (this one too, if it alone is
    /// over the bytes).
    fn room_emptied(&mut self, id: RoomId) {
        if self.config.room_ttl.is_zero() {
            self.drop_room(id);
            return;
        }
        let room = self.rooms.get(id);
        let charge = LINGER_OVERHEAD + room.name.len() + self.history.ring_bytes(room.ring);
        self.rooms.linger(id, Instant::now(), charge);
        while self.rooms.lingering() > self.config.max_lingering_rooms
            || self.rooms.lingering_bytes() > self.config.lingering_memory
        {
            let Some((oldest, _)) = self.rooms.oldest_lingering() else {
                break;
            };
            let gone = self.drop_room(oldest);
            self.rooms_evicted += 1;
            debug!(
                "room {} (epoch {:#x}) evicted: over the lingering rooms' bounds",
                gone.name, gone.epoch
            );
        }
    }

    /// Removes lingering rooms whose time is up: the oldest first, and
    /// only those, since all linger for the same TTL. At most
    /// `EXPIRE_BUDGET` per iteration: a burst of rooms made together
    /// expires together, and the rest are due at once next iteration
    /// (the poll timeout is then zero).
    pub(in crate::server) fn expire_rooms(&mut self, now: Instant) {
        for _ in 0..EXPIRE_BUDGET {
            let Some((id, since)) = self.rooms.oldest_lingering() else {
                break;
            };
            if since + self.config.room_ttl > now {
                break;
            }
            let gone = self.drop_room(id);
            // Only expiry shrinks what the rooms hold: an eviction makes
            // way for the room that just emptied, and a room removed at
            // once (no TTL) for the next one made, so trimming after those
            // would only fault the same pages back in.
            self.rooms_released += LINGER_OVERHEAD + gone.name.capacity();
            debug!("room {} (epoch {:#x}) expired", gone.name, gone.epoch);
        }
    }

    /// Removes room `id` (emptied, expired or evicted) and closes its
    /// history; returns it for the log.
    fn drop_room(&mut self, id: RoomId) -> Room {
        if self.cast_room == Some(id) {
            self.flush_cast();
        }
        let room = self.rooms.remove(id);
        self.history.close(room.ring);
        room
    }
}

/// Cuts `plan` so its frames hold at most `budget` bytes, keeping the
/// oldest messages of a resume or the newest of an epoch-0 request, and
/// says MORE when it cut (possibly down to no message, when the session's
/// output is already at its pause mark), but not below `floor` messages.
/// Each probe is O(1) (two offsets in
/// the ring), so a binary search over the count costs next to nothing.
fn trim_to_bytes(
    h: &History,
    ring: RingId,
    plan: &mut Plan,
    newest: bool,
    budget: usize,
    floor: u64,
) {
    let bytes = |p: &Plan| {
        let (a, b) = h.frames(ring, p);
        a.len() + b.len()
    };
    let cut = |p: &Plan, count: u64| Plan {
        from_seq: if newest {
            p.from_seq + (p.count - count)
        } else {
            p.from_seq
        },
        count,
        status: p.status,
    };
    if plan.count <= floor || bytes(plan) <= budget {
        return;
    }
    let (mut lo, mut hi) = (floor, plan.count - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if bytes(&cut(plan, mid)) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    *plan = cut(plan, lo);
    if lo == 0 {
        plan.from_seq = 0;
    }
    plan.status |= history_status::MORE;
}

/// Takes `need` bytes from `budget` if they fit.
pub(in crate::server) fn fits(budget: &mut usize, need: usize) -> bool {
    match budget.checked_sub(need) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}
