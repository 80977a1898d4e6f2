//! The cluster (`--redis`): several single-threaded daemons sharing rooms
//! through one Redis server. Off unless configured: standalone code never
//! enters here, and a standalone daemon pays one `Option` test per
//! command.
//!
//! This module owns the node's side of the cluster:
//! - two Redis links ([`link`]), sources in the same `Poll` as the
//!   sessions: the *command* link carries pipelined calls of the function
//!   library (`muxchat.lua`), answered in order (`Expect` says what each
//!   answer is for); the *subscriber* link receives the events of the rooms
//!   this node has members in, of NICK changes, and of whispers to it;
//! - the per-room bookkeeping of what this node delivered (`ClusterRoom`):
//!   a room's seq is assigned in Redis, and the node delivers each room's
//!   events strictly in seq order, filling a jump in seq from the room's
//!   stream before going on;
//! - the liveness heartbeat, reconnecting, and rebuilding what Redis held
//!   from the node's own state when a link comes back.
//!
//! Files: `calls.rs` the command link's FIFO of calls in flight,
//! `liveness.rs` the heartbeat and the deadlines that drop a stalled link.
//!
//! This is the store side: it never sees the chat. What the chat does with
//! the store (`impl Chat`: the requests a session's command sends, the
//! answers, the events in seq order, recovery, the lists) is in the chat's
//! folder, `src/server/chat/cluster/`: the handlers talk to the cluster's
//! store as they talk to the local rooms, and the cluster stays below the
//! chat (mini-redis: `Db` never sees a `Connection`).
//!
//! What a session sees is the same as standalone; only the order of work
//! changes: a request that needs the store is sent, the session's next
//! frames wait (held like paused input) until the answer or the event it
//! produced comes back, and the loop never waits on Redis.

pub mod accounts;
mod calls;
pub mod link;
pub mod lists;
mod liveness;
pub mod moderation;
pub mod url;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Registry, Token};

pub(crate) use self::calls::{Expect, InFlight};
use self::link::{Change, Link, Opener};
use self::url::RedisUrl;
use crate::codec::resp::Value;

use crate::codec::NameKey;

/// The chat's index of a room (`chat::rooms::RoomId`, a slab key): the
/// node's bookkeeping per room is keyed by it.
pub type RoomId = usize;

/// The folded form of a nick or room name (keys in the store).
pub(crate) fn fold(name: &str) -> String {
    NameKey::new(name)
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|| name.to_ascii_lowercase())
}

/// The function library loaded into Redis at every (re)connect: one
/// library (one `#!lua` header, in muxchat.lua), its parts in files by
/// concern.
pub const LIBRARY: &str = concat!(
    include_str!("muxchat.lua"),
    include_str!("accounts.lua"),
    include_str!("moderation.lua")
);

/// `--redis-timeout-ms`'s default, for a node made without a config: a
/// request unanswered for this long means the link is stalled, and it is
/// dropped and reconnected (everything waiting on it gets UNAVAILABLE).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);
/// How often the cluster's timer runs (stall checks, reconnects).
pub(crate) const TICK: Duration = Duration::from_millis(500);
/// Bytes of events one room may hold while a jump in its seq is filled
/// from the stream; past it, further events are dropped (a later fill
/// recovers the messages among them).
pub(crate) const HELD_EVENTS_MAX: usize = 4 * 1024 * 1024;
/// Stream entries asked for at once (a fill, a HISTORY reply): bounds
/// every answer on the command link, whatever `--history` allows.
pub(crate) const BATCH: usize = 256;
/// Nicks and memberships per call when the node rebuilds its state.
pub(crate) const RESTORE_CHUNK: usize = 500;

/// Leaves of sessions that ended while the store was out of reach, kept
/// to be announced when it is back; past it, the oldest are dropped.
pub(crate) const GONE_MAX: usize = 10_000;
/// Times an announcement of such a leave nobody heard is tried again
/// (once per heartbeat): other nodes may not have resubscribed yet.
pub(crate) const GONE_TRIES: u8 = 10;
/// Tries at a free nick when a session is renamed after a clash.
pub(crate) const RENAME_TRIES: u8 = 8;

