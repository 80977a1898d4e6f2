//! The loop trace: `--trace-file FILE` writes one JSON object per line for
//! each thing a loop stage does, so that an iteration can be replayed
//! afterwards (`docs/loop-viewer.html` draws it as swimlanes).
//!
//! This module owns the trace's file, its line format and its size cap. The
//! loop, the chat and the reap stage each call one method per hook; every
//! method starts with a branch on an `Option`, so with the trace off a hook
//! costs that branch and nothing else: no formatting, no allocation.
//!
//! Lines are formatted into one reused buffer and appended to a
//! [`BufWriter`]; [`Trace::end_iteration`] flushes it once per loop
//! iteration, before the loop sleeps (the same "write before sleep" the
//! sessions get). A hook never makes a system call of its own.
//!
//! The file is bounded: once the next line would pass `--trace-file-max`
//! bytes (less room for the last line), the trace writes one `limit` line
//! and stops. A write error (disk full) also stops it, with one warning;
//! the daemon carries on either way.
//!
//! Line kinds (`"k"`), each with the iteration `"i"`; sessions are named by
//! their token `"t"` (reused) and their id `"id"` (never reused):
//!
//! | kind | fields |
//! |---|---|
//! | `start` | `version`, `max_bytes` |
//! | `wake` | `events`, `timeout_ms` (null: none), `us` since start, `slept_us` (asleep in the poll just before) |
//! | `event` | `t` (or `"src"`: `listener`, `signals`), `r`, `w` |
//! | `accept` | `t`, `id`, `peer` |
//! | `read` | `t`, `id`, `reads`, `bytes`, `frames`, `partial`, `stop` |
//! | `pause` | `t`, `id`: input paused, its own output backed up |
//! | `cast` | `room`, `members`, `frames`, `bytes` (one fan-out batch) |
//! | `write` | `t`, `id`, `bytes`, `left` |
//! | `resume` | `t`, `id`, `left`: paused input resumed |
//! | `interest` | `t`, `id`, `writable` (WRITABLE on or off) |
//! | `close` | `t`, `id`, `reason` (reaped: leaves its rooms) |
//! | `remove` | `t`, `id` (deregistered, socket closed, token free) |
//! | `stage` | `s` (`2a`, `2b`, `3`, `4`, `5`, `6`), `name`, `us`, `end_us`: one stage's start and end, written when it ends (after its own lines) |
//! | `timer` | `t`, `id`, `what`: `login-timeout`, `ping`, `ping-timeout`, `linger-close` |
//! | `refuse` | `t`, `id`, `why` (`rate`; `handshakes`: a TLS handshake past the per-address limit), `code` (0: frames a door refused): a request refused |
//! | `error` | `t`, `id`, `code`, `name`, `request`, `fatal`: an ERROR sent |
//! | `carry` | `t`, `id`, `why`: read again next iteration without an edge (`budget`: its own spent; `global`: the iteration's spent before its turn; `resumed`: paused input resumed; `woken`: the cluster answered) |
//! | `defer` | `t`, `id`, `why` (`handshake`): the read waits in the TLS handshake queue (input paused for backpressure is the `pause` line) |
//! | `limit` | `bytes`: the cap was reached, nothing follows |
//! | `end` | the daemon stopped |
//!
//! Times (`us`, `slept_us`, `end_us`) are monotonic microseconds since the
//! trace began. An iteration's lines come in the order things happened:
//! `wake` (its start; the sleep ends there), then each stage's own lines
//! followed by its `stage` line, so a line belongs to the stage whose
//! `stage` line comes next.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use log::warn;
use mio::{Events, Token};

use super::sessions::lifecycle::CloseReason;
use super::sessions::session::{Flushed, ReadOutcome, ReadStop};
use crate::codec::ErrorCode;

/// Room kept below the cap for the last line (`limit` or `end`, under
/// 100 bytes even with 20-digit numbers).
const LAST_LINE: u64 = 128;
/// The buffered writer's size: a busy iteration's lines go out in a few
/// large writes.
const BUFFER: usize = 256 * 1024;

