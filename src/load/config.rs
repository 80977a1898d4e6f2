//! muxload's settings: raw command-line flags turned into a validated
//! [`Config`], as the daemon does with its own.
//!
//! Every usage error (a bad number, two flags that contradict each other,
//! a missing `--rate`/`--unlimited`) is found here, before any socket is
//! opened, and exits with status 2 and clap's message naming the flag.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::shared::{Mode, Target};
use super::stats::STAMP_LEN;
use super::transport::Door;
use crate::client::tls::TlsArgs;

/// Connections per source address above which muxload spreads over
/// several 127.0.0.x addresses (connect() slows down past about half of
/// the ephemeral port range for one source/destination pair).
pub const CONNS_PER_SOURCE: usize = 10_000;

/// muxload: the load generator for muxchatd (and Redis pub/sub): opens N
/// connections, publishes on a schedule, measures delivery, latency and
/// loss.
///
/// Exit status: 0 clean, 1 error, 2 usage error, 3 loss (gap, duplicate
/// or reorder) seen, 4 not every connection got ready or stayed connected
/// (the server cut or closed some), 5 the daemon refused some publishes
/// (RATE_LIMITED and the like) and `--allow-refusals` was not given.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "muxload",
    version,
    after_help = "Exit status: 0 clean; 1 error; 2 usage error; 3 loss (gap, duplicate or \
                  reorder) seen; 4 not every connection got ready or stayed connected; 5 the \
                  daemon refused some publishes (RATE_LIMITED and the like; --allow-refusals \
                  makes that 0, or run the daemon with --rate 0).",
    about = "muxload: the load generator for muxchatd (or Redis pub/sub). Opens N connections, \
             publishes on a schedule, and measures delivery, latency percentiles and loss.",
    long_about = None
)]
pub struct Args {
    /// Daemon address, HOST:PORT; or a comma-separated list A,B,C (a
    /// cluster's nodes), over which members and publishers are spread
    /// round-robin: connection i goes to address i % n.
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = "127.0.0.1:25000")]
    pub connect: String,
    /// The server to load, as a URL: muxchat://HOST:PORT (the same as
    /// --connect) or redis://HOST:PORT (the same workload over Redis
    /// pub/sub, RESP3: SUBSCRIBE per room, PUBLISH the same stamped text).
    #[arg(long, value_name = "URL", conflicts_with = "connect")]
    pub target: Option<String>,
    /// Connections to open.
    #[arg(long)]
    pub clients: usize,
    /// Rooms; connection i joins room i % ROOMS.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Connections that publish (connections 0..P, spread over the rooms).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second PER PUBLISHER, on a fixed open-loop schedule.
    #[arg(long, conflicts_with = "unlimited")]
    pub rate: Option<f64>,
    /// Publish as fast as delivery allows (windowed per room; see --window).
    #[arg(long)]
    pub unlimited: bool,
    /// With --unlimited: messages per room in flight, counted against the
    /// room's slowest receiver (default: about 128 KiB worth).
    #[arg(long)]
    pub window: Option<u64>,
    /// Bytes of text per message (at least 32: the stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// New connections per second during setup (0: as fast as allowed).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Worker threads, each with its own poller (default: CPUs available,
    /// at most 4).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Source addresses 127.0.0.1..=127.0.0.K to bind before connect (0:
    /// one per 10,000 connections above 14,000).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Seconds allowed for setup before running with whoever is ready.
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// Seconds allowed after publishing for every receiver to catch up.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Draw the run into an SVG file: latency by percentile, and delivered
    /// msgs/s and p99 latency per second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the latency percentile distribution in HdrHistogram's text
    /// (.hgrm) format, in milliseconds, for the usual plotters to overlay.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Each member drops its connection once per this many seconds, at a
    /// random moment, and resumes through HISTORY (protocol version 2).
    #[arg(long, value_name = "SECONDS")]
    pub reconnect_every: Option<f64>,
    /// Sign each connection in with its own token, minted from this
    /// signing key (as `muxchatd token --signing-key` reads it; `sub` =
    /// the connection's nick; all minted before the first connection,
    /// reported as `mint_s`), and speak protocol version 3: SAYs carry
    /// msg_ids, publishers resend unanswered ones after a drop, and the
    /// report checks every accepted msg_id reached every member once.
    #[arg(long, value_name = "FILE")]
    pub token_key: Option<PathBuf>,
    /// Print one machine-readable JSON line instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// The daemon's pid, to report its RSS and CPU (same machine only).
    #[arg(long)]
    pub daemon_pid: Option<u32>,
    /// Busy-poll while publishing: never sleep in poll(), so on loopback
    /// the daemon's writes do not pay for waking the generator. Its CPU
    /// then reads 100%; its own cost shows in the throughput it sustains.
    #[arg(long)]
    pub spin: bool,
    /// `--tls`, `--ca`, `--insecure`: muxchatd's TLS door.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Speak the binary protocol over WebSocket at /ws (with --tls: wss).
    #[arg(long)]
    pub ws: bool,
    /// Publishes the daemon refuses (RATE_LIMITED and the like) are
    /// reported but do not make the exit status 5.
    #[arg(long)]
    pub allow_refusals: bool,
}

