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
//! for at most `USERS_MAX` rooms and `USERS_BYTES` bytes (past them a
//! room's answer is used for the callers waiting on it and not kept).
//!
//! This file holds the cache; what the chat does with it (asking, answering
//! the callers) is in `chat/cluster/lists.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mio::Token;

use super::{fold, text};
use crate::codec::frame::fits;
use crate::codec::resp::Value;

/// Rooms whose LIST_USERS answer a node keeps at once.
pub(crate) const USERS_MAX: usize = 1024;
/// Bytes of kept LIST_USERS frames.
pub(crate) const USERS_BYTES: usize = 4 * 1024 * 1024;
/// Rooms asked for per call of a LIST_ROOMS refresh (SSCAN's COUNT).
pub const PAGE: usize = 500;

/// One cached answer and the callers waiting for its refresh.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// The reply frame, encoded once for every caller.
    pub(crate) frame: Vec<u8>,
    /// LIST_USERS only: the frame version-3 callers get (operators marked
    /// `@`); `frame` is the older versions'.
    pub(crate) frame3: Vec<u8>,
    /// When the refresh that produced `frame` was sent (so the answer is
    /// never older than that); `None` until one came back.
    pub(crate) at: Option<Instant>,
    /// A refresh is in flight: new callers join `waiters`.
    pub(crate) in_flight: bool,
    /// When the refresh in flight was sent.
    pub(crate) sent: Option<Instant>,
    /// Callers waiting for the refresh in flight, by token and session id.
    pub(crate) waiters: Vec<(Token, u64)>,
}

impl Entry {
    /// The LIST_USERS frame a caller of that version gets.
    pub(crate) fn frame_for(&mut self, v3: bool) -> &mut Vec<u8> {
        if v3 {
            &mut self.frame3
        } else {
            &mut self.frame
        }
    }

    pub(crate) fn fresh(&self, now: Instant, ttl: Duration) -> bool {
        self.at
            .is_some_and(|at| now.saturating_duration_since(at) < ttl)
    }
}

/// The pages of a LIST_ROOMS refresh, until the last one or a full reply.
#[derive(Debug, Default)]
pub(crate) struct Acc {
    /// (name, members) in the order read, repeats dropped.
    pub(crate) rooms: Vec<(String, u32)>,
    /// Folded names read (SSCAN may return one twice).
    pub(crate) seen: HashSet<String>,
    /// Payload bytes left in the reply.
    pub(crate) budget: usize,
    /// The reply cannot take more: no further page is asked for.
    pub(crate) full: bool,
}

impl Acc {
    pub(crate) fn start(&mut self, budget: usize) {
        self.rooms.clear();
        self.seen.clear();
        self.budget = budget;
        self.full = false;
    }

    /// Adds one page's (name, members) pairs.
    pub(crate) fn add(&mut self, pairs: &[Value]) {
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
            if self.rooms.len() >= u16::MAX as usize || !fits(&mut self.budget, 2 + name.len() + 4)
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
    pub(crate) rooms: Entry,
    /// The LIST_ROOMS refresh in progress: the rooms read so far.
    pub(crate) acc: Acc,
    /// By folded room name.
    pub(crate) users: HashMap<String, Entry>,
    pub(crate) users_bytes: usize,
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
                freed += e.frame.len() + e.frame3.len();
            }
            keep
        });
        self.users_bytes -= freed;
    }
}