/// A member whose session ended while the store was out of reach.
#[derive(Debug, Clone)]
pub(crate) struct Gone {
    pub key: String,
    pub nk: String,
    pub nick: String,
    pub sid: u64,
    pub reason: String,
    pub tries: u8,
}

/// `--cluster-list-ttl-ms`'s default, for a node made without a config.
pub(crate) const DEFAULT_LIST_TTL: Duration = Duration::from_millis(1000);

/// A start-up failure: Redis could not be reached or used.
#[derive(Debug)]
pub struct ClusterError(pub String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// How a node reaches its Redis: the URL (`--redis`), the CA file for
/// `rediss://` (`--redis-ca`), and the bound on every request, connect,
/// TLS handshake and AUTH (`--redis-timeout-ms`, also the start-up
/// check's).
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// `--redis`.
    pub url: &'a RedisUrl,
    /// `--redis-ca`.
    pub ca: Option<&'a Path>,
    /// `--redis-timeout-ms`.
    pub timeout: Duration,
}

/// Who a node is: its name, its id in the store, its Redis.
struct Identity {
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) url: RedisUrl,
}

/// A JOIN or LEAVE of a local session, until its event comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub t: Token,
    pub sid: u64,
    /// The call went to Redis (a JOIN waits for the subscription first).
    pub sent: bool,
}

/// What the node keeps for one room it has members in (or is joining).
#[derive(Debug, Default)]
pub(crate) struct ClusterRoom {
    /// The folded name (keys and channel).
    pub key: String,
    /// The subscription is confirmed: events of the room arrive.
    pub subscribed: bool,
    /// The node knows the room's epoch and seq (from its first JOINED):
    /// until then it has no one to deliver to and ignores events.
    pub positioned: bool,
    /// JOINs waiting for their JOINED event.
    pub joins: Vec<Waiter>,
    /// LEAVEs waiting for their LEFT event.
    pub leaves: Vec<Waiter>,
    /// Sessions of a member account attaching (version 3), until their K
    /// event: they do not wait (their input goes on).
    pub attaches: Vec<Waiter>,
    /// A fill from the stream is in flight: events wait in `held`.
    pub filling: bool,
    /// The fill's call is in flight (else the resync sends it).
    pub fill_in_flight: bool,
    /// The seq the fill goes up to (`u64::MAX`: everything held).
    pub fill_upto: u64,
    /// Events that came during a fill, in order.
    pub held: VecDeque<Vec<u8>>,
    pub held_bytes: usize,
}

impl ClusterRoom {
    /// Nobody local is in it or joining it: unsubscribe and forget it.
    pub(crate) fn is_idle(&self, members: usize) -> bool {
        members == 0 && self.joins.is_empty() && self.leaves.is_empty() && self.attaches.is_empty()
    }
}

/// Bound on [`Cluster::parted_here`]: this node's members announced LEFT
/// by a reap and not yet put back.
pub(crate) const PARTED_MAX: usize = 65_536;

