//! `--token-key`: accounts and protocol version 3, and the exactly-once
//! check for senders.
//!
//! Each connection signs in with its own token (minted here from the key,
//! `sub` = the connection's nick) and sends SAY (v3) with a msg_id: the
//! publisher's stamp count + 1, so a receiver reads the msg_id back out of
//! the text it gets. A publisher keeps every SAY frame until its
//! SAY_RESULT ([`Sender`]); with `--reconnect-every` it drops abruptly
//! (what was in flight may or may not have been taken) and, once back in
//! its room, sends every unanswered SAY again with its msg_id. Every
//! member records which msg_ids of which publisher it saw ([`Seen`]),
//! live or through HISTORY.
//!
//! At the end ([`check`]): every msg_id a publisher had accepted must
//! appear exactly once in the stream of every member of its room still
//! connected. `resent` counts the SAYs sent again after a drop (and after
//! UNAVAILABLE); `deduplicated` those the server had already taken: their
//! SAY_RESULT names a seq no later than the room's `last_seq` in the
//! ROOM_STATE of the rejoin, which came before the resend was read (a SAY
//! taken anew gets a later seq).
//!
//! Memory: one bit per msg_id per publisher per member, in version-3
//! runs only.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::codec::v3::{self, ClientV3, Secret, ServerV3};
use crate::codec::{code, ErrorCode, Frame, ServerMessage};
use crate::net::OutBuf;
use crate::server::identity::mint::{sign_with, MintClaims, SigningKey};

use super::counters::Meter;
use super::stats::Stamp;

/// SAYs a publisher keeps unanswered at most; past it a scheduled publish
/// is skipped (the server is not answering).
pub const MAX_UNANSWERED: usize = 1 << 20;
/// How long a minted token lasts: longer than any run.
pub const TOKEN_TTL_S: u64 = 24 * 3600;

/// A token for connection nick `sub`.
pub fn mint(key: &SigningKey, sub: &str, now_s: u64) -> Result<String, String> {
    let claims = MintClaims {
        sub: sub.to_string(),
        exp: now_s + TOKEN_TTL_S,
        iat: Some(now_s),
        ..MintClaims::default()
    };
    sign_with(key, &claims)
}

/// A growable set of small integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Adds `i`; `false` if it was there.
    pub fn insert(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        !had
    }

    /// Whether `i` is in.
    pub fn contains(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds `lo..hi`, a word at a time; returns how many were there.
    pub fn insert_range(&mut self, lo: u64, hi: u64) -> u64 {
        if lo >= hi {
            return 0;
        }
        let last = ((hi - 1) / 64) as usize;
        if last >= self.words.len() {
            self.words.resize(last + 1, 0);
        }
        let (mut had, mut i) = (0, lo);
        while i < hi {
            let (w, b) = ((i / 64) as usize, i % 64);
            let n = (64 - b).min(hi - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1 << n) - 1) << b
            };
            had += u64::from((self.words[w] & mask).count_ones());
            self.words[w] |= mask;
            i += n;
        }
        had
    }

    /// How many are in.
    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// How many of `self` are not in `other`.
    pub fn missing_from(&self, other: &BitSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }
}

/// A publisher's SAYs: those waiting for an answer, those accepted.
#[derive(Debug, Default)]
pub struct Sender {
    /// msg_id to the whole SAY frame, until its SAY_RESULT.
    waiting: BTreeMap<u64, Vec<u8>>,
    /// msg_ids sent again after a drop and not answered since.
    resent_after_drop: BitSet,
    /// msg_ids the server accepted (error 0).
    pub accepted: BitSet,
}

/// What one SAY_RESULT did to the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Taken (anew, or a resend the server had taken before: `dedup`).
    Accepted {
        /// A resend the server had taken before the drop.
        dedup: bool,
    },
    /// Refused with an error other than UNAVAILABLE: never delivered.
    Refused,
    /// UNAVAILABLE: sent again at once (`resent` counts it).
    Again,
    /// Not a msg_id we wait for.
    Unknown,
}

