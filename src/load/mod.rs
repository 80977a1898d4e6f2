//! The load generator (`muxload`): opens many connections, publishes on a
//! schedule, measures delivery, latency and loss.
//!
//! ```text
//!  main thread (phases.rs)             worker threads (each: own Poll)
//!  ───────────────────────             ───────────────────────────────
//!  1. probe the address                open connections (ramp, in-flight cap),
//!  2. spawn workers ─── Shared ───────▶ HELLO + JOIN, wait for own JOINED
//!  3. wait: all ready    (atomics)
//!  4. phase RUN, progress each second ▶ publish on schedule (or windowed),
//!                              ◀─────── read, check seq, record latency
//!  5. phase DRAIN ────────────────────▶ wait until every receiver has all
//!  6. phase PING ─────────────────────▶ PING every connection, count PONGs
//!  7. phase STOP, join, merge ◀──────── WorkerResult (a Tally, trackers)
//!  8. print the summary / --json line
//! ```
//!
//! - [`config`]: flags turned into a validated [`Config`] (usage errors
//!   exit 2).
//! - [`phases`]: the main thread's steps above, one function each.
//! - [`shared`]: what the main thread and the workers share (atomics).
//! - [`counters`]: the counters and histograms, declared once and used by
//!   the workers, the progress line and the report.
//! - [`worker`]: one thread's event loop; [`conn`] one connection's
//!   state, [`muxchat`] what it does with the daemon's frames;
//!   `publish.rs` the publishers' schedule.
//! - [`stats`]: the loss detector, the send stamp, histogram and rate
//!   helpers (pure, unit-tested).
//! - [`loss`]: the loss check over every receiver's trackers.
//! - [`report`]: merging worker results into the figures, and printing them;
//!   [`plot`]: the same as an .hgrm distribution and an SVG picture.
//! - [`redis`]: the same workload against Redis pub/sub (RESP from
//!   [`crate::codec::resp`])
//!   (`--target redis://HOST:PORT`).
//! - [`resume`]: `--reconnect-every`: the drop schedule and the resume
//!   through HISTORY.
//! - [`exactly`]: `--token-key`: accounts, protocol version 3 (SAY with
//!   msg_ids, resent after drops) and the exactly-once check for senders.
//! - [`sys`]: CPU and RSS figures, a timerfd, non-blocking connect.
//!
//! Every connection `i` joins room `i % rooms` and connects to address
//! `i % n` of the `n` given (`--connect A,B,C`: a cluster's nodes);
//! connections `0..publishers` publish (so publishers spread over rooms and
//! addresses). The loss check is per room over all receivers, wherever
//! they connected: a cluster's room has one seq on every node. Every member of a room,
//! publishers included, receives every message of the room: "delivered"
//! counts all of them.

pub mod config;
pub mod conn;
pub mod counters;
pub mod exactly;
pub mod loss;
pub mod muxchat;
pub mod phases;
pub mod plot;
mod publish;
pub mod redis;
pub mod report;
pub mod resume;
pub mod shared;
pub mod stats;
pub mod sys;
pub mod transport;
pub mod worker;

pub use config::{Args, Config};
pub use shared::Mode;

use report::Report;

/// Runs a whole load test and prints its result. `Ok` carries the exit
/// status (0, or 3 when loss was seen, 4 when not every connection got
/// ready or stayed connected); `Err` a one-line reason to exit 1.
pub fn run(cfg: &Config) -> Result<i32, String> {
    let token_key = phases::token_key(cfg)?;
    let addrs = phases::probe(cfg)?;
    let rss_before = cfg.daemon_pid.and_then(sys::rss_kib);
    let (settings, shared, workers, mint_secs) = phases::spawn(cfg, addrs, token_key)?;
    let setup = phases::setup(cfg, &shared, rss_before, mint_secs);
    if setup.ready == 0 {
        return Err(phases::nobody_ready(&shared, workers));
    }
    let window = phases::publish(cfg, &shared, setup.ready);
    let drain_secs = phases::drain(cfg, &shared);
    let ping_secs = phases::ping_check(&shared);
    let rss_end = cfg.daemon_pid.and_then(sys::rss_kib);
    let results = phases::stop(&shared, workers)?;
    let info = phases::run_info(
        cfg, &settings, &setup, &window, drain_secs, ping_secs, rss_end,
    );
    let report = Report::merge(info, results);
    write_pictures(cfg, &report)?;
    if cfg.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(report.exit_code())
}

/// Writes the `--hgrm` and `--plot` files, if asked.
fn write_pictures(cfg: &Config, report: &Report) -> Result<(), String> {
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &cfg.hgrm {
        write(path, plot::hgrm(&report.tally.latency))?;
    }
    if let Some(path) = &cfg.plot {
        write(path, plot::svg(report)?)?;
    }
    Ok(())
}