/// The node's cluster state.
#[derive(Debug)]
pub struct Cluster {
    /// This node's name (logs, WELCOME).
    pub name: String,
    /// This incarnation's id in Redis: the name and a random suffix, so a
    /// restarted node (or two nodes with one name) never mistakes another
    /// one's state for its own.
    pub node: String,
    /// Key and channel prefix (the database's number is in it: channels
    /// are not per database).
    pub prefix: String,
    pub(crate) url: RedisUrl,
    pub(crate) db: u32,
    pub(super) cmd: Link,
    pub(super) sub: Link,
    pub(crate) registry: Registry,
    pub(crate) in_flight: VecDeque<InFlight>,
    pub(crate) in_flight_bytes: usize,
    pub(crate) max_pending: usize,
    /// Liveness TTL (`--node-ttl-ms`), also the nicks' TTL.
    pub ttl: Duration,
    /// `--room-ttl-ms`, for rooms that empty in Redis.
    pub room_ttl: Duration,
    /// Per-room state, by the local room's id.
    pub(crate) rooms: HashMap<RoomId, ClusterRoom>,
    /// Local registered sessions by id: events name sessions by id.
    pub(crate) sids: HashMap<u64, Token>,
    /// The room each waiting JOIN or LEAVE is for, by session id (a
    /// session that closes drops its waiter without a search).
    pub(crate) waits: HashMap<u64, RoomId>,
    /// (room, session id) of this node's live members whose LEFT from a
    /// reap this node delivered to its own sessions: only those saw the
    /// member leave, so only then do they get the JOINED that puts it
    /// back. A node cut off during the reap never saw the LEFT, and its
    /// sessions must not see a JOINED for someone who never left. At most
    /// `PARTED_MAX` entries (cleared when full: a JOINED then goes
    /// unshown, never a JOINED without its LEFT).
    pub(crate) parted_here: HashSet<(RoomId, u64)>,
    pub(crate) next_alive: Instant,
    pub(crate) next_tick: Instant,
    /// When the subscriber link's last PING went unanswered since.
    pub(crate) sub_ping: Option<Instant>,
    /// `--redis-timeout-ms`: how long a call (or the subscriber's PING,
    /// or opening a link) may go unanswered before the link is dropped.
    pub(crate) timeout: Duration,
    /// Both links were up and the node's state was rebuilt in Redis.
    pub(crate) synced: bool,
    /// A rebuild is in flight (its `Sync` answer not back): what fails
    /// before it does not start another.
    pub(crate) resyncing: bool,
    /// The node could not renew its liveness for longer than its TTL: it
    /// treats its entry as lost (requests get UNAVAILABLE) until a
    /// rebuild registers it again.
    pub(crate) fenced: bool,
    /// When the last heartbeat (or rebuild) that Redis answered was sent.
    pub(crate) renewed: Instant,
    /// Each registered local session's claim time in the store, by id:
    /// of two sessions a fault left with one nick, the later is renamed.
    pub(crate) claims: HashMap<u64, u64>,
    /// Sessions being renamed after a clash (one rename at a time each).
    pub(crate) renaming: HashSet<u64>,
    /// Leaves to announce when the store is back.
    pub(crate) gone: VecDeque<Gone>,
    /// Account sessions that ended while the store was out of reach
    /// (sub, nick, session id, reason): told to it (`mc_acct_bye`) once
    /// it is back, at most `GONE_MAX`.
    pub(crate) account_byes: VecDeque<(String, String, u64, String)>,
    /// For the suffixes of renamed nicks.
    pub(crate) rng: u64,
    /// Logged once per change of availability.
    pub(crate) was_available: bool,
    /// Counters for STATS.
    pub stats: ClusterStats,
    /// LIST_ROOMS and LIST_USERS answers, kept for `--cluster-list-ttl-ms`.
    pub(crate) lists: lists::Lists,
    /// Moderation's replica bookkeeping (loads, events held meanwhile).
    pub(crate) moderation: moderation::Replica,
}

/// The cluster's counters (STATS and `/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterStats {
    /// Calls sent to Redis.
    pub calls: u64,
    /// Events received.
    pub events: u64,
    /// Jumps in a room's seq filled from its stream.
    pub fills: u64,
    /// Messages a fill could not find (no longer held): a gap members see.
    pub lost: u64,
    /// Requests answered UNAVAILABLE.
    pub unavailable: u64,
    /// Times a link went down.
    pub link_drops: u64,
    /// Times the node could not renew its liveness for longer than its
    /// TTL and fenced itself.
    pub fences: u64,
    /// Local sessions renamed after losing a clash of nicks.
    pub clash_renames: u64,
}

/// The command link's token and the subscriber link's.
pub const CMD: Token = Token(usize::MAX - 4);
/// See [`CMD`].
pub const SUB: Token = Token(usize::MAX - 5);

