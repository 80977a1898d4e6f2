//! The fault-injection harness of tests/cluster_faults.rs: a cluster of
//! nodes (each behind its own [`StallProxy`] to one Redis), clients spread
//! over the nodes that send numbered SAYs and record every frame they see
//! with their connection intervals, and the checker of the five properties
//! the contract promises under faults (shared/protocol.md, "Clusters"):
//!
//! - (a) one message per (room, epoch, seq) on every node;
//! - (b) gap-free for members connected throughout;
//! - (c) exact resume across nodes (HISTORY gives each message once, or says
//!   there is a gap);
//! - (d) never two live sessions with one nick;
//! - (e) per observer, JOINED and LEFT of a nick alternate in each room.
//!
//! Threads are fine here: this is the test's side, not the daemon.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster_support::{node_command, redis_command, Redis, StallProxy};
use crate::common::Daemon;
use muxchat::codec::{code, history_status, ClientMessage, ErrorCode, FrameReader, ServerMessage};

/// The liveness period the fault tests give their nodes: short, so that a
/// stall or pause "longer than the liveness period" fits in a CI test.
pub const NODE_TTL_MS: u64 = 1500;

/// How long two live sessions may hold one nick before the checker calls
/// it a violation: the contract renames the later one once the clash is
/// seen, which takes a liveness period or a heartbeat, on a busy machine.
pub const NICK_GRACE: Duration = Duration::from_secs(6);

