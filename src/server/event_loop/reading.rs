//! Reading one session: the socket is read through its transport into
//! the loop's shared buffer, within the read budget, and whatever whole
//! frames arrive are handed to the chat ([`Chat::on_input`]); what a door
//! needs goes to [`Chat::on_door`]. The chat never reads a socket: it
//! gets bytes. What the read came to is a [`ReadOutcome`], which the loop
//! turns into list entries and the traces record.

use std::time::Instant;

use log::debug;
use mio::Token;

use super::super::chat::Chat;
use super::super::doors::{Cost, DoorEvent, HandshakeGate};
use super::super::sessions::registry::Sessions;
use super::super::sessions::session::Got;
pub use super::super::sessions::session::{ReadOutcome, ReadStop};

/// Reads `t` until `WouldBlock`, its `budget`, backpressure or the end
/// of its input, dispatching whole frames as they arrive. At most once
/// per session per `iteration`. A TLS handshake step takes one from the
/// loop's `gate`.
pub fn read(
    chat: &mut Chat,
    sessions: &mut Sessions,
    gate: &mut HandshakeGate,
    t: Token,
    scratch: &mut [u8],
    budget: usize,
    iteration: u64,
    now: Instant,
) -> ReadOutcome {
    let marks = sessions.marks();
    let rate = chat.rate();
    let mut done = ReadOutcome {
        id: 0,
        stop: ReadStop::Skipped,
        reads: 0,
        bytes: 0,
        frames: 0,
        partial: 0,
        wire: 0,
        enqueue: false,
    };
    let s = sessions.at_mut(t);
    done.id = s.id();
    if !s.begin_read(iteration) {
        return done;
    }
    if s.is_waiting() {
        // Its request is with the cluster's store: the rest of its
        // input waits until the answer wakes it.
        done.stop = ReadStop::Paused;
        return done;
    }
    // Input held back when the output passed the pause mark goes
    // first: it was read before anything still in the socket.
    if s.is_holding() && !s.life().is_ending() {
        let (frames, holding) = chat.on_held(sessions, t, now);
        done.frames += frames;
        if holding {
            done.stop = ReadStop::Paused;
            done.partial = sessions.at(t).inbuf().len();
            return done;
        }
    }
    done.stop = loop {
        done.reads += 1;
        let s = sessions.at_mut(t);
        let discarding = s.life().is_ending();
        // Never read much more than the budget has left: one read of
        // 64 KiB of 8-byte frames is 8,192 frames of work.
        let room = budget
            .saturating_sub(done.work())
            .clamp(1024, scratch.len());
        let mut cost = Cost::default();
        let got = s.read_some(&mut scratch[..room], marks, rate, now, gate, &mut cost);
        done.wire += cost.work;
        if cost.limited > 0 || cost.refused {
            note_cost(sessions, &cost);
            chat.trace.refuse(
                t,
                done.id,
                if cost.refused { "handshakes" } else { "rate" },
                0,
            );
        }
        match got {
            Got::Bytes(n) => {
                done.bytes += n;
                sessions.stats.bytes_in += n as u64;
                sessions.at_mut(t).count_bytes(n, 0);
                if !discarding {
                    done.frames += chat.on_input(sessions, t, &scratch[..n], now);
                    if sessions.at(t).is_holding() {
                        break ReadStop::Paused;
                    }
                }
                if done.work() >= budget {
                    break ReadStop::Budget;
                }
            }
            Got::WouldBlock => break ReadStop::WouldBlock,
            Got::Yield => {
                if done.work() >= budget {
                    break ReadStop::Budget;
                }
            }
            Got::Handshake => {
                done.enqueue = cost.enqueue;
                break ReadStop::Handshake;
            }
            Got::Paused => break ReadStop::Paused,
            Got::Done => break ReadStop::Done,
            Got::Eof => {
                sessions.on_peer_eof(t);
                break ReadStop::Eof;
            }
            Got::Failed(e) => {
                debug!("{t:?} read: {e}");
                sessions.on_broken(t);
                break ReadStop::Broken;
            }
            Got::Door(DoorEvent::Closed) => {
                sessions.on_peer_eof(t);
                break ReadStop::Eof;
            }
            // Anything else: act, then read on (an upgraded WebSocket
            // has frames to decode; a closing session drains input
            // until WouldBlock, so the edge is not lost).
            Got::Door(ev) => chat.on_door(sessions, t, ev, now),
        }
    };
    // A door may have something of its own to write (a TLS handshake
    // record, a pong, an HTTP answer): the flush stage takes it.
    let s = sessions.at(t);
    done.partial = s.inbuf().len();
    if s.transport_wants_flush() {
        sessions.queue_flush(t);
    }
    done
}

/// Counts what a door refused: frames past the allowance (like
/// requests past it) and handshakes past the per-address limit (like
/// connections past `--max-per-ip`).
#[cold]
fn note_cost(sessions: &mut Sessions, cost: &Cost) {
    sessions.stats.rate_limited += cost.limited;
    if cost.refused {
        sessions.stats.rejected_full += 1;
    }
}
