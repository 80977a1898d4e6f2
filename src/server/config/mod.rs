//! The daemon's settings: raw command-line flags turned into a validated
//! [`Config`].
//!
//! Every option also reads `MUXCHAT_<NAME>` from the environment (the command
//! line wins). A bad value is a usage error: clap names the option and the
//! process exits with status 2, as `daemon-cli.md` requires.
//!
//! `--config FILE` (TOML, keys named like the long options: `max-clients =
//! 20000`) supplies values too. Precedence: command line, then environment,
//! then the file, then the default; a key the daemon does not know is a
//! usage error naming the key.
//!
//! Options are usable one at a time: where a default would clash with a
//! value given for another option (`--max-payload 1024` with `--max-text`
//! left at 4096), the default moves to the nearest value that fits and the
//! daemon logs it once. Only given values that contradict each other are a
//! usage error. A value from the environment counts as given.
//!
//! Split by job:
//! - this file: the options themselves ([`Args`], clap derive, each with
//!   its `MUXCHAT_<NAME>`), their value enums, and the settled [`Config`]
//!   with its defaults;
//! - `resolve`: arguments, environment and `--config` file
//!   into a [`Config`]: precedence, dependent defaults (the sizes that
//!   constrain each other) and checks across options;
//! - `values`: value parsers whose errors must name the option and never
//!   echo a secret (`--redis`), or check a value's characters;
//! - `headings`: `--help`'s (and the man page's) groups of options, and
//!   [`command`], the clap command with them applied.
//! - `tests.rs`: the unit tests, so this file is the options and nothing
//!   else.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::server::cluster::url::RedisUrl;
use crate::server::doors::proxy::Cidrs;

mod headings;
mod resolve;
mod values;

pub use headings::command;
use values::{parse_cidrs, parse_node_name, RedisUrlParser};

