//! The main thread's side of a run, one function per phase, in the order
//! [`super::run`] calls them. Workers do the I/O; the main thread moves
//! the shared phase on, prints progress and collects the results.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::Config;
use super::exactly::{self, TokenText};
use super::report::RunInfo;
use super::shared::{phase, Settings, Shared};
use super::stats::{self, human, human_us};
use super::sys::{cpu_times, proc_cpu_secs, rss_kib};
use super::worker::{self, WorkerResult};

/// The worker threads of a run.
pub type Workers = Vec<JoinHandle<std::io::Result<WorkerResult>>>;

/// How setup went.
#[derive(Debug, Clone, Copy)]
pub struct SetupEnd {
    /// Seconds it took.
    pub secs: f64,
    /// Connections ready when the run started.
    pub ready: u64,
    /// Daemon RSS before setup and once all were ready (KiB).
    pub rss: (Option<u64>, Option<u64>),
    /// Seconds minting the tokens took, before setup (see [`spawn`]).
    pub mint_secs: f64,
}

/// The publishing window as it happened.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Wall seconds of warm-up + measuring.
    pub secs: f64,
    /// This process's CPU (user, system) seconds over it.
    pub cpu: (f64, f64),
    /// The daemon's CPU seconds over it (with `--daemon-pid`).
    pub daemon_cpu: Option<f64>,
}

fn progress(cfg: &Config, line: String) {
    if !cfg.quiet {
        eprintln!("muxload: {line}");
    }
}

/// Phase 1: checks the file limit, then for each `--connect` address
/// resolves it and makes one plain connection to each resolved address in
/// turn (a name may resolve to ::1 and 127.0.0.1): the first that answers
/// is used, and a refused target is one clear line.
pub fn probe(cfg: &Config) -> Result<Vec<SocketAddr>, String> {
    let nofile = crate::net::raise_nofile_limit().unwrap_or(1024);
    let need = cfg.clients as u64 + 16 + 3 * cfg.threads as u64;
    if need > nofile {
        return Err(format!(
            "{} connections need {need} open files, but this process may open {nofile} (ulimit -n)",
            cfg.clients
        ));
    }
    cfg.addrs.iter().map(|addr| probe_one(addr)).collect()
}

/// The first of `addr`'s resolved addresses that accepts a connection.
fn probe_one(addr: &str) -> Result<SocketAddr, String> {
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
    let mut last = format!("cannot resolve {addr}: no addresses");
    for a in resolved {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(a),
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// Phase 0: reads `--token-key` before anything connects, so a bad key
/// is one line and exit 1, whatever the server.
pub fn token_key(
    cfg: &Config,
) -> Result<Option<crate::server::identity::mint::SigningKey>, String> {
    cfg.token_key
        .as_deref()
        .map(crate::server::identity::mint::SigningKey::load)
        .transpose()
        .map_err(|e| format!("--token-key: {e}"))
}

/// Mints the token of every connection `0..clients` (`sub` = `nick(id)`),
/// split over `threads` threads: all before the first connection opens,
/// so setup (and a login storm) is paced by the server, and the
/// generator's core is free while it runs. Bounded by `--clients`: one
/// token each, reused on reconnects (the account keeps its nick).
pub fn mint_tokens(
    key: &crate::server::identity::mint::SigningKey,
    clients: usize,
    threads: usize,
    nick: impl Fn(usize) -> String + Sync,
) -> Result<Vec<TokenText>, String> {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let chunk = clients.div_ceil(threads.max(1)).max(1);
    let ids: Vec<usize> = (0..clients).collect();
    let parts: Vec<Result<Vec<TokenText>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                let nick = &nick;
                scope.spawn(move || {
                    part.iter()
                        .map(|&id| exactly::mint(key, &nick(id), now_s).map(TokenText))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a minting thread panicked".into()))
            })
            .collect()
    });
    let mut tokens = Vec::with_capacity(clients);
    for part in parts {
        tokens.extend(part.map_err(|e| format!("--token-key: {e}"))?);
    }
    Ok(tokens)
}

