//! The daemon's settings: raw command-line flags turned into a validated
//! [`Config`].
//!
//! Every option also reads `MUXCHAT_<NAME>` from the environment (the command
//! line wins). A bad value is a usage error: clap names the option and the
//! process exits with status 2, as `daemon-cli.md` requires.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::protocol::HEADER_LEN;

/// Bytes of a SAY payload besides the text: room str (2 + up to 64) and the
/// text's own length prefix (2).
const SAY_OVERHEAD: u32 = 2 + 64 + 2;

/// `muxchatd`: a single-threaded chat server (one mio event loop).
#[derive(Debug, Clone, Parser)]
#[command(name = "muxchatd", version, about, long_about = None)]
pub struct Args {
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
}

impl Config {
    /// Parses the process's arguments and environment; exits with status 2
    /// and clap's message on a usage error.
    pub fn from_env() -> Config {
        let args = Args::parse();
        match Config::from_args(args) {
            Ok(config) => config,
            Err(e) => e.exit(),
        }
    }

    /// Checks the options against each other.
    pub fn from_args(args: Args) -> Result<Config, clap::Error> {
        use clap::CommandFactory;
        if args.max_text + SAY_OVERHEAD > args.max_payload {
            return Err(Args::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--max-text {} does not fit in --max-payload {} (a SAY needs {} bytes more than its text)",
                    args.max_text, args.max_payload, SAY_OVERHEAD
                ),
            ));
        }
        if (args.max_outbuf as usize) < HEADER_LEN + args.max_payload as usize {
            return Err(Args::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--max-outbuf {} must hold at least one frame of --max-payload {} plus its header",
                    args.max_outbuf, args.max_payload
                ),
            ));
        }
        Ok(Config {
            bind: args.bind,
            max_clients: args.max_clients as usize,
            max_payload: args.max_payload,
            max_text: args.max_text as usize,
            max_rooms: args.max_rooms as usize,
            max_outbuf: args.max_outbuf as usize,
            heartbeat: Duration::from_millis(args.heartbeat_ms.into()),
            login_timeout: Duration::from_millis(args.login_timeout_ms.into()),
            grace: Duration::from_millis(args.grace_ms.into()),
            presence_limit: args.presence_limit as usize,
            rate: args.rate,
            burst: args.burst,
            trace_events: args.trace_events,
        })
    }
}

impl Default for Config {
    /// The documented defaults, listening on `127.0.0.1:0` (for tests and
    /// benchmarks that run the server in-process).
    fn default() -> Config {
        let args = Args::parse_from(["muxchatd", "--bind", "127.0.0.1:0"]);
        Config::from_args(args).expect("defaults are consistent")
    }
}
