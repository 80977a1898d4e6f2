//! LIST_ROOMS and LIST_USERS on a cluster node: answered from a per-node
//! cache of the store's last answer, refreshed at most once per
//! `--cluster-list-ttl-ms`.
//!
//! Both read state that grows with the cluster (every room, every member
//! of a room), so each read costs Redis in proportion to it; asked by
//! every caller, that cost grows with the callers too, and a few
//! thousand rooms with a dozen sessions listing them keep Redis busy for
//! everyone (issue 18). Here the node keeps the reply frame, encoded
//! once, and hands it to every caller within the interval; callers that
//! come while a refresh is in flight wait for that refresh, so one call
//! to Redis answers all of them. The price: an answer may be up to the
//! interval old (docs/PROTOCOL.md says so).
//!
//! What is kept is bounded: one ROOM_LIST frame, and LIST_USERS frames
//! for at most [`USERS_MAX`] rooms and [`USERS_BYTES`] bytes (past them a
//! room's answer is used for the callers waiting on it and not kept).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Token;

use crate::protocol::{code, ErrorCode, ServerMessage};

use super::super::chat::Chat;
use super::events::fold;
use super::resp::Value;
use super::{text, Expect};

/// Rooms whose LIST_USERS answer a node keeps at once.
const USERS_MAX: usize = 1024;
/// Bytes of kept LIST_USERS frames.
const USERS_BYTES: usize = 4 * 1024 * 1024;

/// One cached answer and the callers waiting for its refresh.
#[derive(Debug, Default)]
struct Entry {
    /// The reply frame, encoded once for every caller.
    frame: Vec<u8>,
    /// When the refresh that produced `frame` was sent (so the answer is
    /// never older than that); `None` until one came back.
    at: Option<Instant>,
    /// A refresh is in flight: new callers join `waiters`.
    in_flight: bool,
    /// When the refresh in flight was sent.
    sent: Option<Instant>,
    /// Callers waiting for the refresh in flight, by token and session id.
    waiters: Vec<(Token, u64)>,
}

impl Entry {
    fn fresh(&self, now: Instant, ttl: Duration) -> bool {
        self.at
            .is_some_and(|at| now.saturating_duration_since(at) < ttl)
    }
}

/// The node's cache of LIST_ROOMS and LIST_USERS answers.
#[derive(Debug)]
pub(crate) struct Lists {
    /// `--cluster-list-ttl-ms`: how long an answer is served (zero: every
    /// caller reads the store, but concurrent callers still share a read).
    pub ttl: Duration,
    rooms: Entry,
    /// By folded room name.
    users: HashMap<String, Entry>,
    users_bytes: usize,
    /// Reads of the store for LIST_ROOMS (STATS `cluster_list_refreshes`).
    pub refreshes: u64,
    /// Reads of the store for LIST_USERS (STATS `cluster_users_refreshes`).
    pub users_refreshes: u64,
}

impl Lists {
    pub(crate) fn new(ttl: Duration) -> Lists {
        Lists {
            ttl,
            rooms: Entry::default(),
            users: HashMap::new(),
            users_bytes: 0,
            refreshes: 0,
            users_refreshes: 0,
        }
    }

    /// Forgets the LIST_USERS answers that expired and wait for nobody
    /// (the cluster's tick): bounded by [`USERS_MAX`] per call.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let ttl = self.ttl;
        let mut freed = 0;
        self.users.retain(|_, e| {
            let keep = e.in_flight || e.fresh(now, ttl);
            if !keep {
                freed += e.frame.len();
            }
            keep
        });
        self.users_bytes -= freed;
    }
}

impl Chat {
    pub(crate) fn cluster_list_rooms(&mut self, t: Token) {
        if !self.store_ready(t, code::LIST_ROOMS, 64) {
            return;
        }
        let sid = self.sessions.at(t).id();
        let now = Instant::now();
        // The smallest entry is 2 + 2 + 4 bytes, and ROOM_LIST's count is
        // a u16: more never fit one reply.
        let max = (self.config.max_payload as usize / 8)
            .min(u16::MAX as usize)
            .to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let e = &mut c.lists.rooms;
        if e.fresh(now, c.lists.ttl) {
            let frame = std::mem::take(&mut e.frame);
            self.flush_cast();
            self.sessions.reply(t, &frame);
            if let Some(c) = self.cluster.as_deref_mut() {
                c.lists.rooms.frame = frame;
            }
            return;
        }
        e.waiters.push((t, sid));
        if !e.in_flight {
            e.in_flight = true;
            e.sent = Some(now);
            c.lists.refreshes += 1;
            c.fcall(Expect::Rooms, "mc_rooms", &[max.as_bytes()]);
        }
        self.wait(t);
    }