/// Phase 2: fixes the run's settings, mints the tokens (`token_key` is
/// `--token-key`, loaded: see [`token_key`]; the seconds that took are
/// returned apart from setup's) and starts the workers.
pub fn spawn(
    cfg: &Config,
    addrs: Vec<SocketAddr>,
    token_key: Option<crate::server::identity::mint::SigningKey>,
) -> Result<(Arc<Settings>, Arc<Shared>, Workers, f64), String> {
    // Nicks and rooms unique to this run, so a reused daemon's old rooms
    // (and their seq counters) never mix in.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let tag = format!(
        "ml{:06x}",
        (micros ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9)) & 0xff_ffff
    );
    let mut settings = Settings {
        target: cfg.target,
        addrs,
        clients: cfg.clients,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        mode: cfg.mode,
        payload: cfg.payload,
        threads: cfg.threads,
        ramp_per_worker: cfg.ramp / cfg.threads as f64,
        source_ips: cfg.source_ips.clone(),
        tag,
        per_second: cfg.plot.is_some(),
        spin: cfg.spin,
        door: cfg.door.clone(),
        reconnect_ns: (cfg.reconnect_every * 1e9) as u64,
        tokens: Vec::new(),
    };
    let minting = Instant::now();
    if let Some(key) = &token_key {
        settings.tokens = mint_tokens(key, cfg.clients, cfg.threads, |id| settings.nick(id))?;
    }
    let mint_secs = minting.elapsed().as_secs_f64();
    if token_key.is_some() {
        progress(
            cfg,
            format!("minted {} tokens in {mint_secs:.2}s", settings.tokens.len()),
        );
    }
    let settings = Arc::new(settings);
    let shared = Arc::new(Shared::new(cfg.rooms, cfg.threads));
    let mut workers = Vec::new();
    for w in 0..cfg.threads {
        let (s, sh) = (settings.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("muxload-{w}"))
            .spawn(move || worker::run(w, s, sh))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        workers.push(h);
    }
    Ok((settings, shared, workers, mint_secs))
}

