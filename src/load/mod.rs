//! The load generator (`muxload`): opens many connections, publishes on a
//! schedule, measures delivery, latency and loss.
//!
//! ```text
//!  main thread                         worker threads (each: own Poll)
//!  ───────────                         ───────────────────────────────
//!  probe the address                   open connections (ramp, in-flight cap),
//!  spawn workers ───── Shared ───────▶ HELLO + JOIN, wait for own JOINED
//!  wait: all ready       (atomics)
//!  set start/measure/end, phase RUN ─▶ publish on schedule (or windowed),
//!  progress line each second  ◀─────── read, check seq, record latency
//!  phase DRAIN ──────────────────────▶ wait until every receiver has all
//!  phase PING ───────────────────────▶ PING every connection, count PONGs
//!  phase STOP, join, merge ◀────────── WorkerResult (histograms, trackers)
//!  print the summary / --json line
//! ```
//!
//! - [`stats`]: the loss detector, the send stamp, histogram and rate
//!   helpers (pure, unit-tested).
//! - [`worker`]: one thread's event loop.
//! - [`report`]: merging worker results into the figures, and printing them.
//!
//! Every connection `i` joins room `i % rooms`; connections `0..publishers`
//! publish (so publishers spread over rooms). Every member of a room,
//! publishers included, receives every message of the room: "delivered"
//! counts all of them.

pub mod report;
pub mod stats;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use report::{Report, RunInfo};
use stats::{human, human_us, STAMP_LEN};
use worker::{phase, Mode, Settings, Shared};

/// Connections per source address above which muxload spreads over
/// several 127.0.0.x addresses (connect() slows down past about half of
/// the ephemeral port range for one source/destination pair).
pub const CONNS_PER_SOURCE: usize = 10_000;

/// A validated muxload configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT` of the daemon.
    pub connect: String,
    /// Connections to open.
    pub clients: usize,
    /// Rooms to spread them over.
    pub rooms: usize,
    /// Connections that publish.
    pub publishers: usize,
    /// Messages per second per publisher; `None` means unlimited.
    pub rate: Option<f64>,
    /// Messages in flight per room when unlimited; `None` picks one from
    /// the payload size (about 128 KiB of frames per receiver).
    pub window: Option<u64>,
    /// Text bytes per message.
    pub payload: usize,
    /// Measured seconds.
    pub duration: f64,
    /// Seconds of publishing before measuring.
    pub warmup: f64,
    /// Connections opened per second in all (0: as fast as allowed).
    pub ramp: f64,
    /// Worker threads.
    pub threads: usize,
    /// Source addresses to use: 0 picks (1 up to 10,000 connections, then
    /// one 127.0.0.x per 10,000).
    pub source_ips: usize,
    /// Seconds allowed for setup before the run starts with whoever is
    /// ready.
    pub setup_timeout: f64,
    /// Seconds allowed after publishing stops for every receiver to catch up.
    pub drain_timeout: f64,
    /// Print one JSON line instead of the human summary.
    pub json: bool,
    /// No progress lines.
    pub quiet: bool,
    /// The daemon's pid, to sample its RSS (same machine only).
    pub daemon_pid: Option<u32>,
    /// Busy-poll while publishing instead of sleeping in `poll`.
    pub spin: bool,
}

impl Config {
    /// Checks the numbers make sense together.
    pub fn check(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.rooms == 0 || self.rooms > self.clients {
            return Err("--rooms must be between 1 and --clients".into());
        }
        if self.publishers > self.clients {
            return Err("--publishers cannot exceed --clients".into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be a positive number (or use --unlimited)".into());
            }
        }
        if self.payload < STAMP_LEN || self.payload > 65_000 {
            return Err(format!(
                "--payload must be between {STAMP_LEN} and 65000 bytes"
            ));
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be between 0 and 3600 seconds".into());
        }
        if !(0.0..=600.0).contains(&self.warmup) {
            return Err("--warmup must be between 0 and 600 seconds".into());
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads must be between 1 and 64".into());
        }
        if self.window == Some(0) {
            return Err("--window must be at least 1".into());
        }
        Ok(())
    }

    /// The pacing mode.
    pub fn mode(&self) -> Mode {
        match self.rate {
            Some(r) => Mode::Rate(r),
            None => Mode::Unlimited {
                window: self
                    .window
                    .unwrap_or_else(|| (128 * 1024 / (self.payload as u64 + 40)).max(16)),
            },
        }
    }
}

