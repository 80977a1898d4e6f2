//! `muxload`: the load generator. See [`muxchat::load`].

use std::process::ExitCode;

use clap::Parser;
use muxchat::load::{self, Config};

/// Load a muxchatd server: open N connections, publish on a schedule,
/// measure delivery, latency and loss. Exit status: 0 clean, 1 error,
/// 3 loss (gap, duplicate or reorder) seen, 4 not every connection got
/// ready or stayed connected (the daemon cut or closed some).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Daemon address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:25000")]
    connect: String,
    /// Connections to open.
    #[arg(long)]
    clients: usize,
    /// Rooms; connection i joins room i % ROOMS.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Connections that publish (connections 0..P, spread over the rooms).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Messages per second PER PUBLISHER, on a fixed open-loop schedule.
    #[arg(long, conflicts_with = "unlimited")]
    rate: Option<f64>,
    /// Publish as fast as delivery allows (windowed per room; see --window).
    #[arg(long)]
    unlimited: bool,
    /// With --unlimited: messages per room in flight, counted against the
    /// room.s slowest receiver (default: about 128 KiB worth).
    #[arg(long)]
    window: Option<u64>,
    /// Bytes of text per message (at least 32: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of publishing before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// New connections per second during setup (0: as fast as allowed).
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Worker threads, each with its own poller (default: CPUs available,
    /// at most 4).
    #[arg(long)]
    threads: Option<usize>,
    /// Source addresses 127.0.0.1..=127.0.0.K to bind before connect (0:
    /// one per 10,000 connections above 14,000).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// Seconds allowed for setup before running with whoever is ready.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Seconds allowed after publishing for every receiver to catch up.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Print one machine-readable JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// The daemon's pid, to report its RSS and CPU (same machine only).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Busy-poll while publishing: never sleep in poll(), so on loopback
    /// the daemon's writes do not pay for waking the generator. Its CPU
    /// then reads 100%; its own cost shows in the throughput it sustains.
    #[arg(long)]
    spin: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.rate.is_none() && !a.unlimited && a.publishers > 0 {
        eprintln!("muxload: give --rate MSGS_PER_SEC or --unlimited");
        return ExitCode::from(2);
    }
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
    });
    let cfg = Config {
        connect: a.connect,
        clients: a.clients,
        rooms: a.rooms,
        publishers: a.publishers,
        rate: if a.unlimited {
            None
        } else {
            Some(a.rate.unwrap_or(1.0))
        },
        window: a.window,
        payload: a.payload,
        duration: a.duration,
        warmup: a.warmup,
        ramp: a.ramp,
        threads,
        source_ips: a.source_ips,
        setup_timeout: a.setup_timeout,
        drain_timeout: a.drain_timeout,
        json: a.json,
        quiet: a.quiet,
        daemon_pid: a.daemon_pid,
        spin: a.spin,
    };
    match load::run(&cfg) {
        Ok(code) => ExitCode::from(code as u8),
        Err(msg) => {
            eprintln!("muxload: {msg}");
            ExitCode::from(1)
        }
    }
}
