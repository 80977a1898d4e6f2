//! The commands that need the store, as a cluster node runs them. Each
//! starts where the standalone command reaches its state checks: the
//! frame was checked (layout, names, text) the same way, and what only
//! this node knows (is the session in the room, is the nick one of ours)
//! is still answered here. Then the request goes to Redis, and the
//! session waits for the answer, or for the event the request produced
//! (a JOIN's JOINED, a LEAVE's LEFT), which fixes its place in the room's
//! order. A SAY does not wait: its MESSAGE comes back as an event like
//! everyone else's, so the sender sees its own message in seq order too.

use crate::server::sessions::registry::Sessions;
use mio::Token;

use crate::codec::{code, history_status, NameKey, ServerMessage};

use super::super::history;
use super::super::rooms::RoomId;
use super::super::{encode_into, Chat};
use crate::codec::resp::Value;
use crate::server::cluster::{fold, Cluster, ClusterRoom, Expect, Waiter};

/// A HISTORY request sent to the store, for its answer.
#[derive(Debug)]
pub(crate) struct HistoryQuery {
    pub room: RoomId,
    pub epoch: u64,
    pub newest: u64,
    pub after: u64,
    pub cap: usize,
    pub status: u8,
    /// An epoch-0 request: read newest first, send oldest first.
    pub newest_first: bool,
}

impl Chat {
    /// Whether the store can take a request of about `size` bytes now;
    /// if not, `t` gets UNAVAILABLE.
    pub(super) fn store_ready(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        request: u16,
        size: usize,
    ) -> bool {
        let ok = self
            .cluster
            .as_deref()
            .is_some_and(|c| c.serving() && c.has_room_for(size + 256));
        if !ok {
            let sid = sessions.at(t).id();
            self.unavailable(sessions, t, sid, request);
        }
        ok
    }

    /// The session waits for the store's answer.
    pub(super) fn wait(&mut self, sessions: &mut Sessions, t: Token) {
        sessions.at_mut(t).set_waiting(true);
    }

    fn session_ids(&self, sessions: &Sessions, t: Token) -> (u64, String) {
        let s = sessions.at(t);
        (s.id(), s.id().to_string())
    }

    pub(crate) fn cluster_hello(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        version: u8,
        nick: &str,
        key: &NameKey,
    ) {
        if !self.store_ready(sessions, t, code::HELLO, nick.len()) {
            return;
        }
        let (sid, sid_s) = self.session_ids(sessions, t);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let (node, ttl) = (c.node.clone(), c.ttl.as_millis().to_string());
        c.fcall(
            Expect::Hello {
                t,
                sid,
                version,
                nick: nick.to_owned(),
            },
            "mc_hello",
            &[
                key.as_str().as_bytes(),
                nick.as_bytes(),
                node.as_bytes(),
                sid_s.as_bytes(),
                ttl.as_bytes(),
            ],
        );
        self.wait(sessions, t);
    }

    /// The room as this node knows it, made (and its channel subscribed)
    /// if it has none here yet. A new room's epoch is the one this node
    /// proposes if the room is new in the cluster too; the JOINED (or K)
    /// event says which one holds.
    pub(super) fn room_here(&mut self, room: &str) -> Option<RoomId> {
        if let Some(id) = self.rooms.find(room) {
            return Some(id);
        }
        let epoch = self.epochs.next_epoch();
        let ring = self.history.open();
        let id = self.rooms.create(room, epoch, ring);
        let c = self.cluster.as_deref_mut()?;
        let key = fold(room);
        c.subscribe(&key);
        c.rooms.insert(
            id,
            ClusterRoom {
                key,
                ..ClusterRoom::default()
            },
        );
        Some(id)
    }

    pub(crate) fn cluster_join(&mut self, sessions: &mut Sessions, t: Token, room: &str) {
        if !self.store_ready(sessions, t, code::JOIN, room.len() + 64) {
            return;
        }
        let sid = sessions.at(t).id();
        let Some(id) = self.room_here(room) else {
            return;
        };
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        let w = Waiter {
            t,
            sid,
            sent: cr.subscribed,
        };
        cr.joins.push(w);
        c.waits.insert(sid, id);
        if w.sent {
            self.send_join(sessions, id, w);
        }
        self.wait(sessions, t);
    }

