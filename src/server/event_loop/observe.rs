//! What the loop observes of an iteration, at the boundaries between its
//! stages: the counters (`STATS_REPLY`, `/metrics`), the iteration
//! histogram, the loop trace (`--trace-file`, JSON lines) and the event
//! trace (`--trace-events`, log lines), and each connection's last log
//! line. The stages in `run` and their bodies only call these; none of
//! them changes what the loop does.

use std::time::{Duration, Instant};

use log::{debug, info};
use mio::event::Event;
use mio::{Events, Token};

use super::super::chat::members::Member;
use super::super::cluster;
use super::super::sessions::session::{self, Flushed, ReadOutcome, ReadStop};
use super::{Server, LISTENER, SIGNALS};

impl Server {
    /// After stage 1: one more wake-up and iteration.
    pub(super) fn observe_wake(&mut self, events: &Events, timeout: Option<Duration>) {
        self.sessions.stats.poll_wakeups += 1;
        self.iteration += 1;
        if self.trace {
            trace_wake(events.iter().count(), timeout);
        }
        self.chat.trace.wake(self.iteration, events, timeout);
    }

    /// Stage 2a, per event: counted and traced before it is dispatched;
    /// returns its token and whether it is readable and writable.
    pub(super) fn observe_event(&mut self, event: &Event) -> (Token, bool, bool) {
        self.sessions.stats.events += 1;
        let (token, readable, writable) = (
            event.token(),
            event.is_readable() || event.is_read_closed() || event.is_error(),
            event.is_writable(),
        );
        self.chat
            .trace
            .event(token, source(token), readable, writable);
        (token, readable, writable)
    }

    /// An event for a live session (the event trace).
    pub(super) fn observe_session_event(&self, t: Token, readable: bool, writable: bool) {
        if self.trace {
            info!(
                "event {t:?}: {}{}",
                if readable { "readable " } else { "" },
                if writable { "writable" } else { "" }
            );
        }
    }

    /// After one session's read in stage 2.
    pub(super) fn observe_read(&mut self, t: Token, r: &ReadOutcome) {
        self.chat.trace.read(t, r);
        if self.trace && r.stop != ReadStop::Skipped {
            let why = match r.stop {
                ReadStop::WouldBlock | ReadStop::Done | ReadStop::Skipped => "WouldBlock",
                ReadStop::Budget => "budget spent, still readable",
                ReadStop::Handshake => "TLS handshake budget spent: waits its turn",
                ReadStop::Paused => "backpressure: own output backed up, input paused",
                ReadStop::Eof => "EOF: the peer closed its side",
                ReadStop::Broken => "an error (reset): the connection is broken",
            };
            info!(
                "  {t:?}: {} reads took {} B, {} whole frames, \
                 {} B of a partial frame kept; stopped on {why}",
                r.reads, r.bytes, r.frames, r.partial
            );
        }
    }

    /// After one session's write in stage 5.
    pub(super) fn observe_flush(&mut self, t: Token, id: u64, f: &Flushed) {
        self.chat.trace.flush(t, id, f);
        if self.trace {
            if f.resumed {
                info!("  {t:?}: backlog down to {} B, input resumed", f.left);
            }
            info!("  {t:?}: wrote {} B, {} B left", f.wrote, f.left);
        }
    }

    /// After stage 5: the iteration's length up to its writes.
    pub(super) fn observe_written(&mut self, woke: Instant) {
        let took = woke.elapsed().as_nanos() as u64;
        self.sessions.hist.loop_iteration.observe(took);
    }

    /// Stage 6, per session removed: its last lines.
    pub(super) fn observe_removed(
        &mut self,
        t: Token,
        s: &session::Session,
        m: &Member,
        abort: bool,
    ) {
        self.chat.trace.remove(t, s.id());
        if self.trace {
            let how = if abort { "reset" } else { "close" };
            info!("{how} {t:?} ({})", s.peer());
        }
        log_ended(s, m.nick(), m.account().unwrap_or(""));
    }

    /// After stage 6: the loop trace's lines of this iteration go out in
    /// one write, and a slow iteration is logged.
    pub(super) fn observe_end(&mut self, woke: Instant) {
        self.chat.trace.end_iteration();
        trace_slow_iteration(woke);
    }
}

/// A connection's last line, at info: how it ended and what it moved.
fn log_ended(s: &session::Session, nick: &str, account: &str) {
    let (bytes_in, bytes_out) = s.bytes();
    let duration_ms = s.opened_at().elapsed().as_millis() as u64;
    let reason = match s.life().end_reason() {
        "" => "closed",
        why => why,
    };
    let t = s.transport();
    info!(
        target: "muxchat::conn",
        peer:% = s.peer(), door = t.door(), tls = t.is_tls(), nick = nick, account = account,
        reason = reason, duration_ms = duration_ms, bytes_in = bytes_in, bytes_out = bytes_out;
        "ended: {} ({reason}) after {duration_ms} ms, {bytes_in} B in, {bytes_out} B out",
        s.peer()
    );
}

/// The loop trace's name for a source that is not a session.
fn source(t: Token) -> Option<&'static str> {
    match t {
        LISTENER => Some("listener"),
        cluster::CMD => Some("redis-command"),
        cluster::SUB => Some("redis-subscriber"),
        SIGNALS => Some("signals"),
        _ => None,
    }
}

/// Logs (target `muxchat::slow`, level debug) an iteration that took over
/// 20 ms from the wake-up to the end of stage 6: the global read budget is
/// meant to keep every iteration well below that.
fn trace_slow_iteration(woke: Instant) {
    let took = woke.elapsed();
    if took >= Duration::from_millis(20) {
        debug!(target: "muxchat::slow", "slow iteration: {} ms", took.as_millis());
    }
}

/// The event trace's line for one wake-up.
fn trace_wake(n: usize, timeout: Option<Duration>) {
    match timeout {
        Some(t) => info!("poll woke: {n} events (timeout was {} ms)", t.as_millis()),
        None => info!("poll woke: {n} events (no timeout)"),
    }
}