/// The scale factor for every phase of a run (`MUXCHAT_FAULTS_SCALE`, default
/// 1), so scripts/cluster-faults.sh can run the same faults for longer.
pub fn scale() -> f64 {
    std::env::var("MUXCHAT_FAULTS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v > 0.0 && *v <= 100.0)
        .unwrap_or(1.0)
}

/// `base` scaled by [`scale`].
pub fn scaled(base: Duration) -> Duration {
    base.mul_f64(scale())
}

// ---------------------------------------------------------------------------
// At most a few runs at once: each starts 3 nodes, a Redis and dozens of
// client threads, and the liveness periods are short.
// ---------------------------------------------------------------------------

static SLOTS: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// A slot among [`MAX_RUNS`]; released when dropped.
pub struct Slot;

/// How many fault runs go at once in one test binary.
const MAX_RUNS: usize = 2;

impl Slot {
    pub fn take() -> Slot {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_RUNS {
            n = FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------
// The cluster under test.
// ---------------------------------------------------------------------------

/// One Redis, and `n` nodes each reaching it through its own proxy.
pub struct Cluster {
    pub redis: Redis,
    pub proxies: Vec<StallProxy>,
    nodes: Vec<Option<Daemon>>,
    names: Vec<String>,
    extra: Vec<String>,
    /// Where clients find the nodes (None while one is down).
    pub addrs: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    pub t0: Instant,
}

impl Cluster {
    /// Starts Redis and `n` nodes with `--node-ttl-ms` [`NODE_TTL_MS`] and `extra`.
    #[track_caller]
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let redis = Redis::start();
        let proxies: Vec<StallProxy> = (0..n).map(|_| StallProxy::start(redis.addr())).collect();
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let names = (0..n).map(|i| format!("f{run}n{i}")).collect();
        let mut c = Cluster {
            redis,
            proxies,
            nodes: (0..n).map(|_| None).collect(),
            names,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            addrs: Arc::new(Mutex::new(vec![None; n])),
            t0: Instant::now(),
        };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    /// Starts node `i` (again), under its own name, through its proxy.
    #[track_caller]
    pub fn start_node(&mut self, i: usize) {
        let ttl = NODE_TTL_MS.to_string();
        let mut args: Vec<&str> = vec!["--node-name", &self.names[i], "--node-ttl-ms", &ttl];
        // Every message of a run stays in its room's stream (a run says
        // about 1,500 at scale 1; the default cap, 100, is what one room
        // says in a 4.5 s stall): a node back from a fault can fill all it
        // missed, so a gap is a fault of the cluster, not of the cap
        // (a_stalled_nodes_member_misses_only_what_the_stream_trimmed).
        if !self.extra.iter().any(|a| a == "--history") {
            args.extend(["--history", "65535"]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let d = Daemon::spawn(node_command(&self.proxies[i].url(), &args));
        self.addrs.lock().unwrap()[i] = Some(d.addr);
        self.nodes[i] = Some(d);
    }

    /// Node `i`'s PID, if it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].as_ref().map(Daemon::pid)
    }

    /// kill -9 of node `i`; clients no longer find it.
    pub fn kill_node(&mut self, i: usize) {
        self.addrs.lock().unwrap()[i] = None;
        if let Some(mut d) = self.nodes[i].take() {
            d.kill();
        }
    }

    /// SIGTERM to node `i`, and waits (up to 30 s) for it to drain and exit.
    #[track_caller]
    pub fn term_node(&mut self, i: usize) {
        self.addrs.lock().unwrap()[i] = None;
        if let Some(mut d) = self.nodes[i].take() {
            d.signal(libc::SIGTERM);
            if d.wait_exit(Duration::from_secs(30)).is_none() {
                d.kill();
                panic!("node {i} did not exit within 30 s of SIGTERM");
            }
        }
    }

    /// Sends `sig` to redis-server (SIGSTOP / SIGCONT).
    #[track_caller]
    pub fn signal_redis(&self, sig: i32) {
        let pid = self.redis.pid().expect("redis runs");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// FLUSHALL, straight to Redis.
    #[track_caller]
    pub fn flushall(&self) {
        assert_eq!(
            redis_command(self.redis.addr(), &["FLUSHALL"]).as_deref(),
            Some("+OK"),
            "FLUSHALL"
        );
    }

    /// Seconds since the cluster started, for the log lines.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A paused Redis would not die of SIGKILL until continued: continue it.
        if let Some(pid) = self.redis.pid() {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
    }
}

// ---------------------------------------------------------------------------
// What the clients record.
// ---------------------------------------------------------------------------

/// One thing a connection saw (or did), in order.
#[derive(Debug, Clone)]
pub enum Ev {
    Welcome(String),
    HelloRefused(u16),
    Joined {
        room: String,
        nick: String,
    },
    Left {
        room: String,
        nick: String,
        reason: String,
    },
    RoomState {
        room: String,
        epoch: u64,
        last: u64,
    },
    Msg {
        room: String,
        seq: u64,
        from: String,
        text: String,
    },
    HistAsk {
        room: String,
        epoch: u64,
        after: u64,
    },
    Hist {
        room: String,
        seq: u64,
        from: String,
        text: String,
    },
    HistEnd {
        room: String,
        epoch: u64,
        newest: u64,
        status: u8,
    },
    NickChanged {
        old: String,
        new: String,
    },
    Error {
        error: u16,
        request: u16,
    },
    Said {
        room: String,
        text: String,
    },
}

/// One connection of one client: where, when, and everything it saw.
#[derive(Debug, Clone)]
pub struct Conn {
    pub client: String,
    pub node: usize,
    pub start: Duration,
    pub end: Duration,
    /// Still open when the run stopped.
    pub alive_at_end: bool,
    pub events: Vec<(Duration, Ev)>,
}

/// What one simulated client does.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its name in the checker's messages (unique per client).
    pub label: String,
    /// Its nick (and the prefix of its texts).
    pub nick: String,
    /// The node it connects to first.
    pub home: usize,
    pub rooms: Vec<String>,
    /// Pause between its SAYs (None: it says nothing).
    pub say_every: Option<Duration>,
    /// Reconnect when the connection ends (or HELLO is refused).
    pub reconnect: bool,
    /// Wait before reconnecting.
    pub reconnect_delay: Duration,
}

/// The clients of a run, and what they recorded.
pub struct Crowd {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Vec<Conn>>>,
    pub conns: Vec<Conn>,
    /// Per-client overrides of the reconnect delay, settable during a run
    /// (e.g. "reconnect only after the reap").
    pub hold_off: Arc<Mutex<HashMap<String, Instant>>>,
    /// Clients told to drop their connection now (they reconnect as after
    /// any drop): a member that leaves while the cluster cannot tell.
    pub kick: Arc<Mutex<BTreeSet<String>>>,
}

impl Crowd {
    pub fn new() -> Crowd {
        Crowd {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
            conns: Vec::new(),
            hold_off: Arc::new(Mutex::new(HashMap::new())),
            kick: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Makes client `label` close its connection (and reconnect).
    pub fn kick(&self, label: &str) {
        self.kick.lock().unwrap().insert(label.to_owned());
    }

    /// Starts a client thread.
    pub fn spawn(&mut self, cluster: &Cluster, spec: Spec) {
        let ctl = Control {
            stop: self.stop.clone(),
            hold: self.hold_off.clone(),
            kick: self.kick.clone(),
        };
        let (addrs, t0) = (cluster.addrs.clone(), cluster.t0);
        self.handles
            .push(std::thread::spawn(move || run_client(spec, addrs, t0, ctl)));
    }

    /// `n` talking clients `c0..` spread over the nodes, each in one or two
    /// of `rooms` rooms, reconnecting at once.
    pub fn talkers(&mut self, cluster: &Cluster, n: usize, rooms: usize, every: Duration) {
        let nodes = cluster.addrs.lock().unwrap().len();
        for i in 0..n {
            let mut rs = vec![format!("#r{}", i % rooms)];
            if i % 2 == 0 && rooms > 1 {
                rs.push(format!("#r{}", (i + 1) % rooms));
            }
            self.spawn(
                cluster,
                Spec {
                    label: format!("c{i}"),
                    nick: format!("c{i}"),
                    home: i % nodes,
                    rooms: rs,
                    say_every: Some(every),
                    reconnect: true,
                    // At once, as a client library would: a session of a
                    // lost node that is back before the reap is the case
                    // presence must get right.
                    reconnect_delay: Duration::from_millis(10),
                },
            );
        }
    }

    /// Stops every client and collects their connections.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            match h.join() {
                Ok(conns) => self.conns.extend(conns),
                Err(_) => panic!("a client thread panicked"),
            }
        }
    }
}

impl Default for Crowd {
    fn default() -> Self {
        Crowd::new()
    }
}

/// How a read ended.
enum Got {
    Frame(u16, Vec<u8>),
    Quiet,
    Closed,
}

/// A client's socket and its frame buffer.
struct Wire {
    s: TcpStream,
    r: FrameReader,
}

impl Wire {
    fn send(&mut self, m: &ClientMessage<'_>) -> bool {
        let mut out = Vec::new();
        m.encode(&mut out);
        self.s.write_all(&out).is_ok()
    }

    fn recv(&mut self, within: Duration) -> Got {
        let deadline = Instant::now() + within;
        loop {
            match self.r.next_frame() {
                Ok(Some(f)) => return Got::Frame(f.code, f.payload.to_vec()),
                Ok(None) => {}
                Err(_) => return Got::Closed,
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Got::Quiet;
            };
            let _ = self
                .s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.r.read_from(&mut self.s) {
                Ok(0) => return Got::Closed,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Quiet
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Got::Closed,
            }
        }
    }
}

/// Per room, what the client remembers for resume: (epoch, last seq shown).
type Resume = HashMap<String, (u64, u64)>;

/// How the test steers a client thread.
struct Control {
    stop: Arc<AtomicBool>,
    hold: Arc<Mutex<HashMap<String, Instant>>>,
    kick: Arc<Mutex<BTreeSet<String>>>,
}

fn run_client(
    spec: Spec,
    addrs: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    t0: Instant,
    ctl: Control,
) -> Vec<Conn> {
    let Control { stop, hold, kick } = &ctl;
    let mut conns = Vec::new();
    let mut resume: Resume = HashMap::new();
    let mut next_node = spec.home;
    let mut counter = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if let Some(until) = hold.lock().unwrap().get(&spec.nick).copied() {
            if Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        // The next live node from `next_node` on.
        let list = addrs.lock().unwrap().clone();
        let Some((node, addr)) = (0..list.len())
            .map(|k| (next_node + k) % list.len())
            .find_map(|i| list[i].map(|a| (i, a)))
        else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            next_node = node + 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_nodelay(true);
        let mut w = Wire {
            s,
            r: FrameReader::new(16 * 1024 * 1024),
        };
        let mut conn = Conn {
            client: spec.label.clone(),
            node,
            start: t0.elapsed(),
            end: Duration::ZERO,
            alive_at_end: false,
            events: Vec::new(),
        };
        let open = session(
            &spec,
            &mut w,
            &mut conn,
            (&mut resume, &mut counter),
            t0,
            (stop, kick),
        );
        conn.end = t0.elapsed();
        conn.alive_at_end = open;
        conns.push(conn);
        // A probe tries again only while the cluster is unavailable: it
        // is there to claim the nick as soon as the cluster takes claims.
        let unavailable = conns.last().is_some_and(|c: &Conn| {
            c.events.iter().any(
                |(_, e)| matches!(e, Ev::HelloRefused(x) if *x == ErrorCode::Unavailable as u16),
            )
        });
        let again = spec.reconnect || (unavailable && conns.len() < 50);
        if open || !again {
            break;
        }
        // Reconnect through another node; after a refused HELLO, not in
        // a tight loop.
        let refused = !conns
            .last()
            .is_some_and(|c: &Conn| c.events.iter().any(|(_, e)| matches!(e, Ev::Welcome(_))));
        next_node = node + 1;
        std::thread::sleep(if refused {
            spec.reconnect_delay.max(Duration::from_millis(100))
        } else {
            spec.reconnect_delay
        });
    }
    conns
}

/// Runs one connection: HELLO, JOIN (and resume) each room, then SAY and
/// record until the connection ends (false) or the run stops (true).
fn session(
    spec: &Spec,
    w: &mut Wire,
    conn: &mut Conn,
    (resume, counter): (&mut Resume, &mut u64),
    t0: Instant,
    (stop, kick): (&AtomicBool, &Mutex<BTreeSet<String>>),
) -> bool {
    let rec = |conn: &mut Conn, ev: Ev| conn.events.push((t0.elapsed(), ev));
    if !w.send(&ClientMessage::Hello {
        version: 2,
        nick: &spec.nick,
    }) {
        return false;
    }
    let mut me = String::new();
    let mut st = Live::default();
    // HELLO's answer.
    let welcome_by = Instant::now() + Duration::from_secs(10);
    while me.is_empty() {
        if Instant::now() > welcome_by || stop.load(Ordering::SeqCst) {
            return false;
        }
        match w.recv(Duration::from_millis(200)) {
            Got::Closed => return false,
            Got::Quiet => {}
            Got::Frame(c, p) => match ServerMessage::decode(c, &p) {
                Ok(ServerMessage::Welcome { nick, .. }) => {
                    me = nick.to_owned();
                    rec(conn, Ev::Welcome(me.clone()));
                }
                Ok(ServerMessage::Error { error, .. }) => {
                    rec(conn, Ev::HelloRefused(error));
                    return false;
                }
                _ => {}
            },
        }
    }
    let mut pending_joins: Vec<String> = spec.rooms.clone();
    let mut joining: Option<(String, Instant)> = None;
    let mut next_join_at = Instant::now();
    let mut next_say = Instant::now();
    let mut outstanding = 0usize;
    let mut say_room = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if kick.lock().unwrap().remove(&spec.label) {
            return false; // dropping the socket closes it
        }
        // One JOIN at a time, retried on UNAVAILABLE.
        if joining.is_none() && Instant::now() >= next_join_at {
            if let Some(room) = pending_joins.first().cloned() {
                if !w.send(&ClientMessage::Join { room: &room }) {
                    return false;
                }
                joining = Some((room, Instant::now()));
            }
        }
        if let Some(every) = spec.say_every {
            let joined: Vec<&String> = spec.rooms.iter().filter(|r| st.in_room(r)).collect();
            if Instant::now() >= next_say && outstanding < 8 && !joined.is_empty() {
                let room = joined[say_room % joined.len()].clone();
                say_room += 1;
                *counter += 1;
                let text = format!("{}:{}", spec.nick, counter);
                if !w.send(&ClientMessage::Say {
                    room: &room,
                    text: &text,
                }) {
                    return false;
                }
                rec(conn, Ev::Said { room, text });
                outstanding += 1;
                next_say = Instant::now() + every;
            }
        }
        let (c, p) = match w.recv(Duration::from_millis(20)) {
            Got::Closed => return false,
            Got::Quiet => continue,
            Got::Frame(c, p) => (c, p),
        };
        let Ok(m) = ServerMessage::decode(c, &p) else {
            continue;
        };
        match m {
            ServerMessage::Joined { room, nick } => {
                if nick == me {
                    st.joined.insert(room.to_ascii_lowercase());
                }
                rec(
                    conn,
                    Ev::Joined {
                        room: room.to_owned(),
                        nick: nick.to_owned(),
                    },
                );
            }
            ServerMessage::RoomState {
                room,
                epoch,
                last_seq,
                ..
            } => {
                let key = room.to_ascii_lowercase();
                rec(
                    conn,
                    Ev::RoomState {
                        room: key.clone(),
                        epoch,
                        last: last_seq,
                    },
                );
                st.epoch.insert(key.clone(), epoch);
                if let Some((room, _)) = &joining {
                    if room.eq_ignore_ascii_case(&key) {
                        pending_joins.retain(|r| !r.eq_ignore_ascii_case(&key));
                        joining = None;
                    }
                }
                match resume.get(&key) {
                    Some(&(e, s)) if e == epoch && s < last_seq => {
                        rec(
                            conn,
                            Ev::HistAsk {
                                room: key.clone(),
                                epoch,
                                after: s,
                            },
                        );
                        if !w.send(&ClientMessage::History {
                            room: &key,
                            epoch,
                            after_seq: s,
                            limit: 1000,
                        }) {
                            return false;
                        }
                    }
                    Some(&(e, _)) if e == epoch => {}
                    _ => {
                        resume.insert(key, (epoch, last_seq));
                    }
                }
            }
            ServerMessage::Left { room, nick, reason } => {
                if nick == me {
                    st.joined.remove(&room.to_ascii_lowercase());
                }
                rec(
                    conn,
                    Ev::Left {
                        room: room.to_owned(),
                        nick: nick.to_owned(),
                        reason: reason.to_owned(),
                    },
                );
            }
            ServerMessage::Message {
                room,
                seq,
                from,
                text,
            } => {
                let key = room.to_ascii_lowercase();
                if from == me && text.starts_with(&format!("{}:", spec.nick)) {
                    outstanding = outstanding.saturating_sub(1);
                }
                if let Some(&e) = st.epoch.get(&key) {
                    let r = resume.entry(key.clone()).or_insert((e, 0));
                    if r.0 == e && seq > r.1 {
                        r.1 = seq;
                    }
                }
                rec(
                    conn,
                    Ev::Msg {
                        room: key,
                        seq,
                        from: from.to_owned(),
                        text: text.to_owned(),
                    },
                );
            }
            ServerMessage::HistoryMessage {
                room,
                seq,
                from,
                text,
                ..
            } => {
                let key = room.to_ascii_lowercase();
                if let (Some(&e), Some(r)) = (st.epoch.get(&key), resume.get_mut(&key)) {
                    if r.0 == e && seq > r.1 {
                        r.1 = seq;
                    }
                }
                rec(
                    conn,
                    Ev::Hist {
                        room: key,
                        seq,
                        from: from.to_owned(),
                        text: text.to_owned(),
                    },
                );
            }
            ServerMessage::HistoryEnd {
                room,
                epoch,
                newest,
                status,
            } => {
                let key = room.to_ascii_lowercase();
                rec(
                    conn,
                    Ev::HistEnd {
                        room: key.clone(),
                        epoch,
                        newest,
                        status,
                    },
                );
                if status & history_status::MORE != 0 {
                    let after = resume.get(&key).map_or(0, |r| r.1);
                    rec(
                        conn,
                        Ev::HistAsk {
                            room: key.clone(),
                            epoch,
                            after,
                        },
                    );
                    if !w.send(&ClientMessage::History {
                        room: &key,
                        epoch,
                        after_seq: after,
                        limit: 1000,
                    }) {
                        return false;
                    }
                }
            }
            ServerMessage::NickChanged { old, new } => {
                if old == me {
                    me = new.to_owned();
                }
                rec(
                    conn,
                    Ev::NickChanged {
                        old: old.to_owned(),
                        new: new.to_owned(),
                    },
                );
            }
            ServerMessage::Error { error, request, .. } => {
                rec(conn, Ev::Error { error, request });
                if request == code::SAY {
                    outstanding = outstanding.saturating_sub(1);
                }
                if request == code::JOIN {
                    if let Some((room, _)) = joining.take() {
                        // ALREADY_IN_ROOM: the node restored it for us.
                        if error == ErrorCode::AlreadyInRoom as u16 {
                            pending_joins.retain(|r| *r != room);
                        }
                        next_join_at = Instant::now() + Duration::from_millis(200);
                    }
                }
            }
            ServerMessage::Ping { token } => {
                let _ = w.send(&ClientMessage::Pong { token });
            }
            _ => {}
        }
        if let Some((_, since)) = &joining {
            if since.elapsed() > Duration::from_secs(10) {
                joining = None; // no answer: try again
            }
        }
        // A SAY whose answer got lost in a fault does not block the client.
        if outstanding >= 8 && Instant::now() > next_say + Duration::from_secs(3) {
            outstanding = 0;
        }
    }
    true
}

/// What a session tracks while it runs.
#[derive(Default)]
struct Live {
    joined: BTreeSet<String>,
    epoch: HashMap<String, u64>,
}

impl Live {
    fn in_room(&self, room: &str) -> bool {
        self.joined.contains(&room.to_ascii_lowercase())
    }
}

// ---------------------------------------------------------------------------
// The checker.
// ---------------------------------------------------------------------------

/// What the checker found, per property, with details.
#[derive(Default, Debug)]
pub struct Report {
    /// Violations per property letter.
    pub violations: BTreeMap<char, Vec<String>>,
    pub connections: usize,
    pub messages: usize,
    pub deliveries: usize,
    pub refused_hellos: usize,
}

impl Report {
    fn add(&mut self, prop: char, what: String) {
        self.violations.entry(prop).or_default().push(what);
    }

    pub fn count(&self, prop: char) -> usize {
        self.violations.get(&prop).map_or(0, Vec::len)
    }

    /// One line per property, and up to `detail` examples of each violation.
    pub fn summary(&self, detail: usize) -> String {
        let mut s = format!(
            "{} connections, {} distinct messages, {} deliveries, {} refused HELLOs\n",
            self.connections, self.messages, self.deliveries, self.refused_hellos
        );
        for (p, name) in PROPERTIES {
            let _ = writeln!(s, "({p}) {name}: {} violations", self.count(p));
            for v in self.violations.get(&p).into_iter().flatten().take(detail) {
                let _ = writeln!(s, "    {v}");
            }
        }
        s
    }

    /// Fails the test naming every property that broke.
    #[track_caller]
    pub fn assert_clean(&self, fault: &str) {
        let broken: Vec<char> = self.violations.keys().copied().collect();
        assert!(
            broken.is_empty(),
            "{fault}: properties {broken:?} broke\n{}",
            self.summary(8)
        );
    }

    #[track_caller]
    pub fn assert_busy(&self, fault: &str, min_messages: usize) {
        assert!(
            self.messages >= min_messages,
            "{fault}: only {} messages went through (a run this quiet proves nothing)\n{}",
            self.messages,
            self.summary(0)
        );
    }
}

pub const PROPERTIES: [(char, &str); 5] = [
    ('a', "one message per (room, epoch, seq) on every node"),
    ('b', "gap-free for members connected throughout"),
    ('c', "exact resume across nodes"),
    ('d', "never two live sessions with one nick"),
    (
        'e',
        "JOINED and LEFT of a nick alternate per observer and room",
    ),
];

/// Who a connection is, for messages: `c3@node1#2 [12.3s-20.1s]`.
fn who(c: &Conn, i: usize) -> String {
    format!(
        "{}@node{}#{} [{:.1}s-{:.1}s]",
        c.client,
        c.node,
        i,
        c.start.as_secs_f64(),
        c.end.as_secs_f64()
    )
}

/// One line per connection (who, where, when, how HELLO went, what it
/// saw), printed when `MUXCHAT_FAULTS_DUMP` is set, for reading a run.
pub fn dump(conns: &[Conn]) {
    if std::env::var_os("MUXCHAT_FAULTS_DUMP").is_none() {
        return;
    }
    for (i, c) in conns.iter().enumerate() {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        let mut hello = String::from("no answer");
        let mut notes = Vec::new();
        for (t, e) in &c.events {
            let k = match e {
                Ev::Welcome(n) => {
                    hello = format!("WELCOME {n}");
                    "welcome"
                }
                Ev::HelloRefused(e) => {
                    hello = format!("refused {:?}", ErrorCode::from_u16(*e).map(|e| e.name()));
                    "refused"
                }
                Ev::Joined { .. } => "joined",
                Ev::Left { room, nick, reason } => {
                    if reason.contains("lost") && notes.len() < 4 {
                        notes.push(format!(
                            "{:.1}s LEFT {room} {nick} {reason:?}",
                            t.as_secs_f64()
                        ));
                    }
                    "left"
                }
                Ev::RoomState { .. } => "room_state",
                Ev::Msg { .. } => "msg",
                Ev::HistAsk { .. } => "hist_ask",
                Ev::Hist { .. } => "hist",
                Ev::HistEnd { .. } => "hist_end",
                Ev::NickChanged { old, new } => {
                    notes.push(format!("{:.1}s NICK_CHANGED {old}->{new}", t.as_secs_f64()));
                    "nick_changed"
                }
                Ev::Error { error, .. } => {
                    if notes.len() < 6 {
                        notes.push(format!(
                            "{:.1}s ERROR {:?}",
                            t.as_secs_f64(),
                            ErrorCode::from_u16(*error).map(|e| e.name())
                        ));
                    }
                    "error"
                }
                Ev::Said { .. } => "said",
            };
            *kinds.entry(k).or_default() += 1;
        }
        eprintln!(
            "  {} alive_at_end={} {hello} {kinds:?} {notes:?}",
            who(c, i),
            c.alive_at_end
        );
    }
}

/// Runs the five checks over everything the connections saw.
pub fn check(conns: &[Conn]) -> Report {
    dump(conns);
    let mut rep = Report {
        connections: conns.len(),
        ..Report::default()
    };
    // Every delivery with its epoch (from the connection's ROOM_STATE).
    // (room, epoch, seq) -> (from, text, first observer)
    let mut by_seq: BTreeMap<(String, u64, u64), (String, String, String)> = BTreeMap::new();
    let mut by_text: HashMap<String, BTreeSet<(String, u64, u64)>> = HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        let mut epoch: HashMap<String, u64> = HashMap::new();
        for (t, ev) in &c.events {
            let (room, seq, from, text, kind) = match ev {
                Ev::RoomState { room, epoch: e, .. } => {
                    epoch.insert(room.clone(), *e);
                    continue;
                }
                Ev::Msg {
                    room,
                    seq,
                    from,
                    text,
                } => (room, seq, from, text, "MESSAGE"),
                Ev::Hist {
                    room,
                    seq,
                    from,
                    text,
                } => (room, seq, from, text, "HISTORY_MESSAGE"),
                Ev::Error { error, request } => {
                    if *error == ErrorCode::Unavailable as u16 && *request == code::HELLO {
                        rep.refused_hellos += 1;
                    }
                    continue;
                }
                Ev::HelloRefused(_) => {
                    rep.refused_hellos += 1;
                    continue;
                }
                _ => continue,
            };
            rep.deliveries += 1;
            let Some(&e) = epoch.get(room) else {
                rep.add(
                    'a',
                    format!(
                        "{} got {kind} {room} seq {seq} before any ROOM_STATE of the room",
                        who(c, i)
                    ),
                );
                continue;
            };
            let key = (room.clone(), e, *seq);
            let here = format!("{} at {:.2}s ({kind})", who(c, i), t.as_secs_f64());
            match by_seq.get(&key) {
                None => {
                    by_seq.insert(key.clone(), (from.clone(), text.clone(), here));
                }
                Some((f0, t0, first)) if (f0, t0) != (from, text) => rep.add(
                    'a',
                    format!(
                        "{room} epoch {e} seq {seq}: {first} saw <{f0}> {t0:?}, {here} saw <{from}> {text:?}"
                    ),
                ),
                Some(_) => {}
            }
            by_text.entry(text.clone()).or_default().insert(key);
        }
    }
    rep.messages = by_seq.len();
    for (text, keys) in &by_text {
        if keys.len() > 1 {
            rep.add(
                'a',
                format!(
                    "the SAY {text:?} was delivered under several (room, epoch, seq): {keys:?}"
                ),
            );
        }
    }
    let seen = |room: &str, e: u64, s: u64| by_seq.contains_key(&(room.to_owned(), e, s));
    let said = |room: &str, e: u64, s: u64| {
        by_seq
            .get(&(room.to_owned(), e, s))
            .map_or_else(String::new, |(f, t, first)| {
                format!("; seq {s} was <{f}> {t:?}, seen first by {first}")
            })
    };
    check_gaps(conns, &mut rep, &seen, &said);
    check_resume(conns, &mut rep, &seen);
    check_nicks(conns, &mut rep);
    check_presence(conns, &mut rep);
    rep
}

/// (b): within one connection, from its ROOM_STATE on, live MESSAGEs come
/// in seq order without a hole, unless nobody anywhere saw the missing seq
/// (a message Redis took but no node delivered shows as a gap: allowed).
fn check_gaps(
    conns: &[Conn],
    rep: &mut Report,
    seen: &dyn Fn(&str, u64, u64) -> bool,
    said: &dyn Fn(&str, u64, u64) -> String,
) {
    for (i, c) in conns.iter().enumerate() {
        // room -> (epoch, last seq expected before the next)
        let mut at: HashMap<String, (u64, Option<u64>)> = HashMap::new();
        let mut me = String::new();
        for (t, ev) in &c.events {
            match ev {
                Ev::Welcome(n) => me = n.clone(),
                Ev::NickChanged { old, new } if *old == me => me = new.clone(),
                Ev::RoomState { room, epoch, last } => {
                    at.insert(room.clone(), (*epoch, Some(*last)));
                }
                Ev::Left { room, nick, .. } if *nick == me => {
                    // Its membership ended: a new baseline when it is back.
                    if let Some(a) = at.get_mut(&room.to_ascii_lowercase()) {
                        a.1 = None;
                    }
                }
                Ev::Msg { room, seq, .. } => {
                    let Some((e, last)) = at.get_mut(room) else {
                        continue;
                    };
                    match *last {
                        None => *last = Some(*seq),
                        Some(l) if *seq <= l => {
                            rep.add(
                                'b',
                                format!(
                                    "{} at {:.2}s: {room} epoch {e} seq {seq} after seq {l} (repeated or out of order)",
                                    who(c, i),
                                    t.as_secs_f64()
                                ),
                            );
                        }
                        Some(l) => {
                            let missed: Vec<u64> =
                                (l + 1..*seq).filter(|&s| seen(room, *e, s)).collect();
                            if !missed.is_empty() {
                                rep.add(
                                    'b',
                                    format!(
                                        "{} at {:.2}s: {room} epoch {e} jumped from seq {l} to {seq}, missing {} seqs others saw (first {:?}){}",
                                        who(c, i),
                                        t.as_secs_f64(),
                                        missed.len(),
                                        &missed[..missed.len().min(5)],
                                        said(room, *e, missed[0])
                                    ),
                                );
                            }
                            *last = Some(*seq);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// (c): per client and (room, epoch), over all its connections, each seq
/// reaches it once (live or through HISTORY); a hole between the first
/// and the last seq it got is allowed only where HISTORY said "gap" or
/// nobody saw that seq. Each HISTORY reply without the gap bit is exactly
/// `after + 1 ..= newest`.
fn check_resume(conns: &[Conn], rep: &mut Report, seen: &dyn Fn(&str, u64, u64) -> bool) {
    let mut per_client: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in conns.iter().enumerate() {
        per_client.entry(&c.client).or_default().push(i);
    }
    for (client, idx) in per_client {
        // (room, epoch) -> seq -> how many times
        let mut got: BTreeMap<(String, u64), BTreeMap<u64, u32>> = BTreeMap::new();
        // (room, epoch) -> seqs HISTORY said were skipped
        let mut excused: BTreeMap<(String, u64), Vec<(u64, u64)>> = BTreeMap::new();
        for &i in &idx {
            let c = &conns[i];
            let mut epoch: HashMap<String, u64> = HashMap::new();
            let mut asked: HashMap<String, (u64, u64, Vec<u64>)> = HashMap::new();
            for (_, ev) in &c.events {
                match ev {
                    Ev::RoomState { room, epoch: e, .. } => {
                        epoch.insert(room.clone(), *e);
                    }
                    Ev::Msg { room, seq, .. } => {
                        if let Some(&e) = epoch.get(room) {
                            *got.entry((room.clone(), e))
                                .or_default()
                                .entry(*seq)
                                .or_default() += 1;
                        }
                    }
                    Ev::HistAsk {
                        room,
                        epoch: e,
                        after,
                    } => {
                        asked.insert(room.clone(), (*e, *after, Vec::new()));
                    }
                    Ev::Hist { room, seq, .. } => {
                        if let Some(&e) = epoch.get(room) {
                            *got.entry((room.clone(), e))
                                .or_default()
                                .entry(*seq)
                                .or_default() += 1;
                        }
                        if let Some(a) = asked.get_mut(room) {
                            a.2.push(*seq);
                        }
                    }
                    Ev::HistEnd {
                        room,
                        epoch: e,
                        newest,
                        status,
                    } => {
                        let Some((ae, after, seqs)) = asked.remove(room) else {
                            continue;
                        };
                        if *e != ae {
                            continue; // a new epoch: nothing to resume
                        }
                        let gap = status & history_status::GAP != 0;
                        let more = status & history_status::MORE != 0;
                        let first = if gap {
                            let f = seqs.first().copied().unwrap_or(newest + 1);
                            excused
                                .entry((room.clone(), ae))
                                .or_default()
                                .push((after + 1, f));
                            f
                        } else {
                            after + 1
                        };
                        let last = if more {
                            seqs.last().copied().unwrap_or(after)
                        } else {
                            *newest
                        };
                        let want: Vec<u64> = (first..=last).collect();
                        if seqs != want {
                            rep.add(
                                'c',
                                format!(
                                    "{}: HISTORY {room} epoch {ae} after {after} (status {status}, newest {newest}) gave seqs {} instead of {first}..={last}",
                                    who(c, i),
                                    compact(&seqs)
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        for ((room, e), seqs) in &got {
            for (s, n) in seqs {
                if *n > 1 {
                    rep.add(
                        'c',
                        format!("{client}: {room} epoch {e} seq {s} delivered {n} times"),
                    );
                }
            }
            let (Some(&lo), Some(&hi)) = (seqs.keys().next(), seqs.keys().next_back()) else {
                continue;
            };
            let ex = excused.get(&(room.clone(), *e));
            let holes: Vec<u64> = (lo..hi)
                .filter(|s| !seqs.contains_key(s) && seen(room, *e, *s))
                .filter(|s| !ex.is_some_and(|v| v.iter().any(|(a, b)| a <= s && s < b)))
                .collect();
            if !holes.is_empty() {
                rep.add(
                    'c',
                    format!(
                        "{client}: {room} epoch {e}: {} seqs between {lo} and {hi} never reached it and no HISTORY said gap: {}",
                        holes.len(),
                        compact(&holes)
                    ),
                );
            }
        }
    }
}

/// `1..=4,7,9..=10`, at most a few ranges.
fn compact(v: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() && out.len() < 6 {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}..={}", v[i], v[j])
        });
        i = j + 1;
    }
    if i < v.len() {
        out.push("...".into());
    }
    format!("[{}]", out.join(","))
}

/// (d): who held which nick when. Two connections holding one nick
/// (case-insensitively) at once for longer than [`NICK_GRACE`], or both
/// still holding it when the run stopped, is a violation.
fn check_nicks(conns: &[Conn], rep: &mut Report) {
    // nick -> (from, to, alive at end, connection)
    let mut held: BTreeMap<String, Vec<(Duration, Duration, bool, usize)>> = BTreeMap::new();
    for (i, c) in conns.iter().enumerate() {
        let mut cur: Option<(String, Duration)> = None;
        for (t, ev) in &c.events {
            match ev {
                Ev::Welcome(n) => cur = Some((n.clone(), *t)),
                Ev::NickChanged { old, new } => {
                    if let Some((n, since)) = &cur {
                        if n == old {
                            held.entry(n.to_ascii_lowercase())
                                .or_default()
                                .push((*since, *t, false, i));
                            cur = Some((new.clone(), *t));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((n, since)) = cur {
            held.entry(n.to_ascii_lowercase())
                .or_default()
                .push((since, c.end, c.alive_at_end, i));
        }
    }
    for (nick, spans) in &held {
        for (x, a) in spans.iter().enumerate() {
            for b in &spans[x + 1..] {
                if a.3 == b.3 {
                    continue;
                }
                let from = a.0.max(b.0);
                let to = a.1.min(b.1);
                let both_at_end = a.2 && b.2;
                if both_at_end || to > from + NICK_GRACE {
                    rep.add(
                        'd',
                        format!(
                            "nick {nick:?} held by {} from {:.2}s and by {} from {:.2}s at once for {:.1}s{}",
                            who(&conns[a.3], a.3),
                            a.0.as_secs_f64(),
                            who(&conns[b.3], b.3),
                            b.0.as_secs_f64(),
                            to.saturating_sub(from).as_secs_f64(),
                            if both_at_end { " (both still at the end)" } else { "" }
                        ),
                    );
                }
            }
        }
    }
}

/// Presence of one nick in one room, as one observer knows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Here {
    Unknown,
    In,
    Out,
}

/// (e): per connection (observer), per room and nick, JOINED and LEFT
/// alternate, and no MESSAGE comes from a nick announced LEFT. What the observer knows starts unknown at its own JOIN (the
/// first event may be either); NICK_CHANGED moves presence to the new nick.
fn check_presence(conns: &[Conn], rep: &mut Report) {
    for (i, c) in conns.iter().enumerate() {
        let mut me = String::new();
        // room -> nick(lower) -> presence
        let mut rooms: HashMap<String, HashMap<String, Here>> = HashMap::new();
        for (t, ev) in &c.events {
            match ev {
                Ev::Welcome(n) => me = n.clone(),
                Ev::Joined { room, nick } => {
                    let room = room.to_ascii_lowercase();
                    let key = nick.to_ascii_lowercase();
                    if *nick == me {
                        // Its own JOIN (or its membership restored): a new
                        // view of the room, where everyone else is unknown.
                        rooms.insert(room.clone(), HashMap::from([(key, Here::In)]));
                        continue;
                    }
                    let m = rooms.entry(room.clone()).or_default();
                    let was = m.get(&key).copied().unwrap_or(Here::Unknown);
                    if was == Here::In {
                        rep.add(
                            'e',
                            format!(
                                "{} at {:.2}s: JOINED {room} {nick} while {nick} was already present (no LEFT between)",
                                who(c, i),
                                t.as_secs_f64()
                            ),
                        );
                    }
                    m.insert(key, Here::In);
                }
                Ev::Left { room, nick, reason } => {
                    let room = room.to_ascii_lowercase();
                    let Some(m) = rooms.get_mut(&room) else {
                        continue;
                    };
                    let key = nick.to_ascii_lowercase();
                    if m.get(&key) == Some(&Here::Out) {
                        rep.add(
                            'e',
                            format!(
                                "{} at {:.2}s: LEFT {room} {nick} ({reason:?}) while {nick} was already gone (no JOINED between)",
                                who(c, i),
                                t.as_secs_f64()
                            ),
                        );
                    }
                    m.insert(key, Here::Out);
                }
                Ev::Msg {
                    room, from, seq, ..
                } => {
                    // Only members speak: never a MESSAGE from a nick this
                    // observer was told had left (and not joined again).
                    let gone = rooms
                        .get(room)
                        .is_some_and(|m| m.get(&from.to_ascii_lowercase()) == Some(&Here::Out));
                    if gone {
                        rep.add(
                            'e',
                            format!(
                                "{} at {:.2}s: MESSAGE {room} seq {seq} from {from}, announced LEFT there (no JOINED since)",
                                who(c, i),
                                t.as_secs_f64()
                            ),
                        );
                    }
                }
                Ev::NickChanged { old, new } => {
                    if *old == me {
                        me = new.clone();
                    }
                    let (o, n) = (old.to_ascii_lowercase(), new.to_ascii_lowercase());
                    for m in rooms.values_mut() {
                        match m.get(&o).copied() {
                            Some(Here::In) => {
                                m.insert(o.clone(), Here::Out);
                                m.insert(n.clone(), Here::In);
                            }
                            Some(Here::Out) => {}
                            _ => {
                                m.insert(n.clone(), Here::Unknown);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Probes: later registrations of nicks that live sessions hold.
// ---------------------------------------------------------------------------

/// Starts, for each nick, a session in no room on node `node` that claims
/// it once (no reconnect): if the cluster lets it in while the nick's
/// holder lives, the checker's (d) expects one of them renamed in time.
pub fn probe(crowd: &mut Crowd, cluster: &Cluster, nicks: &[String], node: usize) {
    for n in nicks {
        crowd.spawn(
            cluster,
            Spec {
                label: format!("probe-{n}"),
                nick: n.clone(),
                home: node,
                rooms: Vec::new(),
                say_every: None,
                reconnect: false,
                reconnect_delay: Duration::ZERO,
            },
        );
    }
}

/// Sleeps `d` (scaled).
pub fn pause(d: Duration) {
    std::thread::sleep(scaled(d));
}

/// Prints what a run did (shown by `cargo test -- --nocapture` and on failure).
pub fn log(cluster: &Cluster, what: &str) {
    eprintln!("[{:7.2}s] {what}", cluster.now());
}