/// This process's CPU time so far (user, system) in seconds.
pub fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage fills a struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// A process's resident set size in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's CPU time (user + system) in seconds, from `/proc/PID/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Source addresses for `clients` connections to `addr`.
fn source_ips(cfg: &Config, addr: SocketAddr) -> Result<Vec<IpAddr>, String> {
    let n = match cfg.source_ips {
        0 if cfg.clients <= 14_000 => return Ok(Vec::new()),
        0 => cfg.clients.div_ceil(CONNS_PER_SOURCE),
        n => n,
    };
    if n == 1 {
        return Ok(Vec::new());
    }
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {}
        _ => {
            return Err(format!(
                "several source addresses need an IPv4 loopback target (127.x), not {addr}"
            ))
        }
    }
    if n > 250 {
        return Err("--source-ips must be at most 250".into());
    }
    Ok((1..=n as u8)
        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
        .collect())
}

/// Runs a whole load test and prints its result. `Ok` carries the exit
/// status (0, or 3 when loss was seen, 4 when not every connection got
/// ready or stayed connected); `Err` a one-line reason to exit 1.
pub fn run(cfg: &Config) -> Result<i32, String> {
    cfg.check()?;
    let addrs: Vec<SocketAddr> = cfg
        .connect
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", cfg.connect))?
        .collect();
    let nofile = crate::net::raise_nofile_limit().unwrap_or(1024);
    let need = cfg.clients as u64 + 16 + 3 * cfg.threads as u64;
    if need > nofile {
        return Err(format!(
            "{} connections need {need} open files, but this process may open {nofile} (ulimit -n)",
            cfg.clients
        ));
    }
    // One plain connection first, to each resolved address in turn (a name
    // may resolve to ::1 and 127.0.0.1): the first that answers is used,
    // and a refused target is one clear line.
    let mut last = format!("cannot resolve {}: no addresses", cfg.connect);
    let mut found = None;
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => {
                found = Some(a);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let addr = found.ok_or(last)?;

    let threads = cfg.threads.min(cfg.clients);
    // Nicks and rooms unique to this run, so a reused daemon's old rooms
    // (and their seq counters) never mix in.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let tag = format!(
        "ml{:06x}",
        (micros ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9)) & 0xff_ffff
    );
    let settings = Arc::new(Settings {
        addr,
        clients: cfg.clients,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        mode: cfg.mode(),
        payload: cfg.payload,
        threads,
        ramp_per_worker: cfg.ramp / threads as f64,
        source_ips: source_ips(cfg, addr)?,
        tag,
        spin: cfg.spin,
    });
    let shared = Arc::new(Shared::new(cfg.rooms, threads));
    let rss_before = cfg.daemon_pid.and_then(rss_kib);

    let mut handles = Vec::new();
    for w in 0..threads {
        let (s, sh) = (settings.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("muxload-{w}"))
            .spawn(move || worker::run(w, s, sh))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    let progress = |line: String| {
        if !cfg.quiet {
            eprintln!("muxload: {line}");
        }
    };
    let sum = |f: &dyn Fn(&worker::Live) -> u64| shared.live.iter().map(f).sum::<u64>();

    // Setup: wait until every connection is ready or failed.
    let setup_start = Instant::now();
    let setup_deadline = setup_start + Duration::from_secs_f64(cfg.setup_timeout);
    let mut next_line = setup_start + Duration::from_secs(1);
    loop {
        let ready = sum(&|l| l.ready.load(Relaxed));
        let failed = sum(&|l| l.failed.load(Relaxed));
        let all_opened = shared.live.iter().all(|l| l.setup_done.load(Acquire));
        if (all_opened && ready + failed >= cfg.clients as u64) || Instant::now() >= setup_deadline
        {
            break;
        }
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(1);
            progress(format!(
                "setup {:.0}s: {} connected, {ready} ready, {failed} failed of {}",
                setup_start.elapsed().as_secs_f64(),
                sum(&|l| l.connected.load(Relaxed)),
                cfg.clients
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let ready_at_start = sum(&|l| l.ready.load(Relaxed));
    let rss_ready = cfg.daemon_pid.and_then(rss_kib);
    progress(format!(
        "setup done in {setup_secs:.2}s: {ready_at_start} of {} ready",
        cfg.clients
    ));
    if ready_at_start == 0 {
        shared.phase.store(phase::STOP, Release);
        let failure = handles
            .into_iter()
            .filter_map(|h| h.join().ok()?.ok()?.first_failure)
            .next()
            .unwrap_or_else(|| "no reason given".into());
        return Err(format!("no connection became ready ({failure})"));
    }

    // Run: publish from start to end; measure from measure to end.
    let cpu0 = cpu_times();
    let daemon_cpu0 = cfg.daemon_pid.and_then(proc_cpu_secs);
    let start_ns = shared.now_ns() + 5_000_000;
    let measure_ns = start_ns + (cfg.warmup * 1e9) as u64;
    let end_ns = measure_ns + (cfg.duration * 1e9) as u64;
    shared.start_ns.store(start_ns, Release);
    shared.measure_ns.store(measure_ns, Release);
    shared.end_ns.store(end_ns, Release);
    shared.phase.store(phase::RUN, Release);
    let (mut last_pub, mut last_del, mut last_t) = (0u64, 0u64, Instant::now());
    loop {
        let now = shared.now_ns();
        if now >= end_ns {
            break;
        }
        std::thread::sleep(Duration::from_nanos((end_ns - now).min(1_000_000_000)));
        let (p, d) = (
            sum(&|l| l.published.load(Relaxed)),
            sum(&|l| l.delivered.load(Relaxed)),
        );
        let dt = last_t.elapsed().as_secs_f64();
        if dt < 0.5 {
            continue;
        }
        let p99 = shared
            .live
            .iter()
            .map(|l| l.p99_ns.load(Relaxed))
            .max()
            .unwrap_or(0);
        let t = (shared.now_ns().saturating_sub(start_ns)) as f64 / 1e9;
        let warm = if shared.now_ns() < measure_ns {
            " (warm-up)"
        } else {
            ""
        };
        progress(format!(
            "t={t:.0}s{warm}: {} conns, published {}/s, delivered {}/s, p99 {}, errors {}, lost conns {}",
            sum(&|l| l.ready.load(Relaxed)) - sum(&|l| l.lost.load(Relaxed)).min(ready_at_start),
            human(stats::rate(p - last_pub, dt)),
            human(stats::rate(d - last_del, dt)),
            human_us(p99 as f64 / 1000.0),
            sum(&|l| l.errors.load(Relaxed)),
            sum(&|l| l.lost.load(Relaxed)),
        ));
        (last_pub, last_del, last_t) = (p, d, Instant::now());
    }
    let cpu1 = cpu_times();
    let daemon_cpu1 = cfg.daemon_pid.and_then(proc_cpu_secs);

    // Drain: every live receiver should get every message.
    shared.phase.store(phase::DRAIN, Release);
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs_f64(cfg.drain_timeout);
    std::thread::sleep(Duration::from_millis(20));
    while Instant::now() < drain_deadline && !shared.live.iter().all(|l| l.caught_up.load(Acquire))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();

    // Ping check: every connection still answers.
    shared.phase.store(phase::PING, Release);
    let ping_start = Instant::now();
    let ping_deadline = ping_start + Duration::from_secs(10);
    while Instant::now() < ping_deadline
        && (!shared.live.iter().all(|l| l.pinged.load(Acquire))
            || sum(&|l| l.pongs.load(Relaxed)) < sum(&|l| l.pings.load(Relaxed)))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ping_secs = ping_start.elapsed().as_secs_f64();
    let rss_end = cfg.daemon_pid.and_then(rss_kib);
    shared.phase.store(phase::STOP, Release);
    let mut results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => return Err(format!("a worker failed: {e}")),
            Err(_) => return Err("a worker thread panicked".into()),
        }
    }
    let info = RunInfo {
        clients: cfg.clients,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        mode: settings.mode,
        payload: cfg.payload,
        threads,
        source_ips: settings.source_ips.len().max(1),
        warmup: cfg.warmup,
        duration: cfg.duration,
        setup_secs,
        drain_secs,
        ping_secs,
        cpu_run: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1),
        run_secs: (end_ns - start_ns) as f64 / 1e9,
        cpu_total: cpu_times(),
        rss_kib: (rss_before, rss_ready, rss_end),
        daemon_cpu: daemon_cpu0.zip(daemon_cpu1).map(|(a, b)| b - a),
    };
    let report = Report::merge(info, results);
    if cfg.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(report.exit_code())
}
