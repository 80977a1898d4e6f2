//! Housekeeping the loop does between its stages: signals (drain,
//! SIGHUP reload), giving freed heap back to the kernel, and the node's
//! default name. None of it is per-message work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use signal_hook::consts::SIGHUP;

use super::super::config::Config;
use super::super::doors::{tls, Doors};
use super::super::reload;
use super::Server;

/// Heap given back (sessions closed or idle buffers released, rooms
/// expired or evicted, history dropped) after which the loop, once idle,
/// asks the allocator to return free memory to the kernel (`malloc_trim`).
const TRIM_AFTER: usize = 16 * 1024 * 1024;
/// At most one trim per this interval: a trim walks the heap, and pages
/// returned too eagerly fault back in on the next burst. Its cost grows
/// with what it returns (about 0.6 ms per MB measured, docs/BENCHMARKS.md),
/// so a mass free is returned in steps of what 200 ms released rather
/// than in one long stall.
const TRIM_EVERY: Duration = Duration::from_millis(200);
/// The tail of a large free (the last rooms of a burst expiring after the
/// last trim) is under `TRIM_AFTER`: once it is this much and this long
/// has passed since the last trim, the loop trims anyway, so the burst's
/// memory (and its tables' spare capacity) all goes back in the end.
const TRIM_TAIL: usize = 1024 * 1024;
const TRIM_TAIL_EVERY: Duration = Duration::from_secs(5);