impl Sender {
    /// How many wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a SAY (v3) for `stamp` (msg_id = count + 1); `false` when
    /// too many wait.
    pub fn say(
        &mut self,
        out: &mut OutBuf,
        scratch: &mut Vec<u8>,
        room: &str,
        stamp: Stamp,
        payload: usize,
    ) -> bool {
        if self.waiting.len() >= MAX_UNANSWERED {
            return false;
        }
        scratch.clear();
        stamp.write(scratch, payload);
        let Ok(text) = std::str::from_utf8(scratch) else {
            return false;
        };
        let msg_id = u64::from(stamp.count) + 1;
        let mut frame = Vec::with_capacity(text.len() + room.len() + 24);
        ClientV3::Say { room, text, msg_id }.encode(&mut frame);
        out.append(&frame);
        self.waiting.insert(msg_id, frame);
        true
    }

    /// After a reconnect and the rejoin: every unanswered SAY again, with
    /// its msg_id, in the order first sent. Returns how many.
    pub fn resend_all(&mut self, out: &mut OutBuf) -> u64 {
        for (&id, frame) in &self.waiting {
            out.append(frame);
            self.resent_after_drop.insert(id);
        }
        self.waiting.len() as u64
    }

    /// Applies a SAY_RESULT; `rejoin_seq` is the room's last_seq at the
    /// latest rejoin.
    pub fn result(
        &mut self,
        msg_id: u64,
        seq: u64,
        error: u16,
        rejoin_seq: u64,
        out: &mut OutBuf,
    ) -> Answer {
        if error == ErrorCode::Unavailable as u16 {
            return match self.waiting.get(&msg_id) {
                Some(frame) => {
                    out.append(frame);
                    Answer::Again
                }
                None => Answer::Unknown,
            };
        }
        if self.waiting.remove(&msg_id).is_none() {
            return Answer::Unknown;
        }
        let resent = self.resent_after_drop.contains(msg_id);
        if error != 0 {
            return Answer::Refused;
        }
        self.accepted.insert(msg_id);
        Answer::Accepted {
            dedup: resent && seq <= rejoin_seq,
        }
    }
}

/// The msg_ids one member saw, per publisher.
///
/// [`Seen::saw`] runs for every message delivered, millions a second on
/// one receiving thread. A SipHash lookup and a bitset write per message
/// (three dependent loads: the table, the set, its word) were a third of
/// muxload's time in the 1 -> 1000 broadcast and made version 3 deliver
/// 26% less than version 2. So a member keeps the run of consecutive
/// msg_ids of one publisher it is seeing (a broadcast is one long run) in
/// three integers, and writes a run into the publisher's bitset only when
/// it breaks (another publisher, a gap, a repeat) or at the end
/// ([`MemberEnd::new`]). The table is looked up at run breaks only, and
/// hashes the publisher number with one multiplication.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Per publisher, in the order first seen.
    sets: Vec<(u32, BitSet)>,
    /// Publisher to its index in `sets`.
    index: HashMap<u32, usize, BuildHasherDefault<PublisherHash>>,
    /// The run not yet in a bitset: msg_ids `run_lo..run_next` of
    /// publisher `run_pub`, whose set is `sets[run_set]`. Empty at first
    /// (and `run_next` 0, which no msg_id is).
    run_pub: u32,
    run_set: usize,
    run_lo: u64,
    run_next: u64,
    /// msg_ids seen again (complete once the run is flushed).
    duplicates: u64,
}

/// Publisher numbers are small distinct integers chosen by this generator,
/// not input an adversary picks: a Fibonacci multiplication spreads them
/// over the table's top bits, where the table looks.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublisherHash(u64);

impl Hasher for PublisherHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Seen {
    /// A MESSAGE or HISTORY_MESSAGE text (a stamp).
    #[inline]
    pub fn saw(&mut self, text: &[u8]) {
        let Some((publisher, count)) = Stamp::publisher_count_of(text) else {
            return;
        };
        let id = u64::from(count) + 1;
        if id == self.run_next && publisher == self.run_pub {
            self.run_next += 1;
        } else {
            self.new_run(publisher, id);
        }
    }