    /// The JOIN call, once the room's subscription is confirmed: its
    /// JOINED event then cannot pass this node by.
    pub(crate) fn send_join(&mut self, sessions: &mut Sessions, id: RoomId, w: Waiter) {
        let Some(m) = self.live_member(sessions, w.t, w.sid) else {
            self.drop_join(sessions, id, w.sid);
            return;
        };
        let nick = m.nick().to_owned();
        let sub = m.account().map(str::to_owned);
        let room = self.rooms.get(id);
        let (name, epoch) = (room.name.clone(), room.epoch.to_string());
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if !c.cmd.is_up() {
            self.drop_join(sessions, id, w.sid);
            self.unavailable(sessions, w.t, w.sid, code::JOIN);
            return;
        }
        let Some(key) = c.rooms.get(&id).map(|r| r.key.clone()) else {
            return;
        };
        let (node, sid) = (c.node.clone(), w.sid.to_string());
        let nk = fold(&nick);
        let mut args: Vec<&[u8]> = vec![
            key.as_bytes(),
            name.as_bytes(),
            epoch.as_bytes(),
            nk.as_bytes(),
            nick.as_bytes(),
            node.as_bytes(),
            sid.as_bytes(),
        ];
        // An account's JOIN: its other sessions attach, on every node.
        if let Some(sub) = sub.as_deref() {
            args.push(sub.as_bytes());
        }
        let expect = Expect::Join {
            t: w.t,
            sid: w.sid,
            room: id,
        };
        c.fcall(expect, "mc_join", &args);
    }