/// Phase 3: waits until every connection is ready or failed, or the setup
/// timeout passes.
/// `rss_before` is the daemon's RSS before any connection was opened;
/// `mint_secs` what [`spawn`] returned, carried to the report.
pub fn setup(cfg: &Config, shared: &Shared, rss_before: Option<u64>, mint_secs: f64) -> SetupEnd {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(cfg.setup_timeout);
    let mut next_line = start + Duration::from_secs(1);
    loop {
        let t = shared.totals();
        let all_opened = shared.live.iter().all(|l| l.setup_done.load(Acquire));
        if (all_opened && t.ready + t.failed >= cfg.clients as u64) || Instant::now() >= deadline {
            break;
        }
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(1);
            progress(
                cfg,
                format!(
                    "setup {:.0}s: {} connected, {} ready, {} failed of {}",
                    start.elapsed().as_secs_f64(),
                    t.connected,
                    t.ready,
                    t.failed,
                    cfg.clients
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = SetupEnd {
        secs: start.elapsed().as_secs_f64(),
        ready: shared.totals().ready,
        rss: (rss_before, cfg.daemon_pid.and_then(rss_kib)),
        mint_secs,
    };
    progress(
        cfg,
        format!(
            "setup done in {:.2}s: {} of {} ready",
            end.secs, end.ready, cfg.clients
        ),
    );
    end
}

/// Phase 3, when nobody got ready: stops the workers and says why.
pub fn nobody_ready(shared: &Shared, workers: Workers) -> String {
    shared.phase.store(phase::STOP, Release);
    let failure = workers
        .into_iter()
        .filter_map(|h| h.join().ok()?.ok()?.tally.first_failure)
        .next()
        .unwrap_or_else(|| "no reason given".into());
    format!("no connection became ready ({failure})")
}

/// Phase 4: publishing, from start to end (measured from the end of the
/// warm-up), with a progress line about once a second.
pub fn publish(cfg: &Config, shared: &Shared, ready: u64) -> Window {
    let cpu0 = cpu_times();
    let daemon_cpu0 = cfg.daemon_pid.and_then(proc_cpu_secs);
    let start_ns = shared.now_ns() + 5_000_000;
    let measure_ns = start_ns + (cfg.warmup * 1e9) as u64;
    let end_ns = measure_ns + (cfg.duration * 1e9) as u64;
    shared.start_ns.store(start_ns, Release);
    shared.measure_ns.store(measure_ns, Release);
    shared.end_ns.store(end_ns, Release);
    shared.phase.store(phase::RUN, Release);
    let mut last = (shared.totals(), Instant::now());
    loop {
        let now = shared.now_ns();
        if now >= end_ns {
            break;
        }
        std::thread::sleep(Duration::from_nanos((end_ns - now).min(1_000_000_000)));
        let dt = last.1.elapsed().as_secs_f64();
        if dt < 0.5 {
            continue;
        }
        let t = shared.totals();
        let p99 = shared
            .live
            .iter()
            .map(|l| l.p99_ns.load(Relaxed))
            .max()
            .unwrap_or(0);
        let now = shared.now_ns();
        let secs = now.saturating_sub(start_ns) as f64 / 1e9;
        let warm = if now < measure_ns { " (warm-up)" } else { "" };
        progress(cfg, format!(
            "t={secs:.0}s{warm}: {} conns, published {}/s, delivered {}/s, p99 {}, errors {}, lost conns {}",
            t.ready - t.lost.min(ready),
            human(stats::rate(t.published - last.0.published, dt)),
            human(stats::rate(t.delivered - last.0.delivered, dt)),
            human_us(p99 as f64 / 1000.0),
            t.errors,
            t.lost,
        ));
        last = (t, Instant::now());
    }
    let cpu1 = cpu_times();
    Window {
        secs: (end_ns - start_ns) as f64 / 1e9,
        cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1),
        daemon_cpu: daemon_cpu0
            .zip(cfg.daemon_pid.and_then(proc_cpu_secs))
            .map(|(a, b)| b - a),
    }
}

/// Phase 5: publishing has stopped; waits until every live receiver has
/// every message, or the drain timeout. Returns the seconds it took.
pub fn drain(cfg: &Config, shared: &Shared) -> f64 {
    shared.phase.store(phase::DRAIN, Release);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(cfg.drain_timeout);
    std::thread::sleep(Duration::from_millis(20));
    while Instant::now() < deadline && !shared.live.iter().all(|l| l.caught_up.load(Acquire)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed().as_secs_f64()
}

/// Phase 6: every connection PINGs; waits (10 s at most) for every PONG.
/// Returns the seconds it took.
pub fn ping_check(shared: &Shared) -> f64 {
    shared.phase.store(phase::PING, Release);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    while Instant::now() < deadline {
        let t = shared.totals();
        if shared.live.iter().all(|l| l.pinged.load(Acquire)) && t.pongs >= t.pings {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed().as_secs_f64()
}

/// Phase 7: stops the workers and collects what they measured.
pub fn stop(shared: &Shared, workers: Workers) -> Result<Vec<WorkerResult>, String> {
    shared.phase.store(phase::STOP, Release);
    let mut results = Vec::new();
    for h in workers {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => return Err(format!("a worker failed: {e}")),
            Err(_) => return Err("a worker thread panicked".into()),
        }
    }
    Ok(results)
}

/// The facts of the run that are not measurements, for the report.
pub fn run_info(
    cfg: &Config,
    settings: &Settings,
    setup: &SetupEnd,
    window: &Window,
    drain_secs: f64,
    ping_secs: f64,
    rss_end: Option<u64>,
) -> RunInfo {
    RunInfo {
        target: cfg.target,
        addrs: settings.addrs.clone(),
        clients: cfg.clients,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        mode: settings.mode,
        payload: cfg.payload,
        threads: cfg.threads,
        source_ips: settings.source_ips.len().max(1),
        warmup: cfg.warmup,
        duration: cfg.duration,
        setup_secs: setup.secs,
        mint_secs: setup.mint_secs,
        drain_secs,
        ping_secs,
        cpu_run: window.cpu,
        run_secs: window.secs,
        cpu_total: cpu_times(),
        rss_kib: (setup.rss.0, setup.rss.1, rss_end),
        daemon_cpu: window.daemon_cpu,
        allow_refusals: cfg.allow_refusals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::identity::key::AuthKey;
    use crate::server::identity::mint::SigningKey;
    use crate::server::identity::verify::Verifier;

    #[test]
    fn every_connection_gets_its_own_valid_token_split_over_threads() {
        let secret = b"muxload and muxchatd share this secret\n";
        let origin = std::path::Path::new("test.key");
        let key = SigningKey::from_bytes(secret, origin).unwrap();
        let verifier = Verifier::new(AuthKey::from_bytes(secret, origin).unwrap(), None, None);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // 10 over 3 threads: uneven chunks; more threads than clients too.
        for threads in [1, 3, 16] {
            let tokens = mint_tokens(&key, 10, threads, |id| format!("t_{id}")).unwrap();
            assert_eq!(tokens.len(), 10);
            for (id, t) in tokens.iter().enumerate() {
                let claims = verifier.verify(&t.0, now_ms).unwrap();
                assert_eq!(claims.account, format!("t_{id}"));
                assert_eq!(claims.nick, format!("t_{id}"));
            }
        }
        assert!(mint_tokens(&key, 0, 2, |id| id.to_string())
            .unwrap()
            .is_empty());
    }
}
