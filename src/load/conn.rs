//! One load connection: its stage, its output, its loss tracker, and what
//! it does with each frame the daemon sends.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::counters::Meter;
use super::resume::{self, Resume};
use super::shared::{Shared, Target};
use super::stats::{SeqTracker, Stamp};
use super::transport::LoadStream;
use crate::codec::{code, peek_message, ClientMessage, ErrorCode, Frame, ServerMessage};
use crate::net::OutBuf;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// connect() issued, not yet established.
    Connecting,
    /// HELLO and JOIN sent, own JOINED not yet seen.
    Registering,
    /// In its room: receives (and maybe publishes).
    Ready,
    /// Closed, by either side.
    Dead,
}

/// One connection.
pub struct Conn {
    /// Global id: connection `id` joins room `id % rooms`.
    pub id: usize,
    /// Its room's index.
    pub room: usize,
    /// Its nick.
    pub nick: String,
    /// The socket (`None` once dead or if it never opened).
    pub stream: Option<LoadStream>,
    /// Where it is in its life.
    pub stage: Stage,
    /// When connect() was issued.
    pub opened: Instant,
    /// Frames queued and not yet taken by the kernel.
    pub out: OutBuf,
    /// In the worker's flush list this iteration.
    pub flush_queued: bool,
    /// The bytes of an unfinished frame, parked here between reads while
    /// the worker's one frame reader serves other connections (less than
    /// one frame; empty almost always).
    pub partial: Vec<u8>,
    /// The room's seq as this connection saw it (muxchat). Inline, not
    /// behind a pointer: it is touched for every message delivered.
    pub tracker: SeqTracker,
    /// Redis: one tracker per publisher of the room, fed with the count
    /// in its stamps (Redis numbers nothing itself).
    pub streams: Vec<SeqTracker>,
    /// Messages received, all trackers together (paces the window).
    pub received: u64,
    /// Publisher state, for connections `0..publishers`.
    pub publisher: Option<Publisher>,
    /// Became ready at some point (so it counts as a receiver).
    pub was_ready: bool,
    /// Its room's epoch from the first ROOM_STATE (version 2; 0 before).
    pub epoch: u64,
    /// A reconnect in progress (`--reconnect-every`).
    pub resume: Option<Box<Resume>>,
    /// Reconnects so far (each registers a fresh nick).
    pub reconnects: u32,
    /// `--token-key`: the version-3 session (token, key, msg_ids).
    pub exact: Option<Box<super::exactly::Exact>>,
}

/// A publishing connection's schedule and sequence.
pub struct Publisher {
    /// The next scheduled send (rate mode), ns since base.
    pub next_due: u64,
    /// Messages sent.
    pub count: u32,
}

impl Publisher {
    /// The stamp of this publisher's next message (connection `id`), sent
    /// (or scheduled) at `sent_ns`; counts it.
    pub fn stamp(&mut self, id: usize, sent_ns: u64) -> Stamp {
        let stamp = Stamp {
            sent_ns,
            publisher: id as u32,
            count: self.count,
        };
        self.count = self.count.wrapping_add(1);
        stamp
    }
}

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

/// Queues one message for `target`: a SAY to muxchatd, a PUBLISH to Redis.
pub fn push_message(
    target: Target,
    out: &mut OutBuf,
    scratch: &mut Vec<u8>,
    room: &str,
    stamp: Stamp,
    payload: usize,
) {
    match target {
        Target::Muxchat => push_say(out, scratch, room, stamp, payload),
        Target::Redis => super::redis::push_publish(out, scratch, room, stamp, payload),
    }
}

impl Conn {
    /// Its loss trackers, one per stream of its room: the room's seq
    /// (muxchat), or one per publisher (Redis).
    pub fn trackers(&self) -> Vec<SeqTracker> {
        if self.streams.is_empty() {
            vec![self.tracker.clone()]
        } else {
            self.streams.clone()
        }
    }

    /// A connection not yet opened.
    pub fn new(id: usize, room: usize, nick: String, publishes: bool) -> Conn {
        Conn {
            id,
            room,
            nick,
            stream: None,
            stage: Stage::Connecting,
            opened: Instant::now(),
            out: OutBuf::default(),
            flush_queued: false,
            partial: Vec::new(),
            tracker: SeqTracker::new(),
            streams: Vec::new(),
            received: 0,
            publisher: publishes.then_some(Publisher {
                next_due: 0,
                count: 0,
            }),
            was_ready: false,
            epoch: 0,
            resume: None,
            reconnects: 0,
            exact: None,
        }
    }

    /// Handles one frame from the daemon, received at `now_ns`. `true`
    /// means the connection is of no further use (its setup was refused).
    /// Inlined into the read loop: MESSAGE is the hot path, millions a
    /// second; everything else goes to the out-of-line `on_control`.
    #[inline]
    pub fn on_frame(&mut self, f: Frame<'_>, now_ns: u64, m: &mut Meter, shared: &Shared) -> bool {
        if f.code != code::MESSAGE {
            if self.exact.is_some() {
                if let Some(end) = self.on_v3(&f, now_ns, m, shared) {
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
            ServerMessage::Joined { nick, .. }
                if self.stage == Stage::Registering && nick.eq_ignore_ascii_case(&self.nick) =>
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