impl Server {
    /// SIGHUP: reload. First SIGINT/SIGTERM: stop accepting and start the
    /// drain. Returns true on a second SIGINT/SIGTERM (exit at once).
    pub(super) fn on_signal(&mut self, now: Instant) -> bool {
        let mut stops = 0;
        let mut hups = 0;
        for signal in self.signals.pending() {
            if signal == SIGHUP {
                hups += 1;
            } else {
                stops += 1;
            }
        }
        if hups > 0 {
            // Several SIGHUPs in one batch are one reload: the files are
            // read once, as they are now.
            self.reload();
        }
        if stops == 0 {
            return false;
        }
        if self.drain_deadline.is_some() || stops > 1 {
            return true;
        }
        let grace = self.chat.config().grace;
        info!(
            "signal received: draining {} connections for up to {:?}",
            self.sessions.len(),
            grace
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.chat.begin_drain(&mut self.sessions);
        self.drain_deadline = Some(now + grace);
        false
    }

    /// SIGHUP: parses the command line, the environment and the `--config`
    /// file again, applies what can change live (see [`reload::plan`]),
    /// re-reads the files behind options, and logs what changed. Nothing
    /// that does not load replaces what runs; no connection is dropped.
    fn reload(&mut self) {
        let running = self.chat.config();
        let new = match Config::from_argv(running.argv.0.clone()) {
            Ok(new) => new,
            Err(e) => {
                // clap's message spans lines (usage, hints): its first says
                // what is wrong.
                let text = e.to_string();
                let why = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                warn!("reload (SIGHUP): the configuration does not load, nothing changed: {why}");
                return;
            }
        };
        let reload::Plan {
            mut config,
            mut changed,
            restart,
        } = reload::plan(running, &new);
        // Files behind options, each re-read on every SIGHUP and kept as
        // it was when the new file does not load (the --auth-key file:
        // `Chat::reload_identity`, after the settings).
        let tls = self.reload_tls(&mut config, &mut changed);

        self.trace = config.trace_events;
        self.doors = Arc::new(Doors::new(
            tls,
            config.tls_required,
            config.http,
            config.max_payload,
        ));
        self.chat.set_config(&mut self.sessions, config);
        // The --auth-key file is read again on every SIGHUP; one that
        // does not load keeps the running key.
        self.chat.reload_identity();
        if changed.is_empty() {
            info!("reload (SIGHUP): nothing changed");
        } else {
            info!(changed = changed.join(" "); "reload (SIGHUP): {}", changed.join(", "));
        }
        if !restart.is_empty() {
            warn!(
                needs_restart = restart.join(" ");
                "reload (SIGHUP): changed but needing a restart, still running with the old values: {}",
                restart.join(", ")
            );
        }
    }

    /// Reads the certificate and key again (the paths in `config`, which
    /// may be new). Returns the TLS configuration new connections get: the
    /// new one, or the running one when the files do not load.
    fn reload_tls(
        &mut self,
        config: &mut Config,
        changed: &mut Vec<String>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let running = self.doors.tls.clone();
        let (cert, key) = config.tls.clone()?;
        let pem = std::fs::read(&cert).unwrap_or_default();
        if pem == self.tls_pem && config.tls == self.chat.config().tls {
            // The same certificate from the same files: nothing to swap.
            return running;
        }
        match tls::server_config(&cert, &key) {
            Ok(fresh) => {
                changed.push(format!("tls-cert={}", cert.display()));
                self.tls_pem = pem;
                Some(fresh)
            }
            Err(e) => {
                warn!("reload (SIGHUP): TLS: {e}; new connections keep the certificate in use");
                config.tls = self.chat.config().tls.clone();
                running
            }
        }
    }

    /// When the next trim is due, if enough was released for one: the
    /// poll timeout includes it, so a daemon that went quiet right after a
    /// burst of rooms expired still gives their memory back.
    pub(super) fn trim_due(&self) -> Option<Instant> {
        let released = self.sessions.released + self.chat.released();
        if released < TRIM_TAIL {
            return None;
        }
        let Some(last) = self.last_trim else {
            return Some(self.chat.started());
        };
        Some(if released >= TRIM_AFTER {
            last + TRIM_EVERY
        } else {
            last + TRIM_TAIL_EVERY
        })
    }

    /// Gives freed heap back to the kernel once a large amount was released
    /// (a burst of connections closed, big buffers went idle) and the loop
    /// is about to sleep. Without it the allocator keeps the pages and RSS
    /// stays at the burst's peak, which looks like a leak to an operator.
    /// Only after `TRIM_AFTER` bytes and at most every `TRIM_EVERY` (or
    /// `TRIM_TAIL` bytes every `TRIM_TAIL_EVERY`), so a busy loop never
    /// pays a trim, nor the page faults of a buffer that is freed and
    /// grown again each iteration.
    ///
    /// The trim's own cost was measured with 1 M lingering rooms expiring
    /// (docs/BENCHMARKS.md, "Adversaries (issue 18)"): 5-38 ms a trim; it
    /// is logged at debug level (target `muxchat::slow`) when over a
    /// millisecond, with the part spent shrinking the rooms' tables.
    pub(super) fn trim_if_idle(&mut self, now: Instant) {
        let due = self.trim_due().is_some_and(|at| at <= now);
        if !due || !self.still_readable.is_empty() || self.sessions.has_work() {
            return;
        }
        let released = self.sessions.released + self.chat.released();
        let started = Instant::now();
        self.sessions.released = 0;
        self.chat.prepare_trim();
        let tables = started.elapsed();
        trim_heap();
        let took = started.elapsed();
        self.last_trim = Some(Instant::now());
        if took >= Duration::from_millis(1) {
            debug!(
                target: "muxchat::slow",
                "trim after {released} B released: {} us (tables {} us)",
                took.as_micros(),
                tables.as_micros()
            );
        }
    }
}

/// `malloc_trim(0)`: glibc returns free pages at the top of the heap and,
/// with `madvise`, free pages inside it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// A node's name when `--node-name` is not given: the host's name and the
/// port it listens on.
pub(super) fn default_node_name(addr: SocketAddr) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let host = std::str::from_utf8(&buf[..end])
        .ok()
        .filter(|h| ok && !h.is_empty())
        .unwrap_or("localhost");
    format!("{host}:{}", addr.port())
}