/// A validated muxload configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The kind of server.
    pub target: Target,
    /// The addresses as given (`A,B,C` for several).
    pub connect: String,
    /// Each `HOST:PORT` to connect to; connection `i` uses `addrs[i % n]`.
    pub addrs: Vec<String>,
    /// Connections to open.
    pub clients: usize,
    /// Rooms to spread them over.
    pub rooms: usize,
    /// Connections that publish.
    pub publishers: usize,
    /// How publishers pace themselves.
    pub mode: Mode,
    /// Text bytes per message.
    pub payload: usize,
    /// Measured seconds.
    pub duration: f64,
    /// Seconds of publishing before measuring.
    pub warmup: f64,
    /// Connections opened per second in all (0: as fast as allowed).
    pub ramp: f64,
    /// Worker threads (at most `clients`).
    pub threads: usize,
    /// Source addresses to bind before connect (empty: the kernel picks).
    pub source_ips: Vec<IpAddr>,
    /// Seconds allowed for setup before the run starts with whoever is
    /// ready.
    pub setup_timeout: f64,
    /// Seconds allowed after publishing stops for every receiver to catch up.
    pub drain_timeout: f64,
    /// Where to draw the run (SVG), if asked.
    pub plot: Option<PathBuf>,
    /// Where to write the .hgrm percentile distribution, if asked.
    pub hgrm: Option<PathBuf>,
    /// Seconds between one member's reconnects (0: never).
    pub reconnect_every: f64,
    /// `--token-key`: protocol version 3 with minted tokens.
    pub token_key: Option<PathBuf>,
    /// Print one JSON line instead of the human summary.
    pub json: bool,
    /// No progress lines.
    pub quiet: bool,
    /// The daemon's pid, to sample its RSS (same machine only).
    pub daemon_pid: Option<u32>,
    /// Busy-poll while publishing instead of sleeping in `poll`.
    pub spin: bool,
    /// Refused publishes do not change the exit status (`--allow-refusals`).
    pub allow_refusals: bool,
    /// The door: plain, TLS, WebSocket or both.
    pub door: Door,
}

impl Config {
    /// Parses the process's arguments; exits with status 2 and clap's
    /// message on a usage error.
    pub fn from_env() -> Config {
        match Config::from_args(Args::parse()) {
            Ok(config) => config,
            Err(e) => e.exit(),
        }
    }

    /// Checks the flags against each other and builds the configuration.
    pub fn from_args(a: Args) -> Result<Config, clap::Error> {
        let usage =
            |msg: String| Args::command().error(clap::error::ErrorKind::ValueValidation, msg);
        check(&a).map_err(usage)?;
        let (target, connect) = match &a.target {
            Some(url) => parse_target(url).map_err(usage)?,
            None => (Target::Muxchat, a.connect.clone()),
        };
        let addrs = split_addrs(&connect).map_err(usage)?;
        let mode = match (a.rate, a.unlimited) {
            (Some(r), _) => Mode::Rate(r),
            (None, true) => Mode::Unlimited {
                window: a
                    .window
                    .unwrap_or_else(|| (128 * 1024 / (a.payload as u64 + 40)).max(16)),
            },
            // No publishers: the rate is never used.
            (None, false) => Mode::Rate(1.0),
        };
        let threads = a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4)
        });
        let door = door(&a, target, &addrs).map_err(usage)?;
        Ok(Config {
            door,
            source_ips: source_ips(&a, &addrs).map_err(usage)?,
            addrs,
            target,
            connect,
            plot: a.plot,
            hgrm: a.hgrm,
            reconnect_every: a.reconnect_every.unwrap_or(0.0),
            token_key: a.token_key,
            clients: a.clients,
            rooms: a.rooms,
            publishers: a.publishers,
            mode,
            payload: a.payload,
            duration: a.duration,
            warmup: a.warmup,
            ramp: a.ramp,
            threads: threads.min(a.clients),
            setup_timeout: a.setup_timeout,
            drain_timeout: a.drain_timeout,
            json: a.json,
            quiet: a.quiet,
            daemon_pid: a.daemon_pid,
            spin: a.spin,
            allow_refusals: a.allow_refusals,
        })
    }
}

