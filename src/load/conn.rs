//! One load connection's state: its stage, its output, its loss tracker,
//! its publisher schedule and a reconnect in progress. What it does with
//! what the server sends is elsewhere, one file per target
//! ([`muxchat`](super::muxchat), [`redis`](super::redis)), with the
//! resume steps in [`resume`](super::resume); they all depend on this file
//! and it on none of them. It holds a version-3 session's
//! [`Exact`](super::exactly::Exact), which is handed a connection's parts,
//! never the connection, so the dependency runs one way.

use std::time::Instant;

use super::stats::{SeqTracker, Stamp};
use super::transport::LoadStream;
use crate::net::OutBuf;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// connect() issued, not yet established.
    Connecting,
    /// HELLO and JOIN sent, own JOINED not yet seen.
    Registering,
    /// In its room: receives (and maybe publishes).
    Ready,
    /// Closed, by either side.
    Dead,
}

/// One connection.
pub struct Conn {
    /// Global id: connection `id` joins room `id % rooms`.
    pub id: usize,
    /// Its room's index.
    pub room: usize,
    /// Its nick.
    pub nick: String,
    /// The socket (`None` once dead or if it never opened).
    pub stream: Option<LoadStream>,
    /// Where it is in its life.
    pub stage: Stage,
    /// When connect() was issued.
    pub opened: Instant,
    /// Frames queued and not yet taken by the kernel.
    pub out: OutBuf,
    /// In the worker's flush list this iteration.
    pub flush_queued: bool,
    /// The bytes of an unfinished frame, parked here between reads while
    /// the worker's one frame reader serves other connections (less than
    /// one frame; empty almost always).
    pub partial: Vec<u8>,
    /// The room's seq as this connection saw it (muxchat). Inline, not
    /// behind a pointer: it is touched for every message delivered.
    pub tracker: SeqTracker,
    /// Redis: one tracker per publisher of the room, fed with the count
    /// in its stamps (Redis numbers nothing itself).
    pub streams: Vec<SeqTracker>,
    /// Messages received, all trackers together (paces the window).
    pub received: u64,
    /// Publisher state, for connections `0..publishers`.
    pub publisher: Option<Publisher>,
    /// Became ready at some point (so it counts as a receiver).
    pub was_ready: bool,
    /// Its room's epoch from the first ROOM_STATE (version 2; 0 before).
    pub epoch: u64,
    /// A reconnect in progress (`--reconnect-every`).
    pub resume: Option<Box<Resume>>,
    /// Reconnects so far (each registers a fresh nick).
    pub reconnects: u32,
    /// `--token-key`: the version-3 session (token, key, msg_ids).
    pub exact: Option<Box<super::exactly::Exact>>,
}

/// Where a resuming connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Half-closed, reading until the daemon closes (publishers).
    Leaving,
    /// Reconnecting: HELLO and JOIN, waiting for ROOM_STATE.
    Joining,
    /// HISTORY asked, waiting for HISTORY_END.
    Fetching,
}

/// One reconnect in progress.
#[derive(Debug)]
pub struct Resume {
    /// When the connection was dropped (ns since the run's base).
    pub since_ns: u64,
    /// Where it is.
    pub step: Step,
    /// Live seqs that arrived while fetching history.
    pub deferred: Vec<u64>,
    /// Messages history sent in this resume.
    pub recovered: u64,
}

/// A publishing connection's schedule and sequence.
pub struct Publisher {
    /// The next scheduled send (rate mode), ns since base.
    pub next_due: u64,
    /// Messages sent.
    pub count: u32,
}

impl Publisher {
    /// The stamp of this publisher's next message (connection `id`), sent
    /// (or scheduled) at `sent_ns`; counts it.
    pub fn stamp(&mut self, id: usize, sent_ns: u64) -> Stamp {
        let stamp = Stamp {
            sent_ns,
            publisher: id as u32,
            count: self.count,
        };
        self.count = self.count.wrapping_add(1);
        stamp
    }
}

impl Conn {
    /// Its loss trackers, one per stream of its room: the room's seq
    /// (muxchat), or one per publisher (Redis).
    pub fn trackers(&self) -> Vec<SeqTracker> {
        if self.streams.is_empty() {
            vec![self.tracker.clone()]
        } else {
            self.streams.clone()
        }
    }

    /// A connection not yet opened.
    pub fn new(id: usize, room: usize, nick: String, publishes: bool) -> Conn {
        Conn {
            id,
            room,
            nick,
            stream: None,
            stage: Stage::Connecting,
            opened: Instant::now(),
            out: OutBuf::default(),
            flush_queued: false,
            partial: Vec::new(),
            tracker: SeqTracker::new(),
            streams: Vec::new(),
            received: 0,
            publisher: publishes.then_some(Publisher {
                next_due: 0,
                count: 0,
            }),
            was_ready: false,
            epoch: 0,
            resume: None,
            reconnects: 0,
            exact: None,
        }
    }
}
