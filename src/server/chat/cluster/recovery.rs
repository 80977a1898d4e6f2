//! Links coming and going, the cluster's timer, and the node's recovery
//! from faults: rebuilding what Redis held once both links are back (or
//! when the store lost it), fencing a node that could not renew its
//! liveness and registering it anew, nick claims restored by the
//! heartbeat and the later of two clashing sessions renamed, rooms
//! re-created meanwhile, and leaves remembered during an outage
//! announced when the store is back.

use crate::server::sessions::registry::Sessions;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;

use crate::codec::{NameKey, ServerMessage};

use super::super::rooms::RoomId;
use super::super::{encode_into, Chat};
use super::answers::claim_time;
use crate::codec::resp::Value;
use crate::server::cluster::link::Change;
use crate::server::cluster::{fold, num, text, Cluster, Expect, Gone, Waiter, TICK};

impl Chat {
    pub(super) fn on_link_change(
        &mut self,
        sessions: &mut Sessions,
        sub: bool,
        change: Change,
        now: Instant,
    ) {
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
                    self.sub_lost(sessions);
                } else {
                    let lost = c.take_in_flight();
                    for r in c.rooms.values_mut() {
                        r.fill_in_flight = false;
                    }
                    for expect in lost {
                        self.answer(sessions, expect, Err("link lost".into()));
                    }
                }
            }
        }
        self.resync_if_ready(sessions, now);
        if let Some(c) = self.cluster.as_deref_mut() {
            c.log_availability();
        }
    }

    /// The subscriber link went down: no room's events arrive until it is
    /// back, so JOINs and LEAVEs waiting for theirs get UNAVAILABLE (what
    /// they did in the store is set right by the resync).
    fn sub_lost(&mut self, sessions: &mut Sessions) {
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
            self.unavailable(sessions, w.t, w.sid, request);
        }
        let ids: Vec<RoomId> = self.cluster_rooms();
        for id in ids {
            self.forget_room_if_idle(sessions, id);
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
    fn resync_if_ready(&mut self, sessions: &mut Sessions, _now: Instant) {
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
                let nick = self.members.at(m).nick();
                let nk = fold(nick);
                entries.push(format!("{key}\t{nk}"));
                args.extend([nk, nick.to_owned(), sessions.at(m).id().to_string()]);
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
            if sessions.get(t).is_some_and(|s| s.id() == sid) {
                nicks.push(fold(self.members.at(t).nick()));
            }
        }
        // A HELLO or NICK whose claim is in flight has its nick in the
        // store (ahead of the sync) but no session here yet: left out,
        // the sync would drop it from this node's nicks, no heartbeat
        // would find a clash over it, and its session would keep a nick
        // that a live session elsewhere holds.
        for f in &c.in_flight {
            match &f.expect {
                Expect::Hello { nick, .. } => nicks.push(fold(nick)),
                Expect::Nick { new, .. } => nicks.push(fold(new)),
                Expect::Account(crate::server::cluster::accounts::AccountExpect::Hello {
                    nick,
                    ..
                }) => nicks.push(fold(nick)),
                _ => {}
            }
        }
        let sids: Vec<u64> = c.sids.keys().copied().collect();
        // Accounts' sessions before the claims: a claim two of them share
        // is not a clash.
        self.send_account_restores(sessions);
        self.send_claims(sessions, &sids);
        // Account sessions that ended meanwhile, before the sync would
        // part their accounts' rooms as this node's.
        self.send_account_byes(true);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // Leaves the store missed, announced before the sync would part
        // them as "connection lost" (or find nothing to part).
        let gone: Vec<crate::server::cluster::Gone> = c.gone.drain(..).collect();
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
        self.moderation_resync();
    }

    /// The cluster's timer: reconnects, stall checks, the heartbeat.
    pub fn cluster_tick(&mut self, sessions: &mut Sessions, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        // A link whose read budget ran out is read on, like a session
        // carried over.
        if c.sub.has_more() {
            self.on_link_ready(sessions, true, false, now);
        }
        if self.cluster.as_deref().is_some_and(|c| c.cmd.has_more()) {
            self.on_link_ready(sessions, false, false, now);
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
                self.on_link_change(sessions, sub, change, now);
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
        self.send_held_joins(sessions);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
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
            self.resync_if_ready(sessions, now);
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
            self.resync_if_ready(sessions, now);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.available() && now >= c.next_alive {
            c.next_alive = now + c.ttl / 3;
            c.alive();
            let gone: Vec<crate::server::cluster::Gone> = c.gone.drain(..).collect();
            send_gone(c, gone);
        }
    }

    /// The store held a JOIN off while it recovers (`mc_join` answered
    /// RECOVERING): it goes again at the next tick, still waiting.
    pub(super) fn join_again_later(&mut self, room: RoomId, sid: u64) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if let Some(w) = c
            .rooms
            .get_mut(&room)
            .and_then(|r| r.joins.iter_mut().find(|w| w.sid == sid))
        {
            w.sent = false;
        }
    }

    /// JOINs held off by the store, in rooms this node listens to.
    fn send_held_joins(&mut self, sessions: &mut Sessions) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut held: Vec<(RoomId, Waiter)> = Vec::new();
        for (&id, r) in c.rooms.iter_mut().filter(|(_, r)| r.subscribed) {
            for w in r.joins.iter_mut().filter(|w| !w.sent) {
                w.sent = true;
                held.push((id, *w));
            }
        }
        for (id, w) in held {
            self.send_join(sessions, id, w);
        }
    }

    /// The nick claims of local sessions `sids` again (`mc_claim`), with
    /// the time each claimed its nick: the answer names the ones that
    /// lost a clash.
    pub(crate) fn send_claims(&mut self, sessions: &mut Sessions, sids: &[u64]) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let mut claims: Vec<String> = Vec::new();
        for sid in sids {
            let Some(&t) = c.sids.get(sid) else { continue };
            if sessions.get(t).is_none_or(|s| s.id() != *sid) {
                continue;
            }
            let nick = self.members.at(t).nick();
            let at = c.claims.get(sid).copied().unwrap_or(0);
            claims.extend([fold(nick), sid.to_string(), nick.to_owned(), at.to_string()]);
        }
        let (node, ttl) = (c.node.clone(), c.ttl.as_millis().to_string());
        for chunk in claims.chunks(4 * crate::server::cluster::RESTORE_CHUNK) {
            let mut args: Vec<&[u8]> = vec![node.as_bytes(), ttl.as_bytes()];
            args.extend(chunk.iter().map(|a| a.as_bytes()));
            c.fcall(Expect::Claim, "mc_claim", &args);
        }
    }

    /// Renames local session `sid` after it lost a clash of nicks: as if
    /// it had sent NICK, to its nick, `-` and four hex digits. `tries`
    /// so far; one rename at a time per session.
    pub(crate) fn rename_after_clash(&mut self, sessions: &mut Sessions, sid: u64, tries: u8) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(&t) = c.sids.get(&sid) else { return };
        let Some(s) = sessions.get(t).filter(|s| s.id() == sid) else {
            return;
        };
        // An account's nick cannot change: it is the later claim of a
        // clash between accounts (its own sessions share theirs).
        if tries == 0 && self.members.at(t).account().is_some() {
            c.renaming.remove(&sid);
            sessions.cut(
                t,
                crate::codec::ErrorCode::NickInUse,
                0,
                "another account holds this nick",
            );
            return;
        }
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
        let m = self.members.at(t);
        let old = m.nick().to_owned();
        let new = c.clash_nick(&old);
        let rooms: Vec<String> = m
            .rooms()
            .iter()
            .filter_map(|m| c.rooms.get(&m.room).map(|r| r.key.clone()))
            .collect();
        info!("cluster: nick {old} was claimed earlier by a live session elsewhere: renaming this one to {new}");
        c.call_nick(t, sid, (&old, &new), &rooms, Some(tries));
    }

    /// The answer to a rename after a clash: the nick index follows (the
    /// NICK_CHANGED comes as an event), or another suffix is tried.
    pub(super) fn renamed_after_clash(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        sid: u64,
        new: &str,
        tries: u8,
        v: Result<Value, String>,
    ) {
        let live = sessions.get_live(t, sid).is_some();
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
            Ok(None) if live && tries + 1 < crate::server::cluster::RENAME_TRIES => {
                self.rename_after_clash(sessions, sid, tries + 1);
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

    /// The answer to `mc_claim`: the sessions here that lost a clash of
    /// nicks, renamed.
    pub(super) fn claimed(&mut self, sessions: &mut Sessions, v: Result<Value, String>) {
        match v {
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
                    self.rename_after_clash(sessions, sid, 0);
                }
            }
            Err(e) => warn!("cluster: putting nicks back: {e}"),
        }
    }

    /// The heartbeat's answer: the liveness renewed, and whether the store
    /// still knows this node and its nicks.
    pub(super) fn alive_answered(
        &mut self,
        sessions: &mut Sessions,
        sent: Instant,
        v: Result<Value, String>,
    ) {
        let Ok(v) = v else { return };
        let parts = v.as_array().unwrap_or_default();
        let known = parts.get(1).and_then(Value::as_int);
        if let Some(c) = self.cluster.as_deref_mut() {
            c.renewed = c.renewed.max(sent);
        }
        if known == Some(0) {
            self.store_forgot_us(sessions);
            return;
        }
        // Nicks the store no longer has as this node's: claimed
        // again (a clash renames the later of two).
        let lost: Vec<u64> = parts
            .iter()
            .skip(2)
            .filter_map(|x| x.as_bytes().and_then(text))
            .filter_map(|nk| NameKey::new(nk).and_then(|k| self.nicks.get(&k).copied()))
            .filter_map(|t| sessions.get(t).map(|s| s.id()))
            .collect();
        if !lost.is_empty() {
            warn!(
                "cluster: Redis lost the nick claims of {} session(s) here: claiming them again",
                lost.len()
            );
            self.send_claims(sessions, &lost);
        }
    }

    /// The rebuild's last call answered: registered again (unfenced).
    pub(super) fn synced(&mut self, sent: Instant, v: Result<Value, String>) {
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
        self.send_account_byes(false);
    }

    /// The answer to `mc_gone`: the leaves nobody heard are tried again.
    pub(super) fn gone_answered(&mut self, sent: Vec<Gone>, v: Result<Value, String>) {
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
                if g.tries < crate::server::cluster::GONE_TRIES {
                    let mut g = g.clone();
                    g.tries += 1;
                    c.remember_gone(g);
                }
            }
        }
    }

    /// A leave the store had lost, told to this node alone (`mc_gone`,
    /// or a rejoin of the nick): "G", the room's key, then the room's
    /// LEFT event, handled in the room's order.
    pub(super) fn told_left(&mut self, sessions: &mut Sessions, payload: &[u8]) {
        let Some(f) = crate::server::cluster::split_fields(payload, 3) else {
            return;
        };
        let (Some(key), Some(c)) = (text(f[1]), self.cluster.as_deref()) else {
            return;
        };
        if let Some(id) = self.rooms.find(key).filter(|id| c.rooms.contains_key(id)) {
            self.room_event(sessions, id, f[2]);
        }
    }

    /// The answer to `mc_restore`: the epoch the store holds for the room.
    pub(super) fn restored(
        &mut self,
        sessions: &mut Sessions,
        room: RoomId,
        epoch: u64,
        v: Result<Value, String>,
    ) {
        match v {
            Ok(v) => {
                let held = v.as_bytes().and_then(num);
                if held.is_some_and(|e| e != epoch) {
                    self.incarnation_gone(sessions, room, epoch);
                }
            }
            Err(e) => warn!("cluster: restoring a room: {e}"),
        }
    }

    /// The store lost this node's state while the links stayed up (a
    /// FLUSHALL, an eviction, a stall longer than the liveness TTL that
    /// got it reaped): rebuild it, as after a reconnect.
    pub(super) fn store_forgot_us(&mut self, sessions: &mut Sessions) {
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
        self.resync_if_ready(sessions, Instant::now());
    }

    /// The room was re-created in the store while this node could not
    /// reach it: its members here are in an incarnation that no longer
    /// exists, whose seqs the new one would repeat. They leave it (LEFT,
    /// to each alone) and may JOIN the new one, with its own epoch.
    fn incarnation_gone(&mut self, sessions: &mut Sessions, id: RoomId, epoch: u64) {
        if self.rooms.get_incarnation(id, epoch).is_none() {
            return;
        }
        warn!(
            "cluster: room {} was re-created while this node could not reach Redis: \
             its members here leave the old incarnation",
            self.rooms.get(id).name
        );
        self.flush_cast(sessions);
        let members = self.rooms.get(id).members.clone();
        for t in members {
            let room = self.rooms.get(id);
            encode_into(
                &mut self.frame,
                &ServerMessage::Left {
                    room: &room.name,
                    nick: self.members.at(t).nick(),
                    reason: "room re-created while the cluster was unreachable",
                },
            );
            sessions.deliver(t, &self.frame);
            if let Some(index) = self.members.at(t).membership(id) {
                self.drop_member(t, index);
            }
        }
        self.forget_room_if_idle(sessions, id);
    }
}

