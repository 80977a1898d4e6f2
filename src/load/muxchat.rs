//! One connection's muxchatd side: the replies to its setup, PINGs,
//! ERRORs, and MESSAGE, the hot path (what [`redis`](super::redis) is for
//! `--target redis://`).

use std::sync::atomic::Ordering::Relaxed;

use super::conn::{Conn, Stage};
use super::counters::Meter;
use super::resume;
use super::shared::Shared;
use super::stats::Stamp;
use crate::codec::{code, peek_message, ClientMessage, ErrorCode, Frame, ServerMessage};
use crate::net::OutBuf;

/// Queues one SAY whose text is `stamp` padded to `payload` bytes;
/// `scratch` is reused for the text.
pub fn push_say(out: &mut OutBuf, scratch: &mut Vec<u8>, room: &str, stamp: Stamp, payload: usize) {
    scratch.clear();
    stamp.write(scratch, payload);
    // The stamp and padding are ASCII, so this never fails.
    if let Ok(text) = std::str::from_utf8(scratch) {
        out.push_client(&ClientMessage::Say { room, text });
    }
}

impl Conn {
    /// Handles one frame from the daemon, received at `now_ns`. `true`
    /// means the connection is of no further use (its setup was refused).
    /// Inlined into the read loop: MESSAGE is the hot path, millions a
    /// second; everything else goes to the out-of-line `on_control`.
    #[inline]
    pub fn on_frame(&mut self, f: Frame<'_>, now_ns: u64, m: &mut Meter, shared: &Shared) -> bool {
        if f.code != code::MESSAGE {
            if let Some(x) = self.exact.as_deref_mut() {
                let rejected = &shared.rooms[self.room].rejected;
                if let Some(end) = x.on_frame(&f, now_ns, &mut self.out, self.opened, m, rejected) {
                    return end;
                }
            }
            return self.on_control(f, now_ns, m, shared);
        }
        // Only seq and the stamp matter here, so the layout is checked but
        // no UTF-8 is.
        let Ok((seq, text)) = peek_message(f.payload) else {
            m.tally.counters.errors += 1;
            return false;
        };
        self.received += 1;
        if let Some(x) = self.exact.as_mut() {
            x.seen.saw(text);
        }
        resume::observe_live(self, seq);
        m.delivered(now_ns, crate::codec::HEADER_LEN + f.payload.len(), text);
        false
    }

    /// Every frame but MESSAGE: setup replies, PINGs, PONGs, ERRORs.
    #[cold]
    fn on_control(&mut self, f: Frame<'_>, now_ns: u64, m: &mut Meter, shared: &Shared) -> bool {
        let Ok(msg) = ServerMessage::decode(f.code, f.payload) else {
            m.tally.counters.errors += 1;
            return false;
        };
        let c = &mut m.tally.counters;
        match msg {
            ServerMessage::Ping { token } => {
                self.out.push_client(&ClientMessage::Pong { token });
                c.server_pings += 1;
            }
            ServerMessage::Pong { .. } => c.pongs += 1,
            ServerMessage::Welcome { .. } => {
                let _ = m
                    .tally
                    .register
                    .record(self.opened.elapsed().as_nanos().max(1) as u64);
            }
            // A server that takes tokens shows a version-2 session as a
            // guest, `~` before the nick it asked for.
            ServerMessage::Joined { nick, .. }
                if self.stage == Stage::Registering
                    && nick
                        .strip_prefix('~')
                        .unwrap_or(nick)
                        .eq_ignore_ascii_case(&self.nick) =>
            {
                if self.resume.is_some() {
                    // Back in the room: Ready once history has caught up.
                    return false;
                }
                self.stage = Stage::Ready;
                self.was_ready = true;
                c.ready += 1;
            }
            ServerMessage::Error {
                error,
                request,
                detail,
            } => {
                c.errors += 1;
                if let Some(slot) = m.tally.errors.get_mut(error as usize) {
                    *slot += 1;
                }
                if request == code::SAY && self.publisher.is_some() {
                    shared.rooms[self.room].rejected.fetch_add(1, Relaxed);
                    m.refused(now_ns);
                }
                let known = ErrorCode::from_u16(error);
                // A fatal error (TLS_REQUIRED, SERVER_FULL) answers no
                // request in particular, and the server closes next: the
                // reason must be noted now, or the report says none.
                if self.stage == Stage::Registering
                    && (request == code::HELLO
                        || request == code::JOIN
                        || known.is_some_and(ErrorCode::is_fatal))
                {
                    // Setup failed; the connection is useless for the run.
                    m.tally.fail(|| {
                        let name =
                            known.map_or_else(|| format!("error {error}"), |e| e.name().into());
                        let mut why = format!("setup refused: {name}");
                        if !detail.is_empty() {
                            why.push_str(&format!(" ({detail})"));
                        }
                        if known == Some(ErrorCode::TlsRequired) {
                            why.push_str("; the server requires TLS: use --tls");
                        }
                        why
                    });
                    return true;
                }
            }
            ServerMessage::Shutdown { .. } => c.shutdowns += 1,
            _ => {}
        }
        false
    }
}