/// `muxchatd`: a single-threaded chat server (one mio event loop).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "muxchatd",
    version,
    about = "muxchatd: the muxchat chat daemon. One thread and one mio event loop serve \
             every connection: rooms, nicks, whispers, heartbeats and limits.",
    after_help = "muxchatd gen-cert --dir DIR [--name HOST]... [--ip ADDR]...: writes a private \
                  CA and a server certificate it signed, for --tls-cert and --tls-key (see \
                  muxchatd gen-cert --help). muxchatd token --signing-key FILE --sub ACCOUNT \
                  [--ttl 1h] ...: prints a signed token for protocol version 3 (see muxchatd \
                  token --help).",
    long_about = None
)]
pub struct Args {
    /// TOML file of options (keys as the long options, e.g. `max-clients = 20000`);
    /// the command line and the environment win over it.
    #[arg(long, env = "MUXCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Listen address, IPv4 or IPv6 (`[::1]:25000`); port 0 picks a free port.
    #[arg(
        long,
        env = "MUXCHAT_BIND",
        default_value = "0.0.0.0:25000",
        value_name = "ADDR"
    )]
    pub bind: SocketAddr,

    /// Connections beyond this get ERROR(SERVER_FULL) and are closed.
    #[arg(long, env = "MUXCHAT_MAX_CLIENTS", default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_clients: u32,

    /// Largest frame payload accepted, in bytes.
    #[arg(long, env = "MUXCHAT_MAX_PAYLOAD", default_value_t = 65_536, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(256..=16 * 1024 * 1024))]
    pub max_payload: u32,

    /// Largest SAY/WHISPER text, in bytes.
    #[arg(long, env = "MUXCHAT_MAX_TEXT", default_value_t = 4096, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub max_text: u32,

    /// Rooms one session may be in.
    #[arg(long, env = "MUXCHAT_MAX_ROOMS", default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_rooms: u32,

    /// Unsent output one session may hold before it is cut (SLOW_CONSUMER).
    #[arg(long, env = "MUXCHAT_MAX_OUTBUF", default_value_t = 1_048_576, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1024..=1 << 30))]
    pub max_outbuf: u32,

    /// Silence before the server PINGs; the same again before PING_TIMEOUT.
    #[arg(long, env = "MUXCHAT_HEARTBEAT_MS", default_value_t = 30_000, value_name = "MS",
          value_parser = clap::value_parser!(u32).range(10..))]
    pub heartbeat_ms: u32,

    /// Time allowed to complete HELLO.
    #[arg(long, env = "MUXCHAT_LOGIN_TIMEOUT_MS", default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u32).range(10..))]
    pub login_timeout_ms: u32,

    /// Shutdown drain period.
    #[arg(
        long,
        env = "MUXCHAT_GRACE_MS",
        default_value_t = 5_000,
        value_name = "MS"
    )]
    pub grace_ms: u32,

    /// Above this many members, a room's JOINED/LEFT go only to the session concerned.
    #[arg(
        long,
        env = "MUXCHAT_PRESENCE_LIMIT",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub presence_limit: u32,

    /// Frames per second a session may send on average; 0 turns limiting off.
    #[arg(long, env = "MUXCHAT_RATE", default_value_t = 20, value_name = "N")]
    pub rate: u32,

    /// Frames a session may send at once before the rate applies.
    #[arg(long, env = "MUXCHAT_BURST", default_value_t = 40, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,

    /// Log every readiness event (token, readable/writable, bytes moved).
    #[arg(long, env = "MUXCHAT_TRACE_EVENTS")]
    pub trace_events: bool,

    /// PEM certificate chain; with --tls-key, the port also takes TLS.
    #[arg(
        long,
        env = "MUXCHAT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "MUXCHAT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Refuse plaintext: binary sessions get ERROR(TLS_REQUIRED), HTTP gets 426.
    #[arg(long, env = "MUXCHAT_TLS_REQUIRED", requires_all = ["tls_cert", "tls_key"])]
    pub tls_required: bool,

    /// TLS handshake messages processed per loop iteration (each answer to
    /// a ClientHello signs: ~1.2 ms with RSA-2048); the rest wait for the
    /// next iteration in arrival order.
    #[arg(long, env = "MUXCHAT_TLS_HANDSHAKES_PER_ITERATION", default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub tls_handshakes_per_iteration: u32,

    /// TLS handshakes one IP address may start per second (0: no limit);
    /// connections past it are closed. Loopback is exempt unless
    /// --limit-loopback is given.
    #[arg(
        long,
        env = "MUXCHAT_TLS_HANDSHAKES_PER_IP",
        default_value_t = 32,
        value_name = "N"
    )]
    pub tls_handshakes_per_ip: u32,

    /// Answer LAN discovery probes (`muxchat --discover`) on UDP, same address and port.
    #[arg(long, env = "MUXCHAT_DISCOVERY")]
    pub discovery: bool,

    /// Largest HTTP request head (request line and headers), in bytes; a
    /// larger one gets 431 (a request line above 2048 bytes gets 414).
    #[arg(long, env = "MUXCHAT_MAX_HTTP_HEAD", default_value_t = 8192, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(256..=1 << 20))]
    pub max_http_head: u32,

    /// Most header fields in an HTTP request; more get 431.
    #[arg(long, env = "MUXCHAT_MAX_HTTP_HEADERS", default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(4..=1024))]
    pub max_http_headers: u32,

    /// Write the loop trace to FILE: one JSON line per stage's action, for
    /// docs/loop-viewer.html.
    #[arg(long, env = "MUXCHAT_TRACE_FILE", value_name = "FILE")]
    pub trace_file: Option<PathBuf>,

    /// Largest size of the --trace-file, in bytes; a last line says when it is reached.
    #[arg(long, env = "MUXCHAT_TRACE_FILE_MAX", default_value_t = 64 * 1024 * 1024, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(4096..=1 << 40))]
    pub trace_file_max: u64,

    /// Connections one IP address may hold open at once (0: no limit).
    /// Loopback addresses are exempt unless --limit-loopback is given.
    #[arg(
        long,
        env = "MUXCHAT_MAX_PER_IP",
        default_value_t = 16,
        value_name = "N"
    )]
    pub max_per_ip: u32,

    /// Apply --max-per-ip to loopback addresses too (by default they are
    /// exempt, so local load tests can open thousands of connections).
    #[arg(long, env = "MUXCHAT_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,

    /// Leading bits of an IPv4 address that --max-per-ip counts as one
    /// client (32: each address; 24: each /24).
    #[arg(long, env = "MUXCHAT_PER_IP_PREFIX_V4", default_value_t = 32, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(0..=32))]
    pub per_ip_prefix_v4: u8,

    /// Leading bits of an IPv6 address that --max-per-ip counts as one
    /// client (64: each /64, what one host usually holds; 128: each address).
    #[arg(long, env = "MUXCHAT_PER_IP_PREFIX_V6", default_value_t = 64, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(0..=128))]
    pub per_ip_prefix_v6: u8,

    /// Messages held per room for HISTORY (0: none held; version 2 is still spoken).
    #[arg(long, env = "MUXCHAT_HISTORY", default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=65_535))]
    pub history: u32,

    /// Bytes of held history across all rooms; past it, the oldest messages
    /// of the least recently active rooms go first.
    #[arg(long, env = "MUXCHAT_HISTORY_MEMORY", default_value_t = 64 * 1024 * 1024,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(0..=1 << 40))]
    pub history_memory: u64,

    /// How long an empty room keeps its epoch, seq and history, unlisted
    /// (0: removed at once).
    #[arg(long, env = "MUXCHAT_ROOM_TTL_MS", default_value_t = 0, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=7 * 24 * 3600 * 1000))]
    pub room_ttl_ms: u64,

    /// Most empty rooms lingering under --room-ttl-ms at once; past it, the
    /// room that emptied longest ago goes as if its TTL had ended.
    #[arg(long, env = "MUXCHAT_MAX_LINGERING_ROOMS", default_value_t = 100_000,
          value_name = "N", value_parser = clap::value_parser!(u64).range(0..=1 << 32))]
    pub max_lingering_rooms: u64,

    /// Bytes the lingering rooms may hold together (each: its bookkeeping,
    /// name and held history); past it, the room that emptied longest ago goes.
    #[arg(long, env = "MUXCHAT_LINGERING_MEMORY", default_value_t = 64 * 1024 * 1024,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(0..=1 << 40))]
    pub lingering_memory: u64,

    /// Where a standalone daemon keeps room state (topics, modes, bans,
    /// operator grants, invitations) and server-wide bans (in
    /// FILE.server-bans beside it) across restarts; each file written
    /// atomically at most once a second after a change to it. Unreadable
    /// or corrupt at start: exit 1 naming it. Not with --redis (a cluster
    /// keeps room state in Redis).
    #[arg(long, env = "MUXCHAT_STATE_FILE", value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// How long a room's moderation state is kept after the room last
    /// emptied (0: dropped as it empties).
    #[arg(long, env = "MUXCHAT_ROOM_STATE_TTL_MS", default_value_t = 604_800_000,
          value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=366 * 24 * 3600 * 1000))]
    pub room_state_ttl_ms: u64,

    /// Join the cluster that shares this Redis
    /// (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`, HOST a name, IPv4 or
    /// `[IPv6]`; PORT 6379 when left out; `rediss://` for TLS). Prefer
    /// MUXCHAT_REDIS or --config for a URL with a password: the command
    /// line is visible to every user of the host.
    #[arg(long, env = "MUXCHAT_REDIS", value_name = "URL", value_parser = RedisUrlParser)]
    pub redis: Option<RedisUrl>,

    /// PEM file of the CA certificates that verify a `rediss://` Redis,
    /// instead of the system roots. Needs a rediss:// --redis.
    #[arg(long, env = "MUXCHAT_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,

    /// A request Redis has not answered within this gets ERROR(UNAVAILABLE),
    /// and the node drops and reopens its link (also bounds connecting,
    /// the TLS handshake and AUTH). Needs --redis.
    #[arg(long, env = "MUXCHAT_REDIS_TIMEOUT_MS", default_value_t = 2000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub redis_timeout_ms: u64,

    /// This node's name in the cluster, its logs and WELCOME's server string
    /// (1 to 64 letters, digits, `_ - . :`; default: host name and port). Without
    /// --redis it names a standalone daemon in its logs and WELCOME.
    #[arg(long, env = "MUXCHAT_NODE_NAME", value_name = "NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,

    /// Set SO_REUSEPORT on the listener, so several daemons can listen on one
    /// port (the kernel spreads new connections over them).
    #[arg(long, env = "MUXCHAT_REUSE_PORT")]
    pub reuse_port: bool,

    /// How long this node's liveness key lives in Redis without a refresh; a
    /// dead node's members get LEFT ("node lost") elsewhere within about this
    /// plus a third. Needs --redis.
    #[arg(long, env = "MUXCHAT_NODE_TTL_MS", default_value_t = 15_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub node_ttl_ms: u64,

    /// Bytes of requests sent to Redis and not yet answered; past it,
    /// requests get ERROR(UNAVAILABLE) instead of memory growing. Needs --redis.
    #[arg(long, env = "MUXCHAT_REDIS_MAX_PENDING", default_value_t = 8 * 1024 * 1024,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(65_536..=1 << 30))]
    pub redis_max_pending: u64,

    /// How long a node serves one LIST_ROOMS (and one room's LIST_USERS)
    /// answer read from Redis: their cost grows with the cluster, so they
    /// are read at most once per this, whatever the callers (0: every
    /// caller reads; callers at once still share a read). Needs --redis.
    #[arg(long, env = "MUXCHAT_CLUSTER_LIST_TTL_MS", default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub cluster_list_ttl_ms: u64,
    /// Connections from these networks (`ADDR/BITS`, comma-separated) may
    /// start with a PROXY protocol v1 or v2 header; the client address in
    /// it is what per-IP limits and logs see.
    #[arg(long, env = "MUXCHAT_PROXY_FROM", value_name = "CIDR[,CIDR]", value_parser = parse_cidrs)]
    pub proxy_from: Option<Cidrs>,

    /// The key that verifies tokens (protocol version 3): a PEM public key
    /// (RSA for RS256, EC P-256 for ES256, Ed25519 for EdDSA) or, for
    /// HS256, a file holding the shared secret (its bytes, less one
    /// trailing newline). Re-read on SIGHUP.
    #[arg(long, env = "MUXCHAT_AUTH_KEY", value_name = "FILE")]
    pub auth_key: Option<PathBuf>,

    /// `off` (tokens not taken), `optional` (guests allowed, shown with `~`)
    /// or `required` (HELLO without a token: AUTH_REQUIRED). Default:
    /// `optional` with --auth-key, else `off`; `optional` or `required`
    /// need --auth-key.
    #[arg(long, env = "MUXCHAT_AUTH", value_enum, value_name = "MODE")]
    pub auth: Option<AuthMode>,

    /// When given, a token's `iss` must be this.
    #[arg(long, env = "MUXCHAT_AUTH_ISSUER", value_name = "S")]
    pub auth_issuer: Option<String>,

    /// When given, a token's `aud` must be (or contain) this.
    #[arg(long, env = "MUXCHAT_AUTH_AUDIENCE", value_name = "S")]
    pub auth_audience: Option<String>,

    /// Sessions one account may hold open at once; beyond it, HELLO gets
    /// SESSION_LIMIT.
    #[arg(long, env = "MUXCHAT_MAX_SESSIONS_PER_ACCOUNT", default_value_t = 8,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_sessions_per_account: u32,

    /// How long a session key (takeover, msg_id deduplication) outlives its
    /// session.
    #[arg(long, env = "MUXCHAT_SESSION_KEY_TTL_MS", default_value_t = 600_000,
          value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=7 * 24 * 3600 * 1000))]
    pub session_key_ttl_ms: u64,

    /// Token HELLOs verified per loop iteration; the rest wait for the
    /// next iteration in arrival order.
    #[arg(long, env = "MUXCHAT_LOGINS_PER_ITERATION", default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub logins_per_iteration: u32,

    /// Verification time per loop iteration after which the waiting token
    /// HELLOs wait for the next (0: only --logins-per-iteration bounds it).
    /// Keeps iterations short under RS256 or EdDSA login storms.
    #[arg(long, env = "MUXCHAT_LOGIN_TIME_PER_ITERATION_US", default_value_t = 2_000,
          value_name = "US", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub login_time_per_iteration_us: u32,

    /// Token HELLOs waiting for verification at once; beyond it, HELLO
    /// gets SERVER_FULL "too many logins waiting".
    #[arg(long, env = "MUXCHAT_MAX_LOGINS_WAITING", default_value_t = 16_384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_logins_waiting: u32,

    /// msg_ids remembered for deduplication across all session keys; past
    /// it the oldest goes (each key keeps at most its newest 4096).
    #[arg(long, env = "MUXCHAT_MAX_DEDUP_IDS", default_value_t = 1_048_576, value_name = "N",
          value_parser = clap::value_parser!(u64).range(4096..=268_435_456))]
    pub max_dedup_ids: u64,

    /// Session keys kept after their sessions ended (for
    /// --session-key-ttl-ms); past it the key that ended first goes, with
    /// its msg_ids.
    #[arg(long, env = "MUXCHAT_MAX_KEPT_SESSION_KEYS", default_value_t = 100_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub max_kept_session_keys: u64,

    /// Sessions whose end is handled (rooms left, last output, close) per
    /// loop iteration; the rest wait for the next, oldest first, so a
    /// mass hang-up does not stall everyone else.
    #[arg(long, env = "MUXCHAT_CLOSES_PER_ITERATION", default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub closes_per_iteration: u32,

    /// Log line format on stderr: `text`, or `json` (one object per line:
    /// time, level, target, message and the event's fields).
    #[arg(long, env = "MUXCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, value_name = "FMT")]
    pub log_format: LogFormat,
}