/// Announces leaves the store missed (`mc_gone`), a chunk per call. The
/// store keeps each one it had lost long enough for every try (one per
/// heartbeat) and for a rejoin meanwhile to tell it first.
fn send_gone(c: &mut Cluster, gone: Vec<crate::server::cluster::Gone>) {
    if gone.is_empty() || !c.cmd.is_up() {
        for g in gone {
            c.remember_gone(g);
        }
        return;
    }
    let (node, room_ttl) = (c.node.clone(), c.room_ttl.as_millis().to_string());
    let window = (c.ttl * (u32::from(crate::server::cluster::GONE_TRIES) + 3) / 3)
        .as_millis()
        .to_string();
    let mut calls: Vec<(Vec<crate::server::cluster::Gone>, Vec<Vec<u8>>)> = Vec::new();
    for chunk in gone.chunks(crate::server::cluster::RESTORE_CHUNK) {
        let mut args: Vec<Vec<u8>> = vec![
            node.clone().into_bytes(),
            room_ttl.clone().into_bytes(),
            window.clone().into_bytes(),
        ];
        for g in chunk {
            args.extend([
                g.key.clone().into_bytes(),
                g.nk.clone().into_bytes(),
                g.nick.clone().into_bytes(),
                g.sid.to_string().into_bytes(),
                g.reason.clone().into_bytes(),
            ]);
        }
        calls.push((chunk.to_vec(), args));
    }
    for (chunk, args) in calls {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.fcall(Expect::Gone(chunk), "mc_gone", &args);
    }
}