impl Cluster {
    /// Connects both links (blocking, with a timeout: the loop is not
    /// running yet), loads the function library, and registers the node.
    /// An error names the URL and the cause.
    pub fn start(
        reach: Reach<'_>,
        name: String,
        ttl: Duration,
        room_ttl: Duration,
        max_pending: usize,
        registry: Registry,
        seed: u64,
    ) -> Result<Cluster, ClusterError> {
        let url = reach.url;
        let fail = |why: String| ClusterError(format!("cannot use Redis at {url}: {why}"));
        let opener = Opener::new(url, reach.ca).map_err(fail)?;
        let addrs = url.resolve().map_err(|e| fail(e.to_string()))?;
        let db = url.db.to_string();
        let handshake = vec![
            vec![b"SELECT".to_vec(), db.clone().into_bytes()],
            vec![
                b"FUNCTION".to_vec(),
                b"LOAD".to_vec(),
                b"REPLACE".to_vec(),
                LIBRARY.as_bytes().to_vec(),
            ],
        ];
        let timeout = reach.timeout;
        let cmd = link::connect_blocking(&addrs, &opener, &handshake, timeout).map_err(fail)?;
        let ping = [vec![b"PING".to_vec()]];
        let sub = link::connect_blocking(&addrs, &opener, &ping, timeout).map_err(fail)?;
        let cmd = Link::new(
            "command",
            (addrs.clone(), opener.clone()),
            CMD,
            Some(cmd),
            &registry,
        )
        .map_err(|e| fail(e.to_string()))?;
        let sub = Link::new("subscriber", (addrs, opener), SUB, Some(sub), &registry)
            .map_err(|e| fail(e.to_string()))?;
        let mut c = Cluster::assemble(
            Identity {
                name: name.clone(),
                node: format!("{name}/{:08x}", seed as u32),
                url: url.clone(),
            },
            (cmd, sub),
            registry,
            max_pending,
            (ttl, room_ttl),
        );
        c.timeout = timeout;
        c.rng ^= seed | 1;
        c.subscribe_node_channels();
        // Known from the start, so the first heartbeat does not read as
        // the store having lost this node.
        c.register(true);
        c.alive();
        info!("cluster node {} on {}", c.node, c.url);
        Ok(c)
    }

    /// A node with no Redis behind it, for fuzzing and tests: both links
    /// are up but have no socket ([`Link::detached`]), so calls are
    /// recorded as in flight and never written, nothing touches the
    /// network, and a link that goes down (a stall) stays down. The
    /// caller plays Redis with the chat's `feed_push` and
    /// `feed_answer`. `registry` comes from a fresh `mio::Poll`.
    ///
    #[doc(hidden)]
    #[cfg(feature = "fuzzing")]
    pub fn detached(name: &str, max_pending: usize, registry: Registry) -> Cluster {
        let links = (
            Link::detached("command", CMD, &registry),
            Link::detached("subscriber", SUB, &registry),
        );
        let url = RedisUrl::plain("detached", 0, 0);
        let id = Identity {
            name: name.to_owned(),
            node: name.to_owned(),
            url,
        };
        let mut c = Cluster::assemble(
            id,
            links,
            registry,
            max_pending,
            (Duration::from_secs(15), Duration::ZERO),
        );
        // No store to load a replica from: the fuzzer's requests go on.
        c.moderation.loaded = true;
        c
    }

    /// A node's state before anything was sent: both links as given,
    /// nothing in flight, no rooms.
    fn assemble(
        id: Identity,
        (cmd, sub): (Link, Link),
        registry: Registry,
        max_pending: usize,
        (ttl, room_ttl): (Duration, Duration),
    ) -> Cluster {
        let now = Instant::now();
        Cluster {
            prefix: format!("muxchat:{}:", id.url.db),
            db: id.url.db,
            name: id.name,
            node: id.node,
            url: id.url,
            cmd,
            sub,
            registry,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            max_pending,
            ttl,
            room_ttl,
            rooms: HashMap::new(),
            sids: HashMap::new(),
            waits: HashMap::new(),
            parted_here: HashSet::new(),
            next_alive: now,
            next_tick: now,
            sub_ping: None,
            timeout: DEFAULT_TIMEOUT,
            synced: true,
            resyncing: false,
            fenced: false,
            renewed: now,
            claims: HashMap::new(),
            renaming: HashSet::new(),
            gone: VecDeque::new(),
            account_byes: VecDeque::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
            was_available: true,
            stats: ClusterStats::default(),
            lists: lists::Lists::new(DEFAULT_LIST_TTL),
            moderation: moderation::Replica::default(),
        }
    }