/// `--log-format`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// env_logger's lines, with the event's fields as `key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--auth`'s values: whether tokens are taken and guests allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Tokens are not taken (a non-empty token is fatal AUTH_FAILED);
    /// version 3 behaves as version 2 for identity, no `~`.
    Off,
    /// HELLO without a token registers a guest, shown with `~`.
    Optional,
    /// HELLO without a token, of any version, is fatal AUTH_REQUIRED.
    Required,
}

impl AuthMode {
    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Optional => "optional",
            AuthMode::Required => "required",
        }
    }
}

/// The command line a [`Config`] was parsed from, kept for SIGHUP. Its
/// `Debug` shows only how many arguments there are: they may hold a Redis
/// URL with its password, and a config is printed at debug level.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Argv(pub Vec<OsString>);

impl std::fmt::Debug for Argv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Argv({} arguments)", self.0.len())
    }
}

/// Validated settings for one daemon run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Most connections open at once, registered or not.
    pub max_clients: usize,
    /// Largest frame payload accepted.
    pub max_payload: u32,
    /// Largest SAY/WHISPER text in bytes.
    pub max_text: usize,
    /// Most rooms one session may be in.
    pub max_rooms: usize,
    /// Most unsent output bytes one session may hold.
    pub max_outbuf: usize,
    /// Silence before PING, and again before PING_TIMEOUT.
    pub heartbeat: Duration,
    /// Time allowed to complete HELLO.
    pub login_timeout: Duration,
    /// Shutdown drain period.
    pub grace: Duration,
    /// Room size above which JOINED/LEFT go only to the session concerned.
    pub presence_limit: usize,
    /// Frames per second per session; 0 means unlimited.
    pub rate: u32,
    /// Frames a session may send at once.
    pub burst: u32,
    /// Log every readiness event.
    pub trace_events: bool,
    /// Certificate chain and key files, when the port also takes TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse plaintext connections.
    pub tls_required: bool,
    /// TLS handshake messages processed per iteration.
    pub tls_handshakes_per_iteration: usize,
    /// TLS handshakes per address per second (0: no limit).
    pub tls_handshakes_per_ip: u32,
    /// Bounds on an HTTP request head.
    pub http: crate::server::web::HttpLimits,
    /// Answer discovery probes on UDP.
    pub discovery: bool,
    /// Where the loop trace goes, if anywhere.
    pub trace_file: Option<PathBuf>,
    /// The loop trace's size cap in bytes.
    pub trace_file_max: u64,
    /// Most connections from one IP address (0: no limit).
    pub max_per_ip: usize,
    /// Whether loopback addresses count against `max_per_ip`.
    pub limit_loopback: bool,
    /// The prefixes `max_per_ip` counts (`--per-ip-prefix-v4/-v6`).
    pub per_ip_keys: crate::server::doors::peers::PeerKeys,
    /// Messages held per room (`--history`).
    pub history: usize,
    /// Held history bytes across all rooms (`--history-memory`).
    pub history_memory: usize,
    /// How long an empty room lingers, unlisted (`--room-ttl-ms`; zero:
    /// removed at once).
    pub room_ttl: Duration,
    /// Most rooms lingering at once (`--max-lingering-rooms`).
    pub max_lingering_rooms: usize,
    /// Bytes the lingering rooms may be charged together
    /// (`--lingering-memory`).
    pub lingering_memory: usize,
    /// The cluster's Redis (`--redis`); `None`: standalone.
    pub redis: Option<RedisUrl>,
    /// This node's name (`--node-name`); `None`: the cluster code picks
    /// host name and port.
    pub node_name: Option<String>,
    /// Set SO_REUSEPORT on the listener (`--reuse-port`).
    pub reuse_port: bool,
    /// Lifetime of this node's liveness key in Redis (`--node-ttl-ms`).
    pub node_ttl: Duration,
    /// Bytes of unanswered requests to Redis allowed before requests get
    /// UNAVAILABLE (`--redis-max-pending`).
    pub redis_max_pending: usize,
    /// How long a node serves a LIST_ROOMS or LIST_USERS answer read from
    /// Redis (`--cluster-list-ttl-ms`).
    pub cluster_list_ttl: Duration,
    /// Networks whose connections may start with a PROXY header
    /// (`--proxy-from`; empty: none).
    pub proxy_from: Cidrs,
    /// How log lines are written (`--log-format`).
    pub log_format: LogFormat,
    /// The argument list this was parsed from (the program name first):
    /// SIGHUP parses it again, with the environment and the `--config`
    /// file as they are then, so the precedence stays as at start-up.
    pub argv: Argv,
    /// CA certificates for a `rediss://` Redis (`--redis-ca`); `None`: the
    /// system roots.
    pub redis_ca: Option<PathBuf>,
    /// How long a request to Redis may go unanswered (`--redis-timeout-ms`).
    pub redis_timeout: Duration,
    /// Where room state and server-wide bans persist (`--state-file`;
    /// `None`: not kept across restarts).
    pub state_file: Option<PathBuf>,
    /// How long a room's state outlives its last member
    /// (`--room-state-ttl-ms`).
    pub room_state_ttl: Duration,
    /// The file of the key that verifies tokens (`--auth-key`); loaded at
    /// start-up (exit 1 naming it) and on every SIGHUP.
    pub auth_key: Option<PathBuf>,
    /// Whether tokens are taken and guests allowed (`--auth`, resolved:
    /// `optional` with a key, else `off`, when not given).
    pub auth: AuthMode,
    /// The `iss` tokens must carry (`--auth-issuer`).
    pub auth_issuer: Option<String>,
    /// The `aud` tokens must carry (`--auth-audience`).
    pub auth_audience: Option<String>,
    /// Sessions one account may hold open (`--max-sessions-per-account`).
    pub max_sessions_per_account: usize,
    /// How long a session key outlives its session
    /// (`--session-key-ttl-ms`).
    pub session_key_ttl: Duration,
    /// Token HELLOs verified per iteration (`--logins-per-iteration`).
    pub logins_per_iteration: usize,
    /// Verification time per iteration (`--login-time-per-iteration-us`;
    /// zero: count only).
    pub login_time_per_iteration: Duration,
    /// Token HELLOs waiting at once (`--max-logins-waiting`).
    pub max_logins_waiting: usize,
    /// msg_ids remembered across keys (`--max-dedup-ids`).
    pub max_dedup_ids: usize,
    /// Ended sessions' keys kept (`--max-kept-session-keys`).
    pub max_kept_session_keys: usize,
    /// Session ends handled per iteration (`--closes-per-iteration`).
    pub closes_per_iteration: usize,
    /// Defaults that were moved to fit the values given, one note each,
    /// for the daemon to log once at start-up.
    pub adapted: Vec<String>,
}

impl Default for Config {
    /// The documented defaults, listening on `127.0.0.1:0` (for tests and
    /// benchmarks that run the server in-process).
    fn default() -> Config {
        let argv = ["muxchatd", "--bind", "127.0.0.1:0"];
        let matches = command().get_matches_from(argv);
        let mut config = Config::from_matches(&matches).expect("defaults are consistent");
        config.argv = Argv(argv.iter().map(OsString::from).collect());
        config
    }
}

#[cfg(test)]
mod tests;