    pub(crate) fn cluster_list_users(&mut self, t: Token, room: &str) {
        if !self.store_ready(t, code::LIST_USERS, 128) {
            return;
        }
        let sid = self.sessions.at(t).id();
        let now = Instant::now();
        let key = fold(room);
        let max = (self.config.max_payload as usize / 3)
            .min(u16::MAX as usize)
            .to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let ttl = c.lists.ttl;
        if let Some(e) = c.lists.users.get_mut(&key) {
            if e.fresh(now, ttl) && !e.frame.is_empty() {
                let frame = std::mem::take(&mut e.frame);
                self.flush_cast();
                self.sessions.reply(t, &frame);
                if let Some(e) = self
                    .cluster
                    .as_deref_mut()
                    .and_then(|c| c.lists.users.get_mut(&key))
                {
                    e.frame = frame;
                }
                return;
            }
            e.waiters.push((t, sid));
            if e.in_flight {
                return self.wait(t);
            }
            e.in_flight = true;
            e.sent = Some(now);
        } else {
            // A full cache still shares the read among concurrent callers:
            // the entry lives until its answer comes, then goes.
            c.lists.users.insert(
                key.clone(),
                Entry {
                    in_flight: true,
                    sent: Some(now),
                    waiters: vec![(t, sid)],
                    ..Entry::default()
                },
            );
        }
        c.lists.users_refreshes += 1;
        c.fcall(
            Expect::Users { key: key.clone() },
            "mc_users",
            &[key.as_bytes(), max.as_bytes()],
        );
        self.wait(t);
    }

    /// The store's LIST_ROOMS answer: to every caller waiting, and kept.
    pub(crate) fn rooms_listed(&mut self, v: Result<Value, String>) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let e = &mut c.lists.rooms;
        e.in_flight = false;
        let waiters = std::mem::take(&mut e.waiters);
        let v = match v {
            Ok(v) => v,
            Err(_) => {
                for (t, sid) in waiters {
                    self.unavailable(t, sid, code::LIST_ROOMS);
                }
                return;
            }
        };
        let frame = self.room_list_frame(&v);
        self.answer_waiters(&waiters, &frame);
        if let Some(c) = self.cluster.as_deref_mut() {
            let e = &mut c.lists.rooms;
            e.at = e.sent;
            e.frame = frame;
        }
    }

    /// The store's LIST_USERS answer for the room `key`: to every caller
    /// waiting, and kept if the cache has room.
    pub(crate) fn users_listed(&mut self, key: &str, v: Result<Value, String>) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(e) = c.lists.users.get_mut(key) else {
            return;
        };
        e.in_flight = false;
        let waiters = std::mem::take(&mut e.waiters);
        let v = match v {
            Ok(v) => v,
            Err(_) => {
                for (t, sid) in waiters {
                    self.unavailable(t, sid, code::LIST_USERS);
                }
                return;
            }
        };
        let frame = self.user_list_frame(&v);
        self.answer_waiters(&waiters, &frame);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let lists = &mut c.lists;
        let Some(e) = lists.users.get_mut(key) else {
            return;
        };
        let old = std::mem::take(&mut e.frame).len();
        lists.users_bytes -= old;
        let keep = lists.users.len() <= USERS_MAX
            && lists.users_bytes + frame.len() <= USERS_BYTES
            && !lists.ttl.is_zero();
        if keep {
            lists.users_bytes += frame.len();
            if let Some(e) = lists.users.get_mut(key) {
                e.at = e.sent;
                e.frame = frame;
            }
        } else {
            lists.users.remove(key);
        }
    }

    fn answer_waiters(&mut self, waiters: &[(Token, u64)], frame: &[u8]) {
        self.flush_cast();
        for &(t, sid) in waiters {
            if self.sessions.get_live(t, sid).is_some() {
                self.sessions.reply(t, frame);
            }
            self.wake(t, sid);
        }
    }

    /// ROOM_LIST from `mc_rooms`'s answer, cut to one frame.
    fn room_list_frame(&self, v: &Value) -> Vec<u8> {
        let items = v.as_array().unwrap_or_default();
        let mut budget = self.config.max_payload as usize - 2;
        let rooms: Vec<(&str, u32)> = items
            .chunks(2)
            .filter_map(|p| {
                let name = text(p.first()?.as_bytes()?)?;
                let n = p.get(1)?.as_int()?;
                Some((name, u32::try_from(n).unwrap_or(u32::MAX)))
            })
            .take(u16::MAX as usize)
            .take_while(|(name, _)| super::super::commands::fits(&mut budget, 2 + name.len() + 4))
            .collect();
        let mut frame = Vec::new();
        ServerMessage::RoomList(rooms).encode(&mut frame);
        frame
    }

    /// USER_LIST from `mc_users`'s answer, cut to one frame; NOT_IN_ROOM
    /// when the room does not exist.
    fn user_list_frame(&self, v: &Value) -> Vec<u8> {
        let mut frame = Vec::new();
        let room = v
            .as_array()
            .and_then(|items| Some((items, text(items.first()?.as_bytes()?)?)));
        let Some((items, room)) = room else {
            ServerMessage::error(ErrorCode::NotInRoom, code::LIST_USERS, "no such room")
                .encode(&mut frame);
            return frame;
        };
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + room.len());
        let nicks: Vec<&str> = items[1..]
            .iter()
            .filter_map(|n| text(n.as_bytes()?))
            .take(u16::MAX as usize)
            .take_while(|nick| super::super::commands::fits(&mut budget, 2 + nick.len()))
            .collect();
        ServerMessage::UserList { room, nicks }.encode(&mut frame);
        frame
    }
}
