//! One connection's Redis side, for `--target redis://HOST:PORT`: the same
//! workload as against muxchatd, in pub/sub terms.
//!
//! | muxchatd              | Redis (RESP3)                               |
//! |-----------------------|---------------------------------------------|
//! | HELLO + JOIN room     | `HELLO 3` + `SUBSCRIBE room`                |
//! | own JOINED: ready     | the `subscribe` push for the room: ready    |
//! | SAY room text         | `PUBLISH room text` (same stamped text)     |
//! | MESSAGE (room seq)    | `message` push (no seq: the stamp's count)  |
//! | PING / PONG           | `PING` / `+PONG`                            |
//!
//! RESP3, because a RESP2 connection in subscribed mode may not PUBLISH:
//! with it every publisher is also a member of its room, as in muxchatd,
//! and the run opens the same number of connections.

use std::sync::atomic::Ordering::Relaxed;

use super::conn::{Conn, Stage};
use super::counters::Meter;
use super::shared::{Settings, Shared};
use super::stats::{SeqTracker, Stamp};
use crate::codec::resp::{self, Reply};
use crate::net::OutBuf;

/// Queues one PUBLISH whose text is `stamp` padded to `payload` bytes.
pub fn push_publish(
    out: &mut OutBuf,
    scratch: &mut Vec<u8>,
    room: &str,
    stamp: Stamp,
    payload: usize,
) {
    // The text first, then the command after it, copying the text in
    // place: one buffer, no allocation per message.
    scratch.clear();
    stamp.write(scratch, payload);
    let text = scratch.len();
    resp::array_header(scratch, 3);
    resp::bulk(scratch, b"PUBLISH");
    resp::bulk(scratch, room.as_bytes());
    resp::bulk_header(scratch, text);
    scratch.extend_from_within(..text);
    scratch.extend_from_slice(b"\r\n");
    out.append(&scratch[text..]);
}

impl Conn {
    /// Switches to RESP3 and subscribes to the connection's room.
    pub fn greet_redis(&mut self, room: &str, scratch: &mut Vec<u8>) {
        scratch.clear();
        resp::encode(scratch, &[b"HELLO", b"3"]);
        resp::encode(scratch, &[b"SUBSCRIBE", room.as_bytes()]);
        self.out.append(scratch);
    }

    /// Queues a PING (the end-of-run check).
    pub fn ping_redis(&mut self) {
        self.out.append(b"*1\r\n$4\r\nPING\r\n");
    }

    /// Handles one reply or push of `len` bytes received at `now_ns`.
    /// `true` means the connection is of no further use (setup refused).
    pub fn on_reply(
        &mut self,
        reply: Reply<'_>,
        len: usize,
        now_ns: u64,
        m: &mut Meter,
        shared: &Shared,
        settings: &Settings,
    ) -> bool {
        match reply {
            Reply::Message { payload, .. } => {
                self.received += 1;
                let stream = Stamp::publisher_count_of(payload).and_then(|(p, count)| {
                    Some((self.streams.get_mut(p as usize / settings.rooms)?, count))
                });
                match stream {
                    Some((t, count)) => t.observe(count as u64 + 1),
                    None => m.tally.counters.errors += 1,
                }
                m.delivered(now_ns, len, payload);
            }
            Reply::Kind {
                kind: b"subscribe",
                second: Some(channel),
            } if self.stage == Stage::Registering
                && channel == settings.room(self.room).as_bytes() =>
            {
                let _ = m
                    .tally
                    .register
                    .record(self.opened.elapsed().as_nanos().max(1) as u64);
                self.stage = Stage::Ready;
                self.was_ready = true;
                self.streams = vec![SeqTracker::new(); settings.publishers_in(self.room).max(1)];
                m.tally.counters.ready += 1;
            }
            Reply::Simple(b"PONG") | Reply::Kind { kind: b"pong", .. } => {
                m.tally.counters.pongs += 1;
            }
            Reply::Error(text) => {
                m.tally.counters.errors += 1;
                m.tally
                    .fail(|| format!("redis: {}", String::from_utf8_lossy(text)));
                if self.stage == Stage::Registering {
                    return true;
                }
                if self.publisher.is_some() {
                    // Only PUBLISH and PING are sent once ready, and PING
                    // does not fail: a refused message is never delivered.
                    shared.rooms[self.room].rejected.fetch_add(1, Relaxed);
                    m.refused(now_ns);
                }
            }
            // PUBLISH's receiver count, HELLO's map: nothing to check.
            _ => {}
        }
        false
    }
}