    /// Serve LIST_ROOMS and LIST_USERS answers for `ttl`
    /// (`--cluster-list-ttl-ms`).
    pub fn with_list_ttl(mut self, ttl: Duration) -> Cluster {
        self.lists.ttl = ttl;
        self
    }

    /// Gives a nick back in the store (if `sid` still holds it there).
    pub(crate) fn bye(&mut self, folded_nick: &str, sid: u64) {
        let (node, sid) = (self.node.clone(), sid.to_string());
        self.fcall(
            Expect::Ignore("bye"),
            "mc_bye",
            &[folded_nick.as_bytes(), node.as_bytes(), sid.as_bytes()],
        );
    }

    /// Whether requests that need the store can go: both links up, the
    /// node's state rebuilt after the last drop, and its liveness renewed
    /// (not fenced).
    pub fn available(&self) -> bool {
        self.cmd.is_up() && self.sub.is_up() && self.synced && !self.fenced
    }

    /// Whether the node serves requests that need the store: available,
    /// and its replica of the moderation state loaded since it started or
    /// last rebuilt (HELLO and JOIN are checked against it: before it is
    /// loaded a ban made earlier would not be seen). `/healthz` says 503
    /// until then.
    pub fn serving(&self) -> bool {
        self.available() && self.moderation.loaded
    }

    /// Remembers an account session's end the store could not hear now
    /// (bounded: past it, the oldest is dropped, and that account may
    /// stay in its rooms until its node's entry is reaped).
    pub(crate) fn remember_account_bye(&mut self, bye: (String, String, u64, String)) {
        if self.account_byes.len() >= GONE_MAX {
            self.account_byes.pop_front();
        }
        self.account_byes.push_back(bye);
    }

    /// Remembers a leave the store could not hear now (bounded).
    pub(crate) fn remember_gone(&mut self, g: Gone) {
        if self.gone.len() >= GONE_MAX {
            self.gone.pop_front();
            debug!("cluster: too many leaves while Redis is unreachable: the oldest is dropped");
        }
        self.gone.push_back(g);
    }

    /// `mc_nick` for session `sid`: `old` becomes `new` in its rooms (their
    /// keys), from a NICK (`forced` None) or a rename after a clash.
    pub(crate) fn call_nick(
        &mut self,
        t: Token,
        sid: u64,
        (old, new): (&str, &str),
        rooms: &[String],
        forced: Option<u8>,
    ) {
        let (sid_s, ttl) = (sid.to_string(), self.ttl.as_millis().to_string());
        let was = self.claims.get(&sid).copied().unwrap_or(0).to_string();
        let (onk, nnk) = (fold(old), fold(new));
        let node = self.node.clone();
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
        let expect = Expect::Nick {
            t,
            sid,
            new: new.to_owned(),
            forced,
        };
        self.fcall(expect, "mc_nick", &args);
    }

    /// A nick for a session renamed after a clash: `nick` cut to leave
    /// room, `-` and four hex digits (32 bytes at most; nicks are ASCII).
    pub(crate) fn clash_nick(&mut self, nick: &str) -> String {
        // xorshift64: suffixes need only differ, not be secret.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let keep = nick.len().min(crate::codec::names::MAX_NICK - 5);
        format!("{}-{:04x}", &nick[..keep], x as u16)
    }

