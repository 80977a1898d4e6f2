//! What the node does with what Redis sends: answers on the command link
//! (in the order the calls went), events on the subscriber link (each
//! room's in seq order), links coming and going, and the cluster's timer.
//!
//! A room's events are delivered strictly in order. A MESSAGE whose seq
//! is not the next one, or a JOINED/LEFT that says messages came before it
//! that the node has not seen, starts a *fill*: the missing messages are
//! read from the room's stream, and the room's further events wait in
//! order until they are delivered. A member therefore never sees a gap
//! the store could have closed, a duplicate, or a seq going backwards.

use std::mem;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;

use crate::codec::{ErrorCode, NameKey, ServerMessage, VERSION_2};

use super::super::chat::{encode_into, Chat};
use super::super::rooms::RoomId;
use super::super::session::Membership;
use super::link::Change;
use super::{num, split_fields, text, Cluster, Expect, Waiter, HELD_EVENTS_MAX, TICK};
use crate::codec::resp::Value;

/// A fill's upper bound that means "everything after": after a
/// resubscription nothing says how far the room went meanwhile.
const OPEN_END: u64 = u64::MAX;

impl Chat {
    /// Readiness on one of the Redis links.
    pub fn on_link_ready(&mut self, sub: bool, writable: bool, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut values = Vec::new();
        let change = if sub {
            c.sub.on_ready(&c.registry, writable, &mut values, now)
        } else {
            c.cmd.on_ready(&c.registry, writable, &mut values, now)
        };
        self.now = now;
        for v in values {
            if sub {
                self.on_push(v);
            } else {
                self.on_answer(Ok(v));
            }
        }
        self.flush_cast();
        self.on_link_change(sub, change, now);
    }

