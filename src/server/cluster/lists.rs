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
//! A refresh of LIST_ROOMS reads the rooms a page at a time
//! (`mc_rooms_page`, [`PAGE`] rooms per call), so no single call holds
//! Redis for long: with 9,000 rooms one read of all of them took Redis
//! 12-15 ms, and every other node's calls (a SAY) waited behind it.
//!
//! What is kept is bounded: one ROOM_LIST frame, and LIST_USERS frames
//! for at most [`USERS_MAX`] rooms and [`USERS_BYTES`] bytes (past them a
//! room's answer is used for the callers waiting on it and not kept).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mio::Token;

use crate::codec::{code, ErrorCode, ServerMessage};

use super::super::chat::Chat;
use super::events::fold;
use super::{text, Expect};
use crate::codec::resp::Value;

/// Rooms whose LIST_USERS answer a node keeps at once.
const USERS_MAX: usize = 1024;
/// Bytes of kept LIST_USERS frames.
const USERS_BYTES: usize = 4 * 1024 * 1024;
/// Rooms asked for per call of a LIST_ROOMS refresh (SSCAN's COUNT).
pub const PAGE: usize = 500;

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

/// The pages of a LIST_ROOMS refresh, until the last one or a full reply.
#[derive(Debug, Default)]
struct Acc {
    /// (name, members) in the order read, repeats dropped.
    rooms: Vec<(String, u32)>,
    /// Folded names read (SSCAN may return one twice).
    seen: HashSet<String>,
    /// Payload bytes left in the reply.
    budget: usize,
    /// The reply cannot take more: no further page is asked for.
    full: bool,
}

impl Acc {
    fn start(&mut self, budget: usize) {
        self.rooms.clear();
        self.seen.clear();
        self.budget = budget;
        self.full = false;
    }

    /// Adds one page's (name, members) pairs.
    fn add(&mut self, pairs: &[Value]) {
        for p in pairs.chunks(2) {
            let (Some(name), Some(n)) = (
                p.first().and_then(Value::as_bytes).and_then(text),
                p.get(1).and_then(Value::as_int),
            ) else {
                continue;
            };
            if self.full || self.seen.contains(&fold(name)) {
                continue;
            }
            // ROOM_LIST's count is a u16, its payload one frame.
            if self.rooms.len() >= u16::MAX as usize
                || !super::super::chat::handlers::queries::fits(
                    &mut self.budget,
                    2 + name.len() + 4,
                )
            {
                self.full = true;
                continue;
            }
            self.seen.insert(fold(name));
            self.rooms
                .push((name.to_owned(), u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }
}

/// The node's cache of LIST_ROOMS and LIST_USERS answers.
#[derive(Debug)]
pub(crate) struct Lists {
    /// `--cluster-list-ttl-ms`: how long an answer is served (zero: every
    /// caller reads the store, but concurrent callers still share a read).
    pub ttl: Duration,
    rooms: Entry,
    /// The LIST_ROOMS refresh in progress: the rooms read so far.
    acc: Acc,
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
            acc: Acc::default(),
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
        let budget = self.config.max_payload as usize - 2;
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
            c.lists.acc.start(budget);
            c.fcall(
                Expect::Rooms,
                "mc_rooms_page",
                &[b"0", PAGE.to_string().as_bytes()],
            );
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

    /// One page of a LIST_ROOMS refresh: the next page is asked for, or
    /// the reply goes to every caller waiting, and is kept.
    pub(crate) fn rooms_listed(&mut self, v: Result<Value, String>) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let page = v.as_ref().ok().and_then(Value::as_array);
        let cursor = page
            .and_then(|p| p.first())
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec);
        let (Some(page), Some(cursor)) = (page, cursor) else {
            let e = &mut c.lists.rooms;
            e.in_flight = false;
            let waiters = std::mem::take(&mut e.waiters);
            c.lists.acc.start(0);
            for (t, sid) in waiters {
                self.unavailable(t, sid, code::LIST_ROOMS);
            }
            return;
        };
        c.lists.acc.add(&page[1..]);
        if cursor != b"0" && !c.lists.acc.full {
            // An answer just came on the command link, so it is up: the
            // next page's loss with it is an error like any other.
            c.fcall(
                Expect::Rooms,
                "mc_rooms_page",
                &[&cursor, PAGE.to_string().as_bytes()],
            );
            return;
        }
        let acc = std::mem::take(&mut c.lists.acc);
        let rooms: Vec<(&str, u32)> = acc.rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let mut frame = Vec::new();
        ServerMessage::RoomList(rooms).encode(&mut frame);
        let e = &mut c.lists.rooms;
        e.in_flight = false;
        let waiters = std::mem::take(&mut e.waiters);
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
            .take_while(|nick| {
                super::super::chat::handlers::queries::fits(&mut budget, 2 + nick.len())
            })
            .collect();
        ServerMessage::UserList { room, nicks }.encode(&mut frame);
        frame
    }
}