    /// The channel of a room's events.
    pub fn room_channel(&self, key: &str) -> String {
        format!("{}c:{key}", self.prefix)
    }

    /// The room key of a room channel, if `channel` is one.
    pub(crate) fn channel_room<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(rest.strip_prefix(b"c:")?).ok()
    }

    /// Subscribes to a room's channel (confirmed by a push).
    pub fn subscribe(&mut self, key: &str) {
        let ch = self.room_channel(key);
        self.sub.send(&[b"SUBSCRIBE", ch.as_bytes()]);
    }

    /// Stops a room's events.
    pub fn unsubscribe(&mut self, key: &str) {
        let ch = self.room_channel(key);
        self.sub.send(&[b"UNSUBSCRIBE", ch.as_bytes()]);
    }

    pub(crate) fn subscribe_node_channels(&mut self) {
        let nick = format!("{}nickch", self.prefix);
        let node = format!("{}n:{}", self.prefix, self.node);
        let moderation = self.moderation_channel();
        self.sub.send(&[
            b"SUBSCRIBE",
            nick.as_bytes(),
            node.as_bytes(),
            moderation.as_bytes(),
        ]);
    }

    /// Writes both links' pending requests (the loop's flush stage).
    pub fn flush(&mut self, now: Instant) -> Vec<(bool, Change)> {
        let mut changes = Vec::new();
        if let Err(e) = self.cmd.flush(&self.registry) {
            changes.push((false, self.cmd.down(&self.registry, now, e.to_string())));
        }
        if let Err(e) = self.sub.flush(&self.registry) {
            changes.push((true, self.sub.down(&self.registry, now, e.to_string())));
        }
        changes
    }

    /// The node's cluster counters, for STATS and `/metrics`.
    pub fn stats_list(&self) -> Vec<(&'static str, u64)> {
        let st = &self.stats;
        vec![
            ("cluster_available", u64::from(self.available())),
            ("cluster_pending_bytes", self.in_flight_bytes as u64),
            ("cluster_calls", st.calls),
            ("cluster_events", st.events),
            ("cluster_fills", st.fills),
            ("cluster_lost", st.lost),
            ("cluster_unavailable", st.unavailable),
            ("cluster_link_drops", st.link_drops),
            ("cluster_fences", st.fences),
            ("cluster_clash_renames", st.clash_renames),
            ("cluster_list_refreshes", self.lists.refreshes),
            ("cluster_users_refreshes", self.lists.users_refreshes),
        ]
    }
}

/// Splits an event's payload into `n` fields at `\n`, the last running to
/// the end (a text or a reason may hold anything).
pub fn split_fields(payload: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let v: Vec<&[u8]> = payload.splitn(n, |&b| b == b'\n').collect();
    (v.len() == n).then_some(v)
}

/// A decimal field.
pub fn num(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// A text field (the store only ever holds what the node checked).
pub fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

impl Cluster {
    /// The handshake after a reconnect: the database, then the library
    /// (Redis may have restarted empty, without it).
    pub(super) fn select_and_load(&mut self) {
        let db = self.db.to_string();
        self.call(Expect::Ignore("select"), &[b"SELECT", db.as_bytes()]);
        self.call(
            Expect::Ignore("function load"),
            &[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()],
        );
    }

    /// A stream entry `[id, [field, value, ...]]` as (seq, time, from, text).
    pub fn stream_entry(v: &Value) -> Option<(u64, u64, &str, &str)> {
        let e = v.as_array()?;
        let id = e.first()?.as_bytes()?;
        let seq = num(id.split(|&b| b == b'-').next()?)?;
        let f = e.get(1)?.as_array()?;
        let (mut time, mut from, mut text_) = (0, None, None);
        for pair in f.chunks(2) {
            let [k, v] = pair else { continue };
            match k.as_bytes()? {
                b"t" => time = v.as_int()? as u64,
                b"f" => from = text(v.as_bytes()?),
                b"x" => text_ = text(v.as_bytes()?),
                _ => {}
            }
        }
        Some((seq, time, from?, text_?))
    }
}