    /// A clean shutdown's last word to the cluster (see
    /// [`Cluster::goodbye`]).
    pub fn leave_cluster(&mut self) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.goodbye();
        }
    }

    /// Writes both links' requests (the loop's flush stage).
    pub fn flush_links(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        for (sub, change) in c.flush(now) {
            self.on_link_change(sub, change, now);
        }
    }

    /// Sessions whose wait for the store ended while their input was
    /// paused: the loop reads them again.
    pub fn take_woken(&mut self) -> Vec<(Token, u64)> {
        mem::take(&mut self.woken)
    }

    /// Ends `t`'s wait for the store.
    pub(crate) fn wake(&mut self, t: Token, sid: u64) {
        if let Some(s) = self.sessions.get_live(t, sid) {
            if s.set_waiting(false) {
                self.woken.push((t, sid));
            }
        }
    }

    /// A request could not be served by the store: UNAVAILABLE, and the
    /// session's wait ends.
    pub(crate) fn unavailable(&mut self, t: Token, sid: u64, request: u16) {
        if self.sessions.get_live(t, sid).is_none() {
            return;
        }
        if let Some(c) = self.cluster.as_deref_mut() {
            c.stats.unavailable += 1;
        }
        self.error(t, ErrorCode::Unavailable, request, "");
        self.wake(t, sid);
    }

    fn on_link_change(&mut self, sub: bool, change: Change, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        match change {
            Change::None => return,
            Change::CameUp => {
                debug!(
                    "cluster: {} link up",
                    if sub { "subscriber" } else { "command" }
                );
                c.synced = false;
                if sub {
                    c.sub_ping = None;
                    c.subscribe_node_channels();
                    let keys: Vec<String> = c.rooms.values().map(|r| r.key.clone()).collect();
                    for key in keys {
                        c.subscribe(&key);
                    }
                } else {
                    c.select_and_load();
                }
            }
            Change::WentDown { why, was_up } => {
                c.synced = false;
                let link = if sub { "subscriber" } else { "command" };
                // One line per change of state, not one per attempt.
                if was_up {
                    c.stats.link_drops += 1;
                    warn!("cluster: {link} link to Redis lost ({why}); reconnecting");
                } else {
                    debug!("cluster: {link} link: reconnect failed ({why})");
                }
                if sub {
                    self.sub_lost();
                } else {
                    let lost = c.take_in_flight();
                    for r in c.rooms.values_mut() {
                        r.fill_in_flight = false;
                    }
                    for expect in lost {
                        self.answer(expect, Err("link lost".into()));
                    }
                }
            }
        }
        self.resync_if_ready(now);
        if let Some(c) = self.cluster.as_deref_mut() {
            c.log_availability();
        }
    }

    /// The subscriber link went down: no room's events arrive until it is
    /// back, so JOINs and LEAVEs waiting for theirs get UNAVAILABLE (what
    /// they did in the store is set right by the resync).
    fn sub_lost(&mut self) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut failed: Vec<(Waiter, u16)> = Vec::new();
        for r in c.rooms.values_mut() {
            r.subscribed = false;
            failed.extend(r.joins.drain(..).map(|w| (w, crate::codec::code::JOIN)));
            failed.extend(r.leaves.drain(..).map(|w| (w, crate::codec::code::LEAVE)));
        }
        for (w, _) in &failed {
            c.waits.remove(&w.sid);
        }
        for (w, request) in failed {
            self.unavailable(w.t, w.sid, request);
        }
        let ids: Vec<RoomId> = self.cluster_rooms();
        for id in ids {
            self.forget_room_if_idle(id);
        }
    }

    /// The local rooms the cluster keeps state for.
    fn cluster_rooms(&self) -> Vec<RoomId> {
        self.cluster
            .as_deref()
            .map(|c| c.rooms.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Once both links are up after a drop: put back in Redis what this
    /// node holds (Redis may have restarted empty, or forgotten what
    /// happened while the node could not reach it): each room with its
    /// epoch, seq and this node's members, this node's nicks, then drop
    /// what this node no longer has. Pipelined ahead of every later call,
    /// so those see the rebuilt state.
    fn resync_if_ready(&mut self, _now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.synced || !c.cmd.is_up() || !c.sub.is_up() {
            return;
        }
        c.synced = true;
        c.resyncing = true;
        // Registered first: no heartbeat elsewhere reaps this node between
        // the calls of its rebuild.
        c.register(false);
        let node = c.node.clone();
        let ttl = c.ttl.as_millis().to_string();
        let room_ttl = c.room_ttl.as_millis().to_string();
        let mut entries: Vec<String> = Vec::new();
        let ids: Vec<RoomId> = c.rooms.keys().copied().collect();
        for id in ids {
            let Some(cr) = c.rooms.get(&id) else { continue };
            if !cr.positioned {
                continue;
            }
            let key = cr.key.clone();
            let room = self.rooms.get(id);
            let (epoch, seq) = (room.epoch.to_string(), room.seq.to_string());
            let mut args: Vec<String> =
                vec![node.clone(), key.clone(), room.name.clone(), epoch, seq];
            for &m in &room.members {
                let s = self.sessions.at(m);
                let nk = fold(s.nick());
                entries.push(format!("{key}\t{nk}"));
                args.extend([nk, s.nick().to_owned(), s.id().to_string()]);
            }
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            c.fcall(
                Expect::Restore {
                    room: id,
                    epoch: room.epoch,
                },
                "mc_restore",
                &refs,
            );
        }
        let mut nicks: Vec<String> = Vec::new();
        for (&sid, &t) in &c.sids {
            if let Some(s) = self.sessions.get(t).filter(|s| s.id() == sid) {
                nicks.push(fold(s.nick()));
            }
        }
        let sids: Vec<u64> = c.sids.keys().copied().collect();
        self.send_claims(&sids);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // Leaves the store missed, announced before the sync would part
        // them as "connection lost" (or find nothing to part).
        let gone: Vec<super::Gone> = c.gone.drain(..).collect();
        send_gone(c, gone);
        let mut args: Vec<&[u8]> = vec![node.as_bytes(), ttl.as_bytes(), room_ttl.as_bytes()];
        args.extend(entries.iter().map(|e| e.as_bytes()));
        args.push(b"");
        args.extend(nicks.iter().map(|n| n.as_bytes()));
        c.fcall(
            Expect::Sync {
                sent: Instant::now(),
            },
            "mc_sync",
            &args,
        );
        c.alive();
        // Jumps found while the command link was down are filled now.
        let pending: Vec<RoomId> = c
            .rooms
            .iter()
            .filter(|(_, r)| r.filling && !r.fill_in_flight)
            .map(|(&id, _)| id)
            .collect();
        for id in pending {
            self.send_fill(id);
        }
    }

    /// The cluster's timer: reconnects, stall checks, the heartbeat.
    pub fn cluster_tick(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // A link whose read budget ran out is read on, like a session
        // carried over.
        if c.sub.has_more() {
            self.on_link_ready(true, false, now);
        }
        if self.cluster.as_deref().is_some_and(|c| c.cmd.has_more()) {
            self.on_link_ready(false, false, now);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // `--redis-timeout-ms` is checked at its own deadline (see
        // `Cluster::next_deadline`), not only at the tick.
        let (cmd_late, sub_late) = c.timed_out(now);
        for (sub, late) in [(false, cmd_late), (true, sub_late)] {
            let Some(c) = self.cluster.as_deref_mut() else {
                return;
            };
            if late {
                let why = c.timeout_reason();
                let link = if sub { &mut c.sub } else { &mut c.cmd };
                let change = link.down(&c.registry, now, why);
                self.on_link_change(sub, change, now);
            }
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if now < c.next_tick {
            return;
        }
        c.next_tick = now + TICK;
        c.lists.sweep(now);
        c.cmd.reconnect(&c.registry, now);
        c.sub.reconnect(&c.registry, now);
        if c.sub.is_up() && c.sub_ping.is_none() {
            c.sub.send(&[b"PING"]);
            c.sub_ping = Some(now);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // Self-fencing: a node that could not renew its liveness for
        // longer than its TTL may have been reaped (its members announced
        // LEFT, its nicks freed): it treats its entry as lost, refuses
        // requests, and registers anew, restoring its sessions' nicks and
        // memberships, as soon as Redis answers.
        if c.synced && !c.resyncing && !c.fenced && now.duration_since(c.renewed) > c.ttl {
            c.fenced = true;
            c.stats.fences += 1;
            warn!(
                "cluster: node {} could not renew its liveness in Redis for {} ms \
                 (--node-ttl-ms {}): its entry counts as lost; requests get UNAVAILABLE \
                 until it registers again",
                c.node,
                now.duration_since(c.renewed).as_millis(),
                c.ttl.as_millis()
            );
            c.synced = false;
            c.log_availability();
            self.resync_if_ready(now);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // Fenced and the last try to register again failed (Redis refused
        // it: out of memory, say): try again at the heartbeat's pace.
        let retry = c.fenced && !c.resyncing && c.cmd.is_up() && c.sub.is_up();
        if retry && now >= c.next_alive {
            c.next_alive = now + c.ttl / 3;
            c.synced = false;
            self.resync_if_ready(now);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.available() && now >= c.next_alive {
            c.next_alive = now + c.ttl / 3;
            c.alive();
            let gone: Vec<super::Gone> = c.gone.drain(..).collect();
            send_gone(c, gone);
        }
    }

    /// The nick claims of local sessions `sids` again (`mc_claim`), with
    /// the time each claimed its nick: the answer names the ones that
    /// lost a clash.
    pub(crate) fn send_claims(&mut self, sids: &[u64]) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut claims: Vec<String> = Vec::new();
        for sid in sids {
            let Some(&t) = c.sids.get(sid) else { continue };
            let Some(s) = self.sessions.get(t).filter(|s| s.id() == *sid) else {
                continue;
            };
            let at = c.claims.get(sid).copied().unwrap_or(0);
            claims.extend([
                fold(s.nick()),
                sid.to_string(),
                s.nick().to_owned(),
                at.to_string(),
            ]);
        }
        let (node, ttl) = (c.node.clone(), c.ttl.as_millis().to_string());
        for chunk in claims.chunks(4 * super::RESTORE_CHUNK) {
            let mut args: Vec<&[u8]> = vec![node.as_bytes(), ttl.as_bytes()];
            args.extend(chunk.iter().map(|a| a.as_bytes()));
            c.fcall(Expect::Claim, "mc_claim", &args);
        }
    }

    /// Renames local session `sid` after it lost a clash of nicks: as if
    /// it had sent NICK, to its nick, `-` and four hex digits. `tries`
    /// so far; one rename at a time per session.
    pub(crate) fn rename_after_clash(&mut self, sid: u64, tries: u8) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(&t) = c.sids.get(&sid) else { return };
        let Some(s) = self.sessions.get(t).filter(|s| s.id() == sid) else {
            return;
        };
        // A NICK (or a JOIN) of its own in flight would race the rename:
        // the next heartbeat finds the clash again.
        if tries == 0 && s.is_waiting() {
            return;
        }
        if tries == 0 {
            if !c.renaming.insert(sid) {
                return;
            }
            c.stats.clash_renames += 1;
        }
        if !c.cmd.is_up() {
            c.renaming.remove(&sid);
            return; // the rebuild claims the nick again
        }
        let old = s.nick().to_owned();
        let new = c.clash_nick(&old);
        let rooms: Vec<String> = s
            .rooms()
            .iter()
            .filter_map(|m| c.rooms.get(&m.room).map(|r| r.key.clone()))
            .collect();
        let (node, sid_s, ttl) = (
            c.node.clone(),
            sid.to_string(),
            c.ttl.as_millis().to_string(),
        );
        let was = c.claims.get(&sid).copied().unwrap_or(0).to_string();
        let (onk, nnk) = (fold(&old), fold(&new));
        let mut args: Vec<&[u8]> = vec![
            onk.as_bytes(),
            nnk.as_bytes(),
            old.as_bytes(),
            new.as_bytes(),
            node.as_bytes(),
            sid_s.as_bytes(),
            ttl.as_bytes(),
            was.as_bytes(),
        ];
        args.extend(rooms.iter().map(|r| r.as_bytes()));
        info!("cluster: nick {old} was claimed earlier by a live session elsewhere: renaming this one to {new}");
        c.fcall(
            Expect::Nick {
                t,
                sid,
                new: new.clone(),
                forced: Some(tries),
            },
            "mc_nick",
            &args,
        );
    }

    /// The answer to a rename after a clash: the nick index follows (the
    /// NICK_CHANGED comes as an event), or another suffix is tried.
    fn renamed_after_clash(
        &mut self,
        t: Token,
        sid: u64,
        new: &str,
        tries: u8,
        v: Result<Value, String>,
    ) {
        let live = self.sessions.get_live(t, sid).is_some();
        match v.as_ref().map(claim_time) {
            Ok(Some(at)) if live => {
                self.rename(t, new);
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.claims.insert(sid, at);
                    c.renaming.remove(&sid);
                }
            }
            Ok(Some(_)) => {
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.bye(&fold(new), sid);
                    c.renaming.remove(&sid);
                }
            }
            Ok(None) if live && tries + 1 < super::RENAME_TRIES => {
                self.rename_after_clash(sid, tries + 1);
            }
            _ => {
                // Given up for now (or the link went): the next heartbeat
                // finds the clash again.
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.renaming.remove(&sid);
                }
            }
        }
    }

    // ----- hooks for fuzzing and tests ---------------------------------

    /// Handles `v` as if the subscriber link had just read it, then fans
    /// out what it queued, as [`Chat::on_link_ready`] does. Exists for
    /// fuzzing and tests, with a [`Cluster::detached`] node.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn feed_push(&mut self, v: Value) {
        self.on_push(v);
        self.flush_cast();
    }

    /// Handles `v` as the command link's answer to the oldest call in
    /// flight (see [`Chat::feed_push`]). Exists for fuzzing and tests.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn feed_answer(&mut self, v: Value) {
        self.on_answer(Ok(v));
        self.flush_cast();
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
        })
    }

    /// Panics if the cluster's bookkeeping disagrees with itself or with
    /// the chat: each room it keeps is a local room under its key, every
    /// waiting JOIN or LEAVE is indexed by its session id and the other
    /// way round, held events only during a fill and counted exactly, and
    /// a room with local members is positioned. For fuzzing and tests.
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn check_cluster_invariants(&self) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        for (&id, cr) in &c.rooms {
            assert_eq!(
                self.rooms.find(&cr.key),
                Some(id),
                "a cluster room is local"
            );
            for w in cr.joins.iter().chain(&cr.leaves) {
                assert_eq!(c.waits.get(&w.sid), Some(&id), "a waiter is indexed");
            }
            assert!(
                cr.filling || cr.held.is_empty(),
                "events held only in a fill"
            );
            let held: usize = cr.held.iter().map(Vec::len).sum();
            assert_eq!(cr.held_bytes, held, "held bytes counted");
            if !self.rooms.get(id).members.is_empty() {
                assert!(cr.positioned, "a room with members is positioned");
            }
        }
        for room in self.rooms.iter().filter(|r| !r.members.is_empty()) {
            let id = self.rooms.find(&room.name);
            assert!(
                id.is_some_and(|id| c.rooms.contains_key(&id)),
                "a room with members is kept"
            );
        }
        for (sid, id) in &c.waits {
            let cr = c.rooms.get(id).expect("a wait is for a kept room");
            assert!(
                cr.joins.iter().chain(&cr.leaves).any(|w| w.sid == *sid),
                "an indexed wait has its waiter"
            );
        }
    }

    // ----- answers on the command link -----------------------------------

    fn on_answer(&mut self, v: Result<Value, String>) {
        let Some(expect) = self.cluster.as_deref_mut().and_then(Cluster::answered) else {
            warn!("cluster: an answer from Redis nobody asked for");
            return;
        };
        self.answer(expect, v);
    }

    /// One answer (or its loss with the link), for what it was for.
    fn answer(&mut self, expect: Expect, v: Result<Value, String>) {
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
                Ok(Some(at)) if self.sessions.get_live(t, sid).is_some() => {
                    self.welcome(t, version, &nick);
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.sids.insert(sid, t);
                        c.claims.insert(sid, at);
                    }
                    self.wake(t, sid);
                }
                Ok(Some(_)) => {
                    // Gone meanwhile: give the nick back.
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.bye(&fold(&nick), sid);
                    }
                }
                Ok(_) => {
                    if self.sessions.get_live(t, sid).is_some() {
                        self.error(t, ErrorCode::NickInUse, code::HELLO, "");
                        self.wake(t, sid);
                    }
                }
                Err(_) => self.unavailable(t, sid, code::HELLO),
            },
            Expect::Join { t, sid, room } => {
                if v.is_err() {
                    self.drop_waiter(room, sid);
                    self.unavailable(t, sid, code::JOIN);
                    self.forget_room_if_idle(room);
                }
            }
            Expect::Leave { t, sid, room } => match v.as_ref().map(Value::as_int) {
                // The store did not have it as a member (it lost it while
                // this node could not reach it): no LEFT event will come,
                // so the leave completes here.
                Ok(Some(0)) => {
                    self.drop_waiter(room, sid);
                    self.left_here(room, t, sid);
                }
                Ok(_) => {}
                Err(_) => {
                    self.drop_waiter(room, sid);
                    self.unavailable(t, sid, code::LEAVE);
                }
            },
            Expect::Say { t, sid, room } => {
                if v.as_ref().is_err_and(|e| e.starts_with("NOROOM")) {
                    self.store_forgot_us();
                }
                if v.as_ref().is_err_and(|e| e.starts_with("NOTMEMBER")) {
                    // Only members speak. A session this node still has in
                    // the room was lost by the store (a reap, a flush): it
                    // is put back, and announced JOINED if it was LEFT.
                    let live = self.sessions.get_live(t, sid);
                    if live.is_some_and(|s| s.membership(room).is_some()) {
                        self.store_forgot_us();
                    }
                    if self.sessions.get_live(t, sid).is_some() {
                        self.error(t, ErrorCode::NotInRoom, code::SAY, "");
                    }
                    return;
                }
                if v.is_err() {
                    // The session is not waiting: SAYs are pipelined.
                    if self.sessions.get_live(t, sid).is_some() {
                        if let Some(c) = self.cluster.as_deref_mut() {
                            c.stats.unavailable += 1;
                        }
                        self.error(t, ErrorCode::Unavailable, code::SAY, "");
                    }
                }
            }
            Expect::Whisper { t, sid } => match v.as_ref().map(Value::as_int) {
                Ok(Some(0)) => {
                    if self.sessions.get_live(t, sid).is_some() {
                        self.error(t, ErrorCode::NoSuchNick, code::WHISPER, "");
                    }
                    self.wake(t, sid);
                }
                Ok(_) => self.wake(t, sid),
                Err(_) => self.unavailable(t, sid, code::WHISPER),
            },
            Expect::Nick {
                t,
                sid,
                new,
                forced: Some(tries),
            } => self.renamed_after_clash(t, sid, &new, tries, v),
            Expect::Nick {
                t,
                sid,
                new,
                forced: None,
            } => match v.as_ref().map(claim_time) {
                Ok(Some(at)) if self.sessions.get_live(t, sid).is_some() => {
                    self.rename(t, &new);
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.claims.insert(sid, at);
                    }
                    self.wake(t, sid);
                }
                Ok(Some(_)) => {
                    // Gone meanwhile (its close gave back the old nick):
                    // give back the new one too.
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.bye(&fold(&new), sid);
                    }
                }
                Ok(_) => {
                    if self.sessions.get_live(t, sid).is_some() {
                        self.error(t, ErrorCode::NickInUse, code::NICK, "");
                    }
                    self.wake(t, sid);
                }
                Err(_) => self.unavailable(t, sid, code::NICK),
            },
            Expect::Rooms => self.rooms_listed(v),
            Expect::Users { key } => self.users_listed(&key, v),
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
                    if self.sessions.get_live(t, sid).is_some() {
                        let q = super::requests::HistoryQuery {
                            room,
                            epoch,
                            newest,
                            after,
                            cap,
                            status,
                            newest_first,
                        };
                        self.history_from(t, &q, &v);
                    }
                    self.wake(t, sid);
                }
                Err(_) => self.unavailable(t, sid, code::HISTORY),
            },
            Expect::Fill { room, epoch, upto } => self.filled(room, epoch, upto, v),
            Expect::Claim => match v {
                Ok(v) => {
                    let losers: Vec<u64> = v
                        .as_array()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|x| x.as_bytes().and_then(num))
                        .collect();
                    if !losers.is_empty() {
                        warn!(
                            "cluster: {} session(s) here claimed a nick after a live session \
                             elsewhere during a fault: renamed",
                            losers.len()
                        );
                    }
                    for sid in losers {
                        self.rename_after_clash(sid, 0);
                    }
                }
                Err(e) => warn!("cluster: putting nicks back: {e}"),
            },
            Expect::Alive { sent } => {
                let Ok(v) = v else { return };
                let parts = v.as_array().unwrap_or_default();
                let known = parts.get(1).and_then(Value::as_int);
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.renewed = c.renewed.max(sent);
                }
                if known == Some(0) {
                    self.store_forgot_us();
                    return;
                }
                // Nicks the store no longer has as this node's: claimed
                // again (a clash renames the later of two).
                let lost: Vec<u64> = parts
                    .iter()
                    .skip(2)
                    .filter_map(|x| x.as_bytes().and_then(text))
                    .filter_map(|nk| NameKey::new(nk).and_then(|k| self.nicks.get(&k).copied()))
                    .filter_map(|t| self.sessions.get(t).map(|s| s.id()))
                    .collect();
                if !lost.is_empty() {
                    warn!(
                        "cluster: Redis lost the nick claims of {} session(s) here: claiming them again",
                        lost.len()
                    );
                    self.send_claims(&lost);
                }
            }
            Expect::Sync { sent } => {
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                c.resyncing = false;
                match v {
                    Ok(_) => {
                        c.renewed = c.renewed.max(sent);
                        if c.fenced {
                            c.fenced = false;
                            info!("cluster: node {} registered again in Redis", c.node);
                        }
                    }
                    Err(e) => warn!("cluster: sync: {e}"),
                }
                c.log_availability();
            }
            Expect::Gone(sent) => {
                let again: Vec<usize> = match &v {
                    Ok(v) => v
                        .as_array()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|x| x.as_int())
                        .map(|i| i as usize)
                        .collect(),
                    // Lost with the link: all of them wait for the resync.
                    Err(_) => (0..sent.len()).collect(),
                };
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                for i in again {
                    if let Some(g) = sent.get(i) {
                        if g.tries < super::GONE_TRIES {
                            let mut g = g.clone();
                            g.tries += 1;
                            c.remember_gone(g);
                        }
                    }
                }
            }
            Expect::Restore { room, epoch } => match v {
                Ok(v) => {
                    let held = v.as_bytes().and_then(num);
                    if held.is_some_and(|e| e != epoch) {
                        self.incarnation_gone(room, epoch);
                    }
                }
                Err(e) => warn!("cluster: restoring a room: {e}"),
            },
        }
    }

    /// The room was re-created in the store while this node could not
    /// reach it: its members here are in an incarnation that no longer
    /// exists, whose seqs the new one would repeat. They leave it (LEFT,
    /// to each alone) and may JOIN the new one, with its own epoch.
    fn incarnation_gone(&mut self, id: RoomId, epoch: u64) {
        if self.rooms.get_incarnation(id, epoch).is_none() {
            return;
        }
        warn!(
            "cluster: room {} was re-created while this node could not reach Redis: \
             its members here leave the old incarnation",
            self.rooms.get(id).name
        );
        self.flush_cast();
        let members = self.rooms.get(id).members.clone();
        for t in members {
            let room = self.rooms.get(id);
            encode_into(
                &mut self.frame,
                &ServerMessage::Left {
                    room: &room.name,
                    nick: self.sessions.at(t).nick(),
                    reason: "room re-created while the cluster was unreachable",
                },
            );
            self.sessions.deliver(t, &self.frame);
            if let Some(index) = self.sessions.at(t).membership(id) {
                self.drop_member(t, index);
            }
        }
        self.forget_room_if_idle(id);
    }

    /// A LEAVE the store had nothing to do for: LEFT to the leaver (and
    /// the room's members here, under the presence limit), and it is out.
    fn left_here(&mut self, id: RoomId, t: Token, sid: u64) {
        let Some(index) = self
            .sessions
            .get_live(t, sid)
            .and_then(|s| s.membership(id))
        else {
            return self.wake(t, sid);
        };
        let room = self.rooms.get(id);
        encode_into(
            &mut self.frame,
            &ServerMessage::Left {
                room: &room.name,
                nick: self.sessions.at(t).nick(),
                reason: "",
            },
        );
        if room.members.len() > self.config.presence_limit {
            self.sessions.deliver(t, &self.frame);
        } else {
            self.send_members(id);
        }
        self.drop_member(t, index);
        self.wake(t, sid);
        self.forget_room_if_idle(id);
    }

    /// The store lost this node's state while the links stayed up (a
    /// FLUSHALL, an eviction, a stall longer than the liveness TTL that
    /// got it reaped): rebuild it, as after a reconnect.
    fn store_forgot_us(&mut self) {
        if let Some(c) = self.cluster.as_deref_mut() {
            // A rebuild in flight already covers what failed before it.
            if c.resyncing {
                return;
            }
            if c.synced {
                warn!("cluster: Redis lost this node's state: rebuilding it");
                c.synced = false;
            }
        }
        self.resync_if_ready(Instant::now());
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

    // ----- events on the subscriber link ---------------------------------

    fn on_push(&mut self, v: Value) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(parts) = v.as_array() else {
            // +PONG outside subscribed mode.
            c.sub_ping = None;
            return;
        };
        let kind = parts.first().and_then(Value::as_bytes).unwrap_or_default();
        let channel = parts.get(1).and_then(Value::as_bytes).unwrap_or_default();
        match kind {
            b"message" => {
                c.stats.events += 1;
                if let Some(payload) = parts.get(2).and_then(Value::as_bytes) {
                    self.on_event(channel, payload);
                }
            }
            b"subscribe" => self.on_subscribed(channel),
            b"pong" => c.sub_ping = None,
            _ => {}
        }
    }

    fn on_event(&mut self, channel: &[u8], payload: &[u8]) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        if let Some(key) = c.channel_room(channel) {
            if let Some(id) = self.rooms.find(key) {
                if c.rooms.contains_key(&id) {
                    self.room_event(id, payload);
                }
            }
        } else if channel.ends_with(b"nickch") {
            self.flush_cast();
            self.nick_event(payload);
        } else {
            self.flush_cast();
            self.whisper_event(payload);
        }
    }

    fn on_subscribed(&mut self, channel: &[u8]) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(key) = c.channel_room(channel) else {
            return;
        };
        let Some(id) = self.rooms.find(key) else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.subscribed = true;
        let positioned = cr.positioned;
        let unsent: Vec<Waiter> = cr.joins.iter().filter(|w| !w.sent).copied().collect();
        for w in &mut cr.joins {
            w.sent = true;
        }
        if positioned {
            // Back after a drop: whatever the room said meanwhile.
            self.start_fill(id, OPEN_END);
        }
        for w in unsent {
            self.send_join(id, w);
        }
    }

    /// One event of a room, in the room's order.
    fn room_event(&mut self, id: RoomId, payload: &[u8]) {
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let Some(cr) = c.rooms.get(&id) else {
            return;
        };
        if cr.filling {
            self.hold_event(id, payload);
            return;
        }
        let positioned = cr.positioned;
        match payload.first() {
            Some(b'M') => {
                let Some(f) = split_fields(payload, 6) else {
                    return;
                };
                let (Some(seq), Some(from), Some(body)) = (num(f[2]), text(f[4]), text(f[5]))
                else {
                    return;
                };
                if !positioned {
                    return;
                }
                let last = self.rooms.get(id).seq;
                if seq <= last {
                    return;
                }
                if seq > last + 1 {
                    self.start_fill(id, seq - 1);
                    self.hold_event(id, payload);
                    return;
                }
                self.cast_message(id, seq, from, body);
            }
            Some(b'J') => {
                self.flush_cast();
                let Some(f) = split_fields(payload, 8) else {
                    return;
                };
                let (Some(epoch), Some(seq), Some(first), Some(count), Some(sid), Some(nick)) = (
                    num(f[1]),
                    num(f[2]),
                    num(f[3]),
                    num(f[4]),
                    num(f[6]),
                    text(f[7]),
                ) else {
                    return;
                };
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                let Some(cr) = c.rooms.get_mut(&id) else {
                    return;
                };
                let mine = f[5] == c.node.as_bytes();
                let waiter = mine
                    .then(|| cr.joins.iter().position(|w| w.sid == sid))
                    .flatten();
                if !positioned {
                    if waiter.is_none() {
                        return;
                    }
                    cr.positioned = true;
                    let room = self.rooms.get_mut(id);
                    room.epoch = epoch;
                    room.seq = seq;
                } else if seq > self.rooms.get(id).seq {
                    self.start_fill(id, seq);
                    self.hold_event(id, payload);
                    return;
                }
                let limit = self.config.presence_limit as u64;
                match waiter {
                    Some(i) => {
                        let Some(c) = self.cluster.as_deref_mut() else {
                            return;
                        };
                        let Some(cr) = c.rooms.get_mut(&id) else {
                            return;
                        };
                        let w = cr.joins.remove(i);
                        c.waits.remove(&w.sid);
                        self.joined_here(id, w, seq, first, count > limit);
                    }
                    None if count <= limit => {
                        // A member of this node put back after a reap
                        // announced it LEFT: the others see JOINED; it
                        // never left, as far as it knows.
                        let back = mine.then(|| self.local_member(id, sid)).flatten();
                        let room = self.rooms.get(id);
                        encode_into(
                            &mut self.frame,
                            &ServerMessage::Joined {
                                room: &room.name,
                                nick,
                            },
                        );
                        self.send_members_but(id, back);
                    }
                    None => {}
                }
            }
            Some(b'L') => {
                self.flush_cast();
                let Some(f) = split_fields(payload, 7) else {
                    return;
                };
                let (Some(seq), Some(before), Some(sid), Some(nick), Some(reason)) =
                    (num(f[1]), num(f[2]), num(f[4]), text(f[5]), text(f[6]))
                else {
                    return;
                };
                if !positioned {
                    return;
                }
                if seq > self.rooms.get(id).seq {
                    self.start_fill(id, seq);
                    self.hold_event(id, payload);
                    return;
                }
                let Some(c) = self.cluster.as_deref_mut() else {
                    return;
                };
                let here = if f[3] == c.node.as_bytes() {
                    c.sids.get(&sid).copied().filter(|&t| {
                        self.sessions
                            .get(t)
                            .is_some_and(|s| s.id() == sid && s.membership(id).is_some())
                    })
                } else {
                    None
                };
                // Its own LEAVE's event, or the store parting it (a node
                // reaped): a wait for another room's JOIN is not this
                // one's to end.
                let leaving = here.is_some() && c.waits.get(&sid) == Some(&id);
                if leaving {
                    if let Some(cr) = c.rooms.get_mut(&id) {
                        cr.leaves.retain(|w| w.sid != sid);
                    }
                    c.waits.remove(&sid);
                }
                let room = self.rooms.get(id);
                encode_into(
                    &mut self.frame,
                    &ServerMessage::Left {
                        room: &room.name,
                        nick,
                        reason,
                    },
                );
                let crowded = before > self.config.presence_limit as u64;
                if let (Some(t), false) = (here, leaving) {
                    // The store parted a live session of this node (a
                    // reap after this node could not renew its liveness):
                    // the others see LEFT, the session stays in, and the
                    // rebuild puts it back (JOINED again).
                    if !crowded {
                        self.send_members_but(id, Some(t));
                    }
                    self.store_forgot_us();
                    return;
                }
                match here {
                    Some(t) => {
                        if crowded {
                            self.sessions.deliver(t, &self.frame);
                        } else {
                            self.send_members(id);
                        }
                        if let Some(index) = self.sessions.at(t).membership(id) {
                            self.drop_member(t, index);
                        }
                        if leaving {
                            self.wake(t, sid);
                        }
                    }
                    None if !crowded => self.send_members(id),
                    None => {}
                }
                self.forget_room_if_idle(id);
            }
            _ => debug!("cluster: an event of an unknown kind"),
        }
    }

    /// A MESSAGE in seq order: batched like a run of local SAYs, fanned
    /// out once per room per batch.
    fn cast_message(&mut self, id: RoomId, seq: u64, from: &str, body: &str) {
        if self.cast_room != Some(id) {
            self.flush_cast();
            self.cast_room = Some(id);
        }
        let room = self.rooms.get_mut(id);
        room.seq = seq;
        ServerMessage::Message {
            room: &room.name,
            seq,
            from,
            text: body,
        }
        .encode(&mut self.cast);
        self.cast_frames += 1;
        if self.cast.len() >= super::super::commands::cast_limit(self.sessions.marks().max_outbuf) {
            self.flush_cast();
        }
    }

    /// The local session `sid` if it is a member of room `id`.
    fn local_member(&self, id: RoomId, sid: u64) -> Option<Token> {
        let t = *self.cluster.as_deref()?.sids.get(&sid)?;
        self.sessions
            .get(t)
            .filter(|s| s.id() == sid && s.membership(id).is_some())
            .map(|_| t)
    }

    /// The frame in `self.frame` to every local member of the room but
    /// `but`.
    fn send_members_but(&mut self, id: RoomId, but: Option<Token>) {
        for &member in &self.rooms.get(id).members {
            if Some(member) != but {
                self.sessions.deliver(member, &self.frame);
            }
        }
    }

    /// The frame in `self.frame` to every local member of the room.
    fn send_members(&mut self, id: RoomId) {
        for &member in &self.rooms.get(id).members {
            self.sessions.deliver(member, &self.frame);
        }
    }

    /// A local session's JOINED came back: it is a member from here on,
    /// gets JOINED (with the room, unless crowded) and, in version 2, the
    /// room's state at exactly this point of its order.
    fn joined_here(&mut self, id: RoomId, w: Waiter, seq: u64, first: u64, crowded: bool) {
        if self.sessions.get_live(w.t, w.sid).is_none() {
            return; // gone meanwhile: its LEAVE went at the reap
        }
        // A fill after a resubscription may have delivered past the
        // JOINED's place: the member's state starts where this node is.
        let seq = seq.max(self.rooms.get(id).seq);
        let slot = self.rooms.join(id, w.t);
        let room = self.rooms.get(id);
        let s = self.sessions.at_mut(w.t);
        s.add_room(Membership {
            room: id,
            slot,
            joined_at_seq: seq,
        });
        encode_into(
            &mut self.frame,
            &ServerMessage::Joined {
                room: &room.name,
                nick: s.nick(),
            },
        );
        if crowded {
            self.sessions.deliver(w.t, &self.frame);
        } else {
            self.send_members(id);
        }
        if self.sessions.at(w.t).version() >= VERSION_2 {
            let room = self.rooms.get(id);
            encode_into(
                &mut self.frame,
                &ServerMessage::RoomState {
                    room: &room.name,
                    epoch: room.epoch,
                    last_seq: seq,
                    first_held: first,
                },
            );
            self.sessions.reply(w.t, &self.frame);
        }
        self.wake(w.t, w.sid);
    }

    /// Removes `t` from the room at `index` of its memberships, here only.
    pub(crate) fn drop_member(&mut self, t: Token, index: usize) {
        let m = self.sessions.at(t).rooms()[index];
        if let Some(moved) = self.rooms.leave(m.room, m.slot) {
            self.sessions.at_mut(moved).move_slot(m.room, m.slot);
        }
        self.sessions.at_mut(t).remove_room(index);
    }

    /// Nobody here is in the room or on the way in or out: stop its
    /// events and forget it (the store keeps it for the other nodes).
    pub(crate) fn forget_room_if_idle(&mut self, id: RoomId) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get(&id) else {
            return;
        };
        if !cr.is_idle(self.rooms.get(id).members.len()) || cr.fill_in_flight {
            return;
        }
        let key = cr.key.clone();
        c.rooms.remove(&id);
        c.unsubscribe(&key);
        if self.cast_room == Some(id) {
            self.flush_cast();
        }
        let room = self.rooms.remove(id);
        self.history.close(room.ring);
    }

    fn nick_event(&mut self, payload: &[u8]) {
        let Some(f) = split_fields(payload, 6) else {
            return;
        };
        let (Some(sid), Some(rooms), Some(old), Some(new)) =
            (num(f[2]), text(f[3]), text(f[4]), text(f[5]))
        else {
            return;
        };
        let Some(c) = self.cluster.as_deref() else {
            return;
        };
        let sender = (f[1] == c.node.as_bytes())
            .then(|| c.sids.get(&sid).copied())
            .flatten()
            .filter(|&t| self.sessions.get(t).is_some_and(|s| s.id() == sid));
        encode_into(&mut self.frame, &ServerMessage::NickChanged { old, new });
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some(t) = sender {
            self.sessions.at_mut(t).stamp(stamp);
            self.sessions.deliver(t, &self.frame);
        }
        for key in rooms.split(' ').filter(|k| !k.is_empty()) {
            let Some(id) = self.rooms.find(key) else {
                continue;
            };
            for &member in &self.rooms.get(id).members {
                if self.sessions.at_mut(member).stamp(stamp) {
                    self.sessions.deliver(member, &self.frame);
                }
            }
        }
    }

    fn whisper_event(&mut self, payload: &[u8]) {
        if payload.first() == Some(&b'R') {
            // Another node's session claimed this nick first: ours is
            // renamed, if it still has the nick.
            let Some(f) = split_fields(payload, 3) else {
                return;
            };
            let (Some(sid), Some(nick)) = (num(f[1]), text(f[2])) else {
                return;
            };
            let t = self
                .cluster
                .as_deref()
                .and_then(|c| c.sids.get(&sid).copied());
            if t.and_then(|t| self.sessions.get(t))
                .is_some_and(|s| s.id() == sid && fold(s.nick()) == fold(nick))
            {
                self.rename_after_clash(sid, 0);
            }
            return;
        }
        let Some(f) = split_fields(payload, 4) else {
            return;
        };
        let (Some(sid), Some(from), Some(body)) = (num(f[1]), text(f[2]), text(f[3])) else {
            return;
        };
        let Some(&t) = self.cluster.as_deref().and_then(|c| c.sids.get(&sid)) else {
            return;
        };
        if self.sessions.get(t).is_some_and(|s| s.id() == sid) {
            encode_into(
                &mut self.frame,
                &ServerMessage::WhisperFrom { from, text: body },
            );
            self.sessions.deliver(t, &self.frame);
        }
    }

    // ----- filling a jump in seq -------------------------------------------

    fn hold_event(&mut self, id: RoomId, payload: &[u8]) {
        if let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        {
            hold(cr, payload);
        }
    }

    /// Starts filling the room's seq up to `upto` from its stream; its
    /// events wait meanwhile.
    fn start_fill(&mut self, id: RoomId, upto: u64) {
        self.flush_cast();
        let Some(cr) = self
            .cluster
            .as_deref_mut()
            .and_then(|c| c.rooms.get_mut(&id))
        else {
            return;
        };
        cr.filling = true;
        cr.fill_upto = upto;
        self.send_fill(id);
    }

    fn send_fill(&mut self, id: RoomId) {
        let room = self.rooms.get(id);
        // Seqs come from the store: one at the very top must not overflow.
        let (from, epoch) = (room.seq.saturating_add(1), room.epoch);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        if !c.cmd.is_up() {
            return; // the resync sends it
        }
        let upto = cr.fill_upto;
        cr.fill_in_flight = true;
        let stream = format!("{}r:{}:s", c.prefix, cr.key);
        let start = format!("{from}-0");
        let end = if upto == OPEN_END {
            "+".to_string()
        } else {
            format!("{upto}-0")
        };
        c.stats.fills += 1;
        let count = super::BATCH.to_string();
        c.call(
            Expect::Fill {
                room: id,
                epoch,
                upto,
            },
            &[
                b"XRANGE",
                stream.as_bytes(),
                start.as_bytes(),
                end.as_bytes(),
                b"COUNT",
                count.as_bytes(),
            ],
        );
    }

    /// The messages of a jump: delivered in order, what the stream no
    /// longer holds skipped (members see that gap), then the events that
    /// waited.
    fn filled(&mut self, id: RoomId, epoch: u64, upto: u64, v: Result<Value, String>) {
        if self.rooms.get_incarnation(id, epoch).is_none() {
            return;
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.fill_in_flight = false;
        let v = match v {
            Ok(v) => v,
            Err(e) if c.cmd.is_up() => {
                // Redis refused (not a lost link): do not ask forever.
                warn!("cluster: filling a room's messages: {e}");
                Value::Array(Vec::new())
            }
            Err(_) => return, // link lost: the resync asks again
        };
        let entries = v.as_array().unwrap_or_default();
        let full = entries.len() >= super::BATCH;
        // Seqs are assigned to messages only, so a seq the stream skips is
        // a message Redis already trimmed (the stream is capped at
        // --history): members see that gap, and it is counted.
        let mut skipped = 0u64;
        for e in entries {
            let Some((seq, _time, from, body)) = Cluster::stream_entry(e) else {
                continue;
            };
            let last = self.rooms.get(id).seq;
            if seq > last && seq <= upto {
                skipped = skipped.saturating_add(seq - last - 1);
                self.cast_message(id, seq, from, body);
            }
        }
        if let Some(c) = self.cluster.as_deref_mut() {
            c.stats.lost = c.stats.lost.saturating_add(skipped);
        }
        self.flush_cast();
        if full && self.rooms.get(id).seq < upto {
            // One batch at a time: ask for the next.
            return self.send_fill(id);
        }
        let room = self.rooms.get_mut(id);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if upto != OPEN_END && room.seq < upto {
            c.stats.lost = c.stats.lost.saturating_add(upto - room.seq);
            debug!(
                "cluster: room {}: seq {}..={upto} no longer held",
                room.name,
                room.seq + 1
            );
            room.seq = upto;
        }
        let Some(cr) = c.rooms.get_mut(&id) else {
            return;
        };
        cr.filling = false;
        cr.held_bytes = 0;
        let held = mem::take(&mut cr.held);
        for payload in held {
            self.room_event(id, &payload);
        }
        self.flush_cast();
        self.forget_room_if_idle(id);
    }
}