/// Checks the numbers make sense together; the message names the flag.
fn check(a: &Args) -> Result<(), String> {
    let seconds = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
    if a.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if a.rooms == 0 || a.rooms > a.clients {
        return Err("--rooms must be between 1 and --clients".into());
    }
    if a.publishers > a.clients {
        return Err("--publishers cannot exceed --clients".into());
    }
    if a.rate.is_none() && !a.unlimited && a.publishers > 0 {
        return Err("give --rate MSGS_PER_SEC or --unlimited".into());
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err("--rate must be a positive number (or use --unlimited)".into());
        }
    }
    if a.window == Some(0) {
        return Err("--window must be at least 1".into());
    }
    if a.payload < STAMP_LEN || a.payload > 65_000 {
        return Err(format!(
            "--payload must be between {STAMP_LEN} and 65000 bytes"
        ));
    }
    if !seconds(a.duration, f64::MIN_POSITIVE, 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    if !seconds(a.warmup, 0.0, 600.0) {
        return Err("--warmup must be between 0 and 600 seconds".into());
    }
    if !seconds(a.ramp, 0.0, f64::MAX) {
        return Err("--ramp must be 0 or a positive number".into());
    }
    if a.plot
        .as_ref()
        .is_some_and(|p| p.extension().is_none_or(|e| e != "svg"))
    {
        return Err("--plot draws SVG: give it a FILE.svg".into());
    }
    if a.threads.is_some_and(|t| t == 0 || t > 64) {
        return Err("--threads must be between 1 and 64".into());
    }
    if !seconds(a.setup_timeout, 0.0, 3600.0) || !seconds(a.drain_timeout, 0.0, 3600.0) {
        return Err(
            "--setup-timeout and --drain-timeout must be between 0 and 3600 seconds".into(),
        );
    }
    if a.reconnect_every
        .is_some_and(|r| !seconds(r, 0.001, 3600.0))
    {
        return Err("--reconnect-every must be between 0.001 and 3600 seconds".into());
    }
    if a.reconnect_every.is_some()
        && a.target
            .as_deref()
            .is_some_and(|t| t.starts_with("redis://"))
    {
        return Err(
            "--reconnect-every needs muxchat's HISTORY; Redis pub/sub has no resume".into(),
        );
    }
    if a.token_key.is_some()
        && a.target
            .as_deref()
            .is_some_and(|t| t.starts_with("redis://"))
    {
        return Err("--token-key signs in to muxchatd; Redis pub/sub has no accounts".into());
    }
    Ok(())
}

/// `muxchat://HOST:PORT` or `redis://HOST:PORT` as a target and address.
/// `--tls`, `--ca`, `--insecure`, `--ws` into a [`Door`].
fn door(a: &Args, target: Target, addrs: &[String]) -> Result<Door, String> {
    if (a.tls.tls || a.ws) && target != Target::Muxchat {
        return Err("--tls and --ws are doors of muxchatd, not of Redis".into());
    }
    // One TLS configuration checks one server name: several addresses must
    // share their host (one machine, several ports) to be checked alike.
    let host = |addr: &str| addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    if a.tls.tls && addrs.iter().any(|x| host(x) != host(&addrs[0])) {
        return Err(format!(
            "--tls checks one server name: the --connect addresses {} must share their host",
            addrs.join(",")
        ));
    }
    let tls = a.tls.client("muxload", &addrs[0])?;
    Ok(Door { tls, ws: a.ws })
}