    fn drop_join(&mut self, sessions: &mut Sessions, id: RoomId, sid: u64) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.waits.remove(&sid);
            if let Some(cr) = c.rooms.get_mut(&id) {
                cr.joins.retain(|w| w.sid != sid);
            }
        }
        self.forget_room_if_idle(sessions, id);
    }

    pub(crate) fn cluster_leave(&mut self, sessions: &mut Sessions, t: Token, index: usize) {
        if !self.store_ready(sessions, t, code::LEAVE, 128) {
            return;
        }
        let id = self.members.at(t).rooms()[index].room;
        let sid = sessions.at(t).id();
        if let Some(c) = self.cluster.as_deref_mut() {
            if let Some(cr) = c.rooms.get_mut(&id) {
                cr.leaves.push(Waiter { t, sid, sent: true });
                c.waits.insert(sid, id);
            }
        }
        self.send_leave(sessions, t, id, "", Expect::Leave { t, sid, room: id });
        self.wait(sessions, t);
    }

    /// The LEAVE call for `t` and room `id` (also when a session ends).
    fn send_leave(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
        reason: &str,
        expect: Expect,
    ) {
        let nick = self.members.at(t).nick().to_owned();
        let account = self.members.at(t).account().is_some();
        let sid = sessions.at(t).id().to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.rooms.get(&id).map(|r| r.key.clone()) else {
            return;
        };
        let (node, room_ttl) = (c.node.clone(), c.room_ttl.as_millis().to_string());
        let nk = fold(&nick);
        let mut args: Vec<&[u8]> = vec![
            key.as_bytes(),
            nk.as_bytes(),
            nick.as_bytes(),
            node.as_bytes(),
            sid.as_bytes(),
            reason.as_bytes(),
            room_ttl.as_bytes(),
        ];
        // Any session of an account leaves for it; the room's entry may
        // be another session's.
        if account {
            args.push(b"1");
        }
        c.fcall(expect, "mc_leave", &args);
    }

    /// A closing session leaves its rooms here at once (its token may be
    /// reused after this iteration) and in the store, whose LEFT events
    /// tell the others; its nick is given back. With the store out of
    /// reach, the resync does both later.
    pub(crate) fn cluster_close(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        reason: &str,
        registered: bool,
    ) {
        let sid = sessions.at(t).id();
        let available = self.cluster.as_deref().is_some_and(Cluster::available);
        // An account's session leaves nothing in the store by itself:
        // `mc_acct_bye` decides (the account may live on elsewhere).
        let account = self.members.at(t).account().is_some();
        if account {
            self.drop_attaches(sessions, sid);
        }
        // A JOIN or LEAVE still waiting for its event.
        let waiting = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.waits.remove(&sid));
        if let Some(id) = waiting {
            let mut sent_join = false;
            if let Some(cr) = self
                .cluster
                .as_deref_mut()
                .and_then(|c| c.rooms.get_mut(&id))
            {
                sent_join = cr.joins.iter().any(|w| w.sid == sid && w.sent);
                cr.joins.retain(|w| w.sid != sid);
                cr.leaves.retain(|w| w.sid != sid);
            }
            if sent_join && available && !account {
                self.send_leave(sessions, t, id, reason, Expect::Ignore("leave"));
            }
            self.forget_room_if_idle(sessions, id);
        }
        while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
            let id = self.members.at(t).rooms()[last].room;
            self.drop_member(t, last);
            if account {
                // Left (or not) with the account, below.
            } else if available {
                self.send_leave(sessions, t, id, reason, Expect::Ignore("leave"));
            } else {
                // Announced when the store is back, even if it came back
                // empty (then no sync would find the member to part).
                let nick = self.members.at(t).nick().to_owned();
                if let Some(c) = self.cluster.as_deref_mut() {
                    if let Some(key) = c.rooms.get(&id).map(|r| r.key.clone()) {
                        c.remember_gone(crate::server::cluster::Gone {
                            key,
                            nk: fold(&nick),
                            nick,
                            sid,
                            reason: reason.to_owned(),
                            tries: 0,
                        });
                    }
                }
            }
            self.forget_room_if_idle(sessions, id);
        }
        if registered && available {
            self.cluster_key_end(sessions, t);
            if account {
                self.cluster_account_bye(sessions, t, reason);
            }
        } else if registered && account {
            self.remember_account_bye(sessions, t, reason);
        }
        if registered {
            let nick = fold(self.members.at(t).nick());
            if let Some(c) = self.cluster.as_deref_mut() {
                c.sids.remove(&sid);
                c.claims.remove(&sid);
                c.renaming.remove(&sid);
                if available && !account {
                    c.bye(&nick, sid);
                }
            }
        }
    }

    pub(crate) fn cluster_say(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        index: usize,
        body: &str,
    ) {
        if !self.store_ready(sessions, t, code::SAY, body.len() + 128) {
            return;
        }
        sessions.stats.messages += 1;
        let (s, me) = (sessions.at(t), self.members.at(t));
        let (sid, id) = (s.id(), me.rooms()[index].room);
        let room = self.rooms.get(id);
        let epoch = room.epoch.to_string();
        let time = history::now_ms().to_string();
        let maxlen = self.config.history.to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.rooms.get(&id).map(|r| r.key.as_str()) else {
            return;
        };
        let key = key.to_owned();
        // Redis checks the sender's membership against its entry there.
        let (nk, member) = (fold(me.nick()), format!("{}\t{}\t{sid}", me.nick(), c.node));
        c.fcall(
            Expect::Say { t, sid, room: id },
            "mc_say",
            &[
                key.as_bytes(),
                epoch.as_bytes(),
                me.nick().as_bytes(),
                body.as_bytes(),
                time.as_bytes(),
                maxlen.as_bytes(),
                nk.as_bytes(),
                member.as_bytes(),
            ],
        );
    }

    pub(crate) fn cluster_whisper(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        nick: &str,
        body: &str,
    ) {
        if !self.store_ready(sessions, t, code::WHISPER, body.len() + 128) {
            return;
        }
        // A nick on this node needs no round trip (an account's sessions
        // may be on other nodes too: the store reaches them all).
        // (An account sender's sessions elsewhere see it sent: the store
        // tells them.)
        let local = NameKey::new(nick).and_then(|k| self.nicks.get(&k)).copied();
        let guests = |s: Token| {
            self.members.at(s).account().is_none() && self.members.at(t).account().is_none()
        };
        if let Some(target) = local.filter(|&s| guests(s)) {
            let from = self.members.at(t).nick();
            encode_into(
                &mut self.frame,
                &ServerMessage::WhisperFrom { from, text: body },
            );
            sessions.deliver(target, &self.frame);
            self.whisper_sent_here(sessions, t, nick, body);
            return;
        }
        self.whisper_sent_here(sessions, t, nick, body);
        let sid = sessions.at(t).id();
        let me = self.members.at(t);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let node = c.node.clone();
        let nk = fold(nick);
        let mut args: Vec<&[u8]> = vec![nk.as_bytes(), me.nick().as_bytes(), body.as_bytes()];
        if let Some(sub) = me.account() {
            args.extend([sub.as_bytes(), node.as_bytes()]);
        }
        c.fcall(Expect::Whisper { t, sid }, "mc_whisper", &args);
        self.wait(sessions, t);
    }

    pub(crate) fn cluster_nick(&mut self, sessions: &mut Sessions, t: Token, new: &str) {
        if !self.store_ready(sessions, t, code::NICK, 256) {
            return;
        }
        let me = self.members.at(t);
        let (sid, old) = (sessions.at(t).id(), me.nick().to_owned());
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let rooms: Vec<String> = me
            .rooms()
            .iter()
            .filter_map(|m| c.rooms.get(&m.room).map(|r| r.key.clone()))
            .collect();
        c.call_nick(t, sid, (&old, new), &rooms, None);
        self.wait(sessions, t);
    }

    /// HISTORY from the room's stream in Redis. The epoch check and an
    /// empty range need no round trip.
    pub(crate) fn cluster_history(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        index: usize,
        epoch: u64,
        after_seq: u64,
        limit: u16,
    ) {
        let (sid, m) = (sessions.at(t).id(), self.members.at(t).rooms()[index]);
        let room = self.rooms.get(m.room);
        let (room_epoch, newest) = (room.epoch, m.joined_at_seq);
        let reply_cap = self.config.history.clamp(1, u16::MAX as usize);
        // The server may cap any limit: one answer from the store holds at
        // most a batch.
        let cap = if limit == 0 {
            reply_cap
        } else {
            (limit as usize).min(reply_cap)
        }
        .min(crate::server::cluster::BATCH);
        let end = |chat: &mut Chat, sessions: &mut Sessions, status: u8| {
            let room = chat.rooms.get(m.room);
            encode_into(
                &mut chat.frame,
                &ServerMessage::HistoryEnd {
                    room: &room.name,
                    epoch: room.epoch,
                    newest,
                    status,
                },
            );
            sessions.reply(t, &chat.frame);
            sessions.stats.history_replies += 1;
        };
        if epoch != 0 && epoch != room_epoch {
            return end(self, sessions, history_status::NEW_EPOCH);
        }
        if epoch != 0 && after_seq >= newest {
            return end(self, sessions, 0);
        }
        if self.config.history == 0 {
            let status = if epoch != 0 { history_status::GAP } else { 0 };
            return end(self, sessions, status);
        }
        if !self.store_ready(sessions, t, code::HISTORY, 128) {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.rooms.get(&m.room).map(|r| r.key.clone()) else {
            return;
        };
        let stream = format!("{}r:{key}:s", c.prefix);
        let count = (cap + 1).to_string();
        let newest_first = epoch == 0;
        let top = format!("{newest}-0");
        let query = Expect::History {
            t,
            sid,
            room: m.room,
            epoch: room_epoch,
            newest,
            after: after_seq,
            cap,
            status: 0,
            newest_first,
        };
        if newest_first {
            c.call(
                query,
                &[
                    b"XREVRANGE",
                    stream.as_bytes(),
                    top.as_bytes(),
                    b"-",
                    b"COUNT",
                    count.as_bytes(),
                ],
            );
        } else {
            let start = format!("{}-0", after_seq + 1);
            c.call(
                query,
                &[
                    b"XRANGE",
                    stream.as_bytes(),
                    start.as_bytes(),
                    top.as_bytes(),
                    b"COUNT",
                    count.as_bytes(),
                ],
            );
        }
        self.wait(sessions, t);
    }

    // ----- answers the chat turns into frames ------------------------------

    /// HELLO's claim held: the session is registered here too.
    pub(crate) fn welcome(&mut self, sessions: &mut Sessions, t: Token, version: u8, nick: &str) {
        let Some(key) = NameKey::new(nick) else {
            return;
        };
        if !sessions.at(t).life().is_greeting() {
            return;
        }
        self.register(sessions, t, key, version, nick);
    }

    /// NICK's claim held: the nick index follows (NICK_CHANGED comes as
    /// an event, to this session and its rooms on every node).
    pub(crate) fn rename(&mut self, t: Token, new: &str) {
        let Some(key) = NameKey::new(new) else {
            return;
        };
        let old = self.members.at_mut(t).replace_nick(new);
        if let Some(old_key) = NameKey::new(&old) {
            self.nicks.remove(&old_key);
        }
        self.nicks.insert(key, t);
    }

    /// The held messages from the stream, then HISTORY_END: within the
    /// same byte budget as a standalone reply (what does not fit is
    /// "more"), nothing above the session's `last_seq`.
    pub(crate) fn history_from(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        q: &HistoryQuery,
        v: &Value,
    ) {
        let mut entries: Vec<(u64, u64, &str, &str)> = v
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(Cluster::stream_entry)
            .filter(|e| e.0 <= q.newest)
            .collect();
        let mut status = q.status;
        if entries.len() > q.cap {
            status |= history_status::MORE;
            entries.truncate(q.cap);
        }
        if q.newest_first {
            entries.reverse();
        } else if entries.first().is_none_or(|e| e.0 > q.after + 1) {
            status |= history_status::GAP;
        }
        let marks = sessions.marks();
        let pending = sessions.at(t).pending();
        let budget = (marks.max_outbuf / 4).min(marks.pause_above.saturating_sub(pending));
        let floor = usize::from(pending <= marks.resume_below);
        let Some(room) = self.rooms.get_incarnation(q.room, q.epoch) else {
            return;
        };
        let name = room.name.clone();
        let mut frames: Vec<u8> = Vec::new();
        let mut sizes: Vec<usize> = Vec::with_capacity(entries.len());
        for &(seq, time_ms, from, body) in &entries {
            let before = frames.len();
            ServerMessage::HistoryMessage {
                room: &name,
                seq,
                time_ms,
                from,
                text: body,
            }
            .encode(&mut frames);
            sizes.push(frames.len() - before);
        }
        // Keep the oldest of a resume, the newest of an epoch-0 request.
        let mut keep = sizes.len();
        let mut total: usize = sizes.iter().sum();
        let mut skip_bytes = 0;
        while keep > floor && total > budget {
            keep -= 1;
            if q.newest_first {
                let first = sizes[sizes.len() - keep - 1];
                skip_bytes += first;
                total -= first;
            } else {
                total -= sizes[keep];
            }
        }
        if keep < sizes.len() {
            status |= history_status::MORE;
        }
        let bytes = &frames[skip_bytes..skip_bytes + total];
        let s = sessions.at_mut(t);
        if s.life().muted() {
            return;
        }
        s.append(bytes, keep as u64);
        encode_into(
            &mut self.frame,
            &ServerMessage::HistoryEnd {
                room: &name,
                epoch: q.epoch,
                newest: q.newest,
                status,
            },
        );
        let s = sessions.at_mut(t);
        s.append(&self.frame, 1);
        sessions.stats.frames_out += keep as u64 + 1;
        sessions.stats.history_replies += 1;
        sessions.queue_flush(t);
    }
}