/// Announces leaves the store missed (`mc_gone`), a chunk per call.
fn send_gone(c: &mut Cluster, gone: Vec<super::Gone>) {
    if gone.is_empty() || !c.cmd.is_up() {
        for g in gone {
            c.remember_gone(g);
        }
        return;
    }
    let (node, room_ttl) = (c.node.clone(), c.room_ttl.as_millis().to_string());
    // Rooms this node listens to: its own subscription hears a LEFT too.
    let here: std::collections::HashSet<&str> = c.rooms.values().map(|r| r.key.as_str()).collect();
    let mut calls: Vec<(Vec<super::Gone>, Vec<Vec<u8>>)> = Vec::new();
    for chunk in gone.chunks(super::RESTORE_CHUNK) {
        let mut args: Vec<Vec<u8>> = vec![node.clone().into_bytes(), room_ttl.clone().into_bytes()];
        for g in chunk {
            let listens = if here.contains(g.key.as_str()) {
                "1"
            } else {
                "0"
            };
            args.extend([
                g.key.clone().into_bytes(),
                g.nk.clone().into_bytes(),
                g.nick.clone().into_bytes(),
                g.sid.to_string().into_bytes(),
                g.reason.clone().into_bytes(),
                listens.as_bytes().to_vec(),
            ]);
        }
        calls.push((chunk.to_vec(), args));
    }
    for (chunk, args) in calls {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.fcall(Expect::Gone(chunk), "mc_gone", &args);
    }
}

/// A claim's time in an answer (a decimal string), or `None` for 0 (the
/// nick is taken).
fn claim_time(v: &Value) -> Option<u64> {
    v.as_bytes().and_then(num).filter(|&at| at > 0)
}

/// Keeps an event that came during a fill, within a bound.
fn hold(cr: &mut super::ClusterRoom, payload: &[u8]) {
    if cr.held_bytes + payload.len() > HELD_EVENTS_MAX {
        debug!("cluster: room {}: events dropped during a fill", cr.key);
        return;
    }
    cr.held_bytes += payload.len();
    cr.held.push_back(payload.to_vec());
}

/// The folded form of a nick or room name (keys in the store).
pub(crate) fn fold(name: &str) -> String {
    NameKey::new(name)
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|| name.to_ascii_lowercase())
}