    #[cold]
    fn new_run(&mut self, publisher: u32, id: u64) {
        self.flush();
        let sets = &mut self.sets;
        self.run_set = *self.index.entry(publisher).or_insert_with(|| {
            sets.push((publisher, BitSet::default()));
            sets.len() - 1
        });
        self.run_pub = publisher;
        (self.run_lo, self.run_next) = (id, id + 1);
    }

    /// Writes the current run into its publisher's bitset.
    fn flush(&mut self) {
        if self.run_lo < self.run_next {
            let set = &mut self.sets[self.run_set].1;
            self.duplicates += set.insert_range(self.run_lo, self.run_next);
            self.run_lo = self.run_next;
        }
    }

    /// The msg_ids of `publisher` seen (all of them once flushed:
    /// [`MemberEnd::new`] does).
    pub fn of(&self, publisher: u32) -> Option<&BitSet> {
        self.index.get(&publisher).map(|&i| &self.sets[i].1)
    }
}

/// One connection's version-3 state.
#[derive(Debug, Default)]
pub struct Exact {
    /// The token (never printed: `Debug` of [`Secret`]-like length only).
    pub token: TokenText,
    /// The session key WELCOME gave (empty before the first).
    pub session_key: TokenText,
    /// Set for publishers.
    pub sender: Option<Sender>,
    /// What this member saw.
    pub seen: Seen,
    /// The room's last_seq in the ROOM_STATE of the latest (re)join.
    pub rejoin_seq: u64,
}

/// A secret string whose `Debug` shows its length only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenText(pub String);

impl std::fmt::Debug for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Exact {
    /// HELLO (v3): no nick (the token's claim is the nick), the token, the
    /// session key we got last.
    pub fn hello(&self, out: &mut OutBuf) {
        let mut frame = Vec::new();
        ClientV3::Hello {
            version: crate::codec::v3::VERSION_3,
            nick: "",
            token: Secret(&self.token.0),
            session_key: Secret(&self.session_key.0),
        }
        .encode(&mut frame);
        out.append(&frame);
    }

    /// WELCOME (v3): keeps the session key.
    pub fn welcome(&mut self, msg: &ServerV3<'_>) {
        if let ServerV3::Welcome { session_key, .. } = msg {
            self.session_key = TokenText(session_key.0.to_string());
        }
    }
}

/// A publisher's end state, for [`check`].
#[derive(Debug, Clone)]
pub struct SenderEnd {
    /// Its room.
    pub room: usize,
    /// Its stamp number.
    pub publisher: u32,
    /// The msg_ids accepted.
    pub accepted: BitSet,
}

/// A member's end state, for [`check`].
#[derive(Debug, Clone)]
pub struct MemberEnd {
    /// Its room.
    pub room: usize,
    /// Still connected at the end (a member cut for good is not checked
    /// for missing msg_ids).
    pub alive: bool,
    /// What it saw, its last run flushed.
    seen: Seen,
}

impl MemberEnd {
    /// The end state of a member of `room` that saw `seen`.
    pub fn new(room: usize, alive: bool, mut seen: Seen) -> MemberEnd {
        seen.flush();
        MemberEnd { room, alive, seen }
    }
}

/// The exactly-once figures of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactlyOnce {
    /// Accepted msg_ids, over all publishers.
    pub accepted: u64,
    /// (member, msg_id) pairs that should have been seen: accepted msg_ids
    /// of each room times its live members.
    pub expected: u64,
    /// Of those, not seen.
    pub missing: u64,
    /// msg_ids a member saw more than once.
    pub duplicates: u64,
    /// msg_ids seen that no SAY_RESULT confirmed (the publisher was cut
    /// before the answer came): delivered once, not an error.
    pub unconfirmed: u64,
}

