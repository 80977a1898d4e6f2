//! The command link's calls: what each answer is for (`Expect`), the FIFO
//! of calls in flight and its byte bound (`--redis-max-pending`). Redis
//! answers in the order asked, so this queue is the only thing that ties
//! an answer back to the session or room that wanted it.

use std::time::Instant;

use mio::Token;

use super::{accounts, moderation, Cluster, Gone, RoomId};

/// What an answer on the command link is for, in the order sent.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Set-up and bookkeeping: only an error matters (logged).
    Ignore(&'static str),
    /// HELLO's nick claim.
    Hello {
        t: Token,
        sid: u64,
        version: u8,
        nick: String,
    },
    /// JOIN sent: an error ends the wait (the JOINED event ends it
    /// otherwise).
    Join { t: Token, sid: u64, room: RoomId },
    /// LEAVE sent: an error ends the wait (the LEFT event otherwise).
    Leave { t: Token, sid: u64, room: RoomId },
    /// SAY: an error goes to the sender (the MESSAGE comes as an event).
    Say { t: Token, sid: u64, room: RoomId },
    /// WHISPER to a nick on another node.
    Whisper { t: Token, sid: u64 },
    /// NICK's claim of the new nick; `forced`: a rename after a clash of
    /// nicks (`tries` so far), which the session did not ask for.
    Nick {
        t: Token,
        sid: u64,
        new: String,
        forced: Option<u8>,
    },
    /// LIST_ROOMS's refresh of the node's cache (its callers wait there).
    Rooms,
    /// LIST_USERS's refresh for one room, by its folded name.
    Users { key: String },
    /// HISTORY from the room's stream.
    History {
        t: Token,
        sid: u64,
        room: RoomId,
        epoch: u64,
        newest: u64,
        after: u64,
        cap: usize,
        status: u8,
        newest_first: bool,
    },
    /// Messages of a jump in a room's seq, from its stream.
    Fill { room: RoomId, epoch: u64, upto: u64 },
    /// The room as the node rebuilt it: the epoch Redis holds.
    Restore { room: RoomId, epoch: u64 },
    /// The heartbeat (sent then): whether the store still knew this node,
    /// and which of its nicks it lost.
    Alive { sent: Instant },
    /// Nicks put back: the sessions that lost a clash and are renamed.
    Claim,
    /// The rebuild's last call (sent then): the node is registered again.
    Sync { sent: Instant },
    /// Leaves announced after the store came back: the ones nobody heard.
    Gone(Vec<Gone>),
    /// Moderation's calls (`moderation.rs`).
    Moderation(moderation::ModExpect),
    /// Protocol version 3: accounts, session keys, SAY_RESULT.
    Account(accounts::AccountExpect),
}

/// One call in flight: what its answer is for, its size, when it went.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) expect: Expect,
    pub(crate) bytes: usize,
    pub(crate) sent: Instant,
}

impl Cluster {
    /// Whether a call of `extra` more bytes stays within
    /// `--redis-max-pending`: past it, requests get UNAVAILABLE instead of
    /// the link's memory growing while Redis does not keep up.
    pub fn has_room_for(&self, extra: usize) -> bool {
        self.in_flight_bytes + self.cmd.unsent() + extra <= self.max_pending
    }

    /// Sends one call on the command link, remembering what its answer
    /// is for.
    pub(crate) fn call(&mut self, expect: Expect, args: &[&[u8]]) {
        // Nothing can answer a call on a link that is down; whoever needs
        // an answer checked `available` first.
        if !self.cmd.is_up() {
            return;
        }
        let bytes = self.cmd.send(args);
        self.in_flight_bytes += bytes;
        self.stats.calls += 1;
        self.in_flight.push_back(InFlight {
            expect,
            bytes,
            sent: Instant::now(),
        });
    }

    /// `FCALL name 0 prefix args...`.
    pub(crate) fn fcall(&mut self, expect: Expect, name: &str, args: &[&[u8]]) {
        // Every SAY comes through here: borrow the prefix for the call
        // instead of copying it.
        let prefix = std::mem::take(&mut self.prefix);
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 4);
        all.extend_from_slice(&[b"FCALL", name.as_bytes(), b"0", prefix.as_bytes()]);
        all.extend_from_slice(args);
        self.call(expect, &all);
        self.prefix = prefix;
    }

    /// The answer to the oldest call in flight.
    pub(crate) fn answered(&mut self) -> Option<Expect> {
        let f = self.in_flight.pop_front()?;
        self.in_flight_bytes -= f.bytes;
        Some(f.expect)
    }

    /// Every call in flight, lost with the command link.
    pub(crate) fn take_in_flight(&mut self) -> Vec<Expect> {
        self.in_flight_bytes = 0;
        self.in_flight.drain(..).map(|f| f.expect).collect()
    }
}