fn parse_target(url: &str) -> Result<(Target, String), String> {
    let (target, rest) = if let Some(rest) = url.strip_prefix("redis://") {
        (Target::Redis, rest)
    } else if let Some(rest) = url.strip_prefix("muxchat://") {
        (Target::Muxchat, rest)
    } else {
        return Err(format!(
            "--target {url}: give muxchat://HOST:PORT or redis://HOST:PORT"
        ));
    };
    let addr = rest.trim_end_matches('/');
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((target, addr.to_string()))
        }
        _ => Err(format!("--target {url}: the address must be HOST:PORT")),
    }
}

/// `A,B,C` as its addresses, each checked to be `HOST:PORT`; an empty
/// entry (`A,,B`, a trailing comma) is a usage error, not a silent skip.
fn split_addrs(connect: &str) -> Result<Vec<String>, String> {
    connect
        .split(',')
        .map(|addr| {
            let addr = addr.trim();
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(addr.to_string())
                }
                _ => Err(format!(
                    "--connect {connect}: `{addr}` is not HOST:PORT (several: A,B,C)"
                )),
            }
        })
        .collect()
}

/// Source addresses for the run: none (the kernel picks) up to 14,000
/// connections unless asked, then one 127.0.0.x per 10,000.
fn source_ips(a: &Args, addrs: &[String]) -> Result<Vec<IpAddr>, String> {
    let n = match a.source_ips {
        0 if a.clients <= 14_000 => return Ok(Vec::new()),
        0 => a.clients.div_ceil(CONNS_PER_SOURCE),
        n => n,
    };
    if n == 1 {
        return Ok(Vec::new());
    }
    if n > 250 {
        return Err("--source-ips must be at most 250".into());
    }
    // Several sources only make sense towards loopback, where every
    // 127.x address is ours; say so before opening anything.
    for connect in addrs {
        match connect.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(v4)) if v4.ip().is_loopback() => {}
            _ => {
                return Err(format!(
                    "{n} source addresses need --source-ips' target to be an IPv4 loopback address (127.x.x.x:PORT), not {connect}"
                ))
            }
        }
    }
    Ok((1..=n as u8)
        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["muxload"];
        all.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(all)?)
    }

    #[test]
    fn defaults_and_modes() {
        let c = parse(&["--clients", "10", "--rate", "5"]).unwrap();
        assert_eq!(c.mode, Mode::Rate(5.0));
        assert!(c.source_ips.is_empty());
        let c = parse(&["--clients", "10", "--unlimited", "--payload", "64"]).unwrap();
        assert_eq!(c.mode, Mode::Unlimited { window: 1260 });
        let c = parse(&["--clients", "10", "--publishers", "0"]).unwrap();
        assert_eq!(c.publishers, 0);
        let c = parse(&["--clients", "2", "--threads", "8", "--rate", "1"]).unwrap();
        assert_eq!(c.threads, 2);
        let c = parse(&[
            "--clients",
            "30000",
            "--rate",
            "1",
            "--connect",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(c.source_ips.len(), 3);
        let c = parse(&["--clients", "4", "--rate", "1"]).unwrap();
        assert_eq!(c.addrs, ["127.0.0.1:25000"]);
        let c = parse(&[
            "--clients",
            "4",
            "--rate",
            "1",
            "--connect",
            "127.0.0.1:1, 127.0.0.1:2,[::1]:3",
        ])
        .unwrap();
        assert_eq!(c.addrs, ["127.0.0.1:1", "127.0.0.1:2", "[::1]:3"]);
    }

    #[test]
    fn contradictions_are_usage_errors() {
        for args in [
            &["--clients", "5", "--rooms", "6", "--rate", "1"][..],
            &["--clients", "5"][..],
            &["--clients", "5", "--rate", "nan"][..],
            &["--clients", "5", "--unlimited", "--window", "0"][..],
            &["--clients", "5", "--rate", "1", "--duration", "0"][..],
            &["--clients", "5", "--rate", "1", "--connect", "127.0.0.1:1,"][..],
            &[
                "--clients",
                "5",
                "--rate",
                "1",
                "--connect",
                "127.0.0.1:1,x",
            ][..],
            &[
                "--clients",
                "5",
                "--rate",
                "1",
                "--tls",
                "--insecure",
                "--connect",
                "127.0.0.1:1,localhost:2",
            ][..],
            &[
                "--clients",
                "5",
                "--rate",
                "1",
                "--source-ips",
                "3",
                "--connect",
                "[::1]:5",
            ][..],
        ] {
            let e = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