/// Every accepted msg_id of every publisher must be in every live member's
/// stream of its room, once.
pub fn check(senders: &[SenderEnd], members: &[MemberEnd]) -> ExactlyOnce {
    let mut r = ExactlyOnce {
        accepted: senders.iter().map(|s| s.accepted.len()).sum(),
        ..ExactlyOnce::default()
    };
    let empty = BitSet::default();
    for m in members {
        r.duplicates += m.seen.duplicates;
        for s in senders.iter().filter(|s| s.room == m.room) {
            let seen = m.seen.of(s.publisher).unwrap_or(&empty);
            if m.alive {
                r.expected += s.accepted.len();
                r.missing += s.accepted.missing_from(seen);
            }
            r.unconfirmed += seen.missing_from(&s.accepted);
        }
    }
    r
}

impl Exact {
    /// A version-3 frame, or one version 3 changes the meaning of, for
    /// the connection opened at `opened` whose output is `out`; a refused
    /// SAY counts in `rejected` (its room's). `None` leaves the frame to
    /// the usual path; `Some(true)` ends the connection. It is handed the
    /// connection's parts, not the connection, so that this file and
    /// `conn.rs` (which holds an `Exact`) do not depend on each other.
    #[cold]
    pub(super) fn on_frame(
        &mut self,
        f: &Frame<'_>,
        now_ns: u64,
        out: &mut OutBuf,
        opened: Instant,
        m: &mut Meter,
        rejected: &AtomicU64,
    ) -> Option<bool> {
        let x = self;
        let is_v3 = match f.code {
            code::WELCOME => v3::hello_version(f.payload) == Some(v3::VERSION_3),
            c => v3::SERVER_CODES.contains(&c),
        };
        if !is_v3 {
            // After a takeover (or when another session of the account
            // holds the room) the server has put us back in the room
            // itself; our JOIN then gets ALREADY_IN_ROOM: nothing wrong.
            if let Ok(ServerMessage::Error { error, request, .. }) =
                ServerMessage::decode(f.code, f.payload)
            {
                if request == code::JOIN && error == ErrorCode::AlreadyInRoom as u16 {
                    return Some(false);
                }
            }
            return None;
        }
        let Ok(msg) = ServerV3::decode(f.code, f.payload) else {
            m.tally.counters.errors += 1;
            return Some(false);
        };
        match msg {
            ServerV3::Welcome { .. } => {
                x.welcome(&msg);
                let _ = m
                    .tally
                    .register
                    .record(opened.elapsed().as_nanos().max(1) as u64);
            }
            ServerV3::SayResult {
                msg_id, seq, error, ..
            } => {
                let Some(sender) = x.sender.as_mut() else {
                    return Some(false);
                };
                match sender.result(msg_id, seq, error, x.rejoin_seq, out) {
                    Answer::Accepted { dedup } => {
                        if dedup {
                            m.tally.counters.deduplicated += 1;
                        }
                    }
                    Answer::Again => m.tally.counters.resent += 1,
                    Answer::Refused => {
                        m.tally.counters.errors += 1;
                        if let Some(slot) = m.tally.errors.get_mut(error as usize) {
                            *slot += 1;
                        }
                        rejected.fetch_add(1, Relaxed);
                        m.refused(now_ns);
                    }
                    Answer::Unknown => {}
                }
            }
            _ => {}
        }
        Some(false)
    }
}

/// ROOM_STATE and HISTORY_MESSAGE of a version-3 member: the rejoin's
/// last_seq (for telling deduplicated resends), and the msg_ids history
/// brings back.
pub fn on_v2_frame(x: &mut Exact, f: &Frame<'_>) {
    match f.code {
        code::ROOM_STATE | code::HISTORY_MESSAGE => {}
        _ => return,
    }
    match ServerMessage::decode(f.code, f.payload) {
        Ok(ServerMessage::RoomState { last_seq, .. }) => x.rejoin_seq = last_seq,
        Ok(ServerMessage::HistoryMessage { text, .. }) => x.seen.saw(text.as_bytes()),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