/// The loop trace: off (the default), or an open, bounded file.
#[derive(Debug, Default)]
pub struct Trace(Option<Box<Writer>>);

/// An open trace file and its line buffer.
#[derive(Debug)]
struct Writer {
    out: BufWriter<File>,
    /// The line being formatted (reused: no allocation per line).
    line: Vec<u8>,
    /// Bytes handed to `out` so far.
    written: u64,
    /// The cap on `written`.
    max: u64,
    /// The current loop iteration.
    iteration: u64,
    started: Instant,
    /// When the loop last went into the poll (the sleep's start).
    polled: Option<Instant>,
    /// The end of the last stage (or the wake-up): the next stage's start.
    mark: Instant,
    /// Whether anything was written since the last flush.
    dirty: bool,
    /// The `limit` line was written: nothing may follow it.
    full: bool,
}

impl Trace {
    /// No trace: every hook is a branch that is not taken.
    pub fn off() -> Trace {
        Trace(None)
    }

    /// Creates (truncates) `path` and writes the `start` line; the file
    /// will hold at most `max_bytes` bytes.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Trace> {
        let file = File::create(path)?;
        let mut w = Writer {
            out: BufWriter::with_capacity(BUFFER, file),
            line: Vec::with_capacity(512),
            written: 0,
            max: max_bytes.max(2 * LAST_LINE),
            iteration: 0,
            started: Instant::now(),
            polled: None,
            mark: Instant::now(),
            dirty: false,
            full: false,
        };
        let _ = write!(
            w.line,
            r#"{{"k":"start","version":"{}","max_bytes":{}}}"#,
            env!("CARGO_PKG_VERSION"),
            w.max
        );
        let mut trace = Trace(Some(Box::new(w)));
        trace.commit();
        trace.end_iteration();
        Ok(trace)
    }

    /// Whether lines are being written.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Stage 1: the poll returned `events` events after waiting at most
    /// `timeout`.
    #[inline]
    pub fn wake(&mut self, iteration: u64, events: &Events, timeout: Option<Duration>) {
        let Some(w) = self.0.as_mut() else { return };
        w.iteration = iteration;
        let events = events.iter().count();
        let now = Instant::now();
        let us = now.duration_since(w.started).as_micros();
        let slept = w
            .polled
            .take()
            .map_or(0, |p| now.duration_since(p).as_micros());
        w.mark = now;
        let _ = write!(w.line, r#"{{"i":{iteration},"k":"wake","events":{events},"#);
        let _ = match timeout {
            Some(t) => write!(w.line, r#""timeout_ms":{},"#, t.as_millis()),
            None => write!(w.line, r#""timeout_ms":null,"#),
        };
        let _ = write!(w.line, r#""us":{us},"slept_us":{slept}}}"#);
        self.commit();
    }

    /// Stage 1's start: the loop is about to sleep in the poll.
    #[inline]
    pub fn poll_start(&mut self) {
        let Some(w) = self.0.as_mut() else { return };
        w.polled = Some(Instant::now());
    }

    /// The end of stage `s` (`name`): it ran from the end of the one
    /// before it (or the wake-up) until now.
    #[inline]
    pub fn stage(&mut self, s: &str, name: &str) {
        let Some(w) = self.0.as_mut() else { return };
        let now = Instant::now();
        let start = w.mark.duration_since(w.started).as_micros();
        let end = now.duration_since(w.started).as_micros();
        w.mark = now;
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"stage","s":"{s}","name":"{name}","us":{start},"end_us":{end}}}"#
        );
        self.commit();
    }

    /// Stage 3: a session's timer fired and did `what` (`login-timeout`,
    /// `ping`, `ping-timeout`, `linger-close`).
    #[inline]
    pub fn timer(&mut self, t: Token, id: u64, what: &str) {
        self.why_line("timer", t, id, "what", what);
    }

    /// A request from `t` refused (`why`: `rate`), `code` its code.
    #[inline]
    pub fn refuse(&mut self, t: Token, id: u64, why: &str, code: u16) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"refuse","t":{},"id":{id},"why":"{why}","code":{code}}}"#,
            t.0
        );
        self.commit();
    }

    /// An ERROR sent to `t` (`fatal`: the session is cut after it). The
    /// chat calls it through `Chat::trace_error`, which looks the id up
    /// only with the trace on.
    #[inline]
    pub fn error(&mut self, t: Token, id: u64, error: ErrorCode, request: u16) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"error","t":{},"id":{id},"code":{},"name":"{}","request":{request},"fatal":{}}}"#,
            t.0,
            error as u16,
            error.name(),
            error.is_fatal()
        );
        self.commit();
    }

    /// `t` is read again next iteration without waiting for an edge
    /// (`why`: `budget`, `global`, `resumed`, `woken`).
    #[inline]
    pub fn carry(&mut self, t: Token, id: u64, why: &str) {
        self.why_line("carry", t, id, "why", why);
    }

    /// `t`'s read waits (`why`: `handshake`, the TLS handshake queue).
    #[inline]
    pub fn defer(&mut self, t: Token, id: u64, why: &str) {
        self.why_line("defer", t, id, "why", why);
    }

    /// Stage 2a: one readiness event. `source` names the listener or the
    /// signal pipe; `None` means a session's token.
    #[inline]
    pub fn event(&mut self, t: Token, source: Option<&str>, readable: bool, writable: bool) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = match source {
            Some(src) => write!(w.line, r#"{{"i":{i},"k":"event","src":"{src}","#),
            None => write!(w.line, r#"{{"i":{i},"k":"event","t":{},"#, t.0),
        };
        let _ = write!(w.line, r#""r":{readable},"w":{writable}}}"#);
        self.commit();
    }

    /// Stage 2a: a new session.
    #[inline]
    pub fn accept(&mut self, t: Token, id: u64, peer: SocketAddr) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"accept","t":{},"id":{id},"peer":"{peer}"}}"#,
            t.0
        );
        self.commit();
    }

    /// Stages 2a and 2b: what one session's read did (nothing if it was
    /// skipped). A read stopped by backpressure also writes a `pause` line.
    #[inline]
    pub fn read(&mut self, t: Token, r: &ReadOutcome) {
        let Some(w) = self.0.as_mut() else { return };
        let stop = match r.stop {
            ReadStop::Skipped => return,
            ReadStop::WouldBlock => "wouldblock",
            ReadStop::Budget => "budget",
            ReadStop::Paused => "paused",
            ReadStop::Eof => "eof",
            ReadStop::Broken => "broken",
            ReadStop::Done => "done",
            ReadStop::Handshake => "handshake",
        };
        let (i, t) = (w.iteration, t.0);
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"read","t":{t},"id":{},"reads":{},"bytes":{},"frames":{},"partial":{},"stop":"{stop}"}}"#,
            r.id, r.reads, r.bytes, r.frames, r.partial
        );
        self.commit();
        if r.stop == ReadStop::Paused {
            self.session_line("pause", Token(t), r.id);
        }
    }

    /// Stage 2: one fan-out batch, `frames` frames (`bytes` bytes encoded
    /// once) appended to each of the `members` of `room`.
    #[inline]
    pub fn cast(&mut self, room: &str, members: usize, frames: u64, bytes: usize) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(w.line, r#"{{"i":{i},"k":"cast","room":"#);
        json_str(&mut w.line, room);
        let _ = write!(
            w.line,
            r#","members":{members},"frames":{frames},"bytes":{bytes}}}"#
        );
        self.commit();
    }

    /// Stage 4: a session marked for closing is reaped.
    #[inline]
    pub fn close(&mut self, t: Token, id: u64, reason: &CloseReason) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"close","t":{},"id":{id},"reason":"#,
            t.0
        );
        match reason {
            CloseReason::Quit(text) => {
                w.line.extend_from_slice(b"\"quit: ");
                json_str_body(&mut w.line, text);
                w.line.push(b'"');
            }
            CloseReason::PeerClosed => w.line.extend_from_slice(b"\"peer closed\""),
            CloseReason::Broken => w.line.extend_from_slice(b"\"broken\""),
            CloseReason::Fatal(why) => json_str(&mut w.line, why),
        }
        w.line.push(b'}');
        self.commit();
    }

    /// Stage 5: one session's flush, and what follows from it: input
    /// resumed, WRITABLE interest switched.
    #[inline]
    pub fn flush(&mut self, t: Token, id: u64, f: &Flushed) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"write","t":{},"id":{id},"bytes":{},"left":{}}}"#,
            t.0, f.wrote, f.left
        );
        self.commit();
        if f.resumed {
            let Some(w) = self.0.as_mut() else { return };
            let _ = write!(
                w.line,
                r#"{{"i":{i},"k":"resume","t":{},"id":{id},"left":{}}}"#,
                t.0, f.left
            );
            self.commit();
        }
        if let (Some(writable), Some(w)) = (f.writable, self.0.as_mut()) {
            let _ = write!(
                w.line,
                r#"{{"i":{i},"k":"interest","t":{},"id":{id},"writable":{writable}}}"#,
                t.0
            );
            self.commit();
        }
    }

    /// Stage 6: a finished session is deregistered and its socket closed.
    #[inline]
    pub fn remove(&mut self, t: Token, id: u64) {
        if self.0.is_some() {
            self.session_line("remove", t, id);
        }
    }

    /// The end of an iteration, just before the loop sleeps again: hand
    /// the iteration's lines to the kernel in one go.
    #[inline]
    pub fn end_iteration(&mut self) {
        let Some(w) = self.0.as_mut() else { return };
        if w.dirty {
            w.dirty = false;
            if let Err(e) = w.out.flush() {
                self.fail(&e);
            }
        }
    }

    fn why_line(&mut self, kind: &str, t: Token, id: u64, field: &str, why: &str) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(
            w.line,
            r#"{{"i":{i},"k":"{kind}","t":{},"id":{id},"{field}":"{why}"}}"#,
            t.0
        );
        self.commit();
    }

    fn session_line(&mut self, kind: &str, t: Token, id: u64) {
        let Some(w) = self.0.as_mut() else { return };
        let i = w.iteration;
        let _ = write!(w.line, r#"{{"i":{i},"k":"{kind}","t":{},"id":{id}}}"#, t.0);
        self.commit();
    }

    /// Appends the formatted line, unless it would pass the cap: then the
    /// `limit` line is written instead and the trace turns itself off.
    fn commit(&mut self) {
        let Some(w) = self.0.as_mut() else { return };
        w.line.push(b'\n');
        let len = w.line.len() as u64;
        let result = if w.written + len + LAST_LINE > w.max {
            w.line.clear();
            let _ = writeln!(
                w.line,
                r#"{{"i":{},"k":"limit","bytes":{},"max_bytes":{}}}"#,
                w.iteration, w.written, w.max
            );
            let result = w.out.write_all(&w.line).and_then(|()| w.out.flush());
            w.full = true;
            warn!(
                "trace file reached its limit of {} bytes: no more lines",
                w.max
            );
            self.0 = None;
            return if let Err(e) = result {
                warn!("trace file: {e}");
            };
        } else {
            w.out.write_all(&w.line)
        };
        w.line.clear();
        w.written += len;
        w.dirty = true;
        if let Err(e) = result {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &io::Error) {
        warn!("trace file: {e}; tracing stops");
        self.0 = None;
    }
}

impl Drop for Writer {
    /// The daemon is stopping: say so, within the cap, and flush.
    fn drop(&mut self) {
        if self.full {
            return;
        }
        let _ = writeln!(self.out, r#"{{"i":{},"k":"end"}}"#, self.iteration);
        let _ = self.out.flush();
    }
}

/// Appends `s` as a JSON string, quotes included.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_str_body(out, s);
    out.push(b'"');
}

/// Appends `s` escaped for the inside of a JSON string (it comes from a
/// peer: quotes, backslashes and control characters must not break the
/// line).
fn json_str_body(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_escaped() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é""#);
    }
}
