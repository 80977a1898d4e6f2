//! The `history` fuzz target: `server::chat::history` against a plain model.

use std::collections::VecDeque;

use muxchat::codec::{history_status, ServerMessage};

use super::Bytes;

/// A room as the model sees it: the frames it holds, oldest first, by seq.
struct ModelRoom {
    id: muxchat::server::chat::history::RingId,
    epoch: u64,
    /// The room's seq counter (the chat state machine's, not history's).
    seq: u64,
    held: VecDeque<(u64, Vec<u8>)>,
    /// When the room last stored a message (the LRU order).
    tick: u64,
}

/// `server::chat::history` against a plain model: per-room lists of frames
/// encoded by the codec, eviction by scanning for the least recently active
/// room, HISTORY answers computed from the contract's words with sets of
/// seqs. After every operation: each room holds the same seqs, the budget
/// and its accounting hold, and any HISTORY request gets the same frames
/// (byte for byte) and status.
///
/// Input: the limits, then operations (open, close, store with a
/// following or jumping seq and a text of some length, query).
pub fn check(data: &[u8]) {
    use muxchat::server::chat::history::{History, Limits, Request, INDEX_BYTES};

    let mut input = Bytes { rest: data };
    let limits = Limits {
        per_room: usize::from(input.u8() % 12),
        max_bytes: usize::from(input.u8()) * 8,
        reply_cap: u16::from(input.u8() % 8),
    };
    let cap = u64::from(limits.reply_cap.max(1));
    let mut h = History::new(limits);
    let mut rooms: Vec<ModelRoom> = Vec::new();
    let mut tick = 0u64;
    let mut next_epoch = 1u64;
    let text_pool = "abcdefghijklmnopqrstuvwxyz0123456789é✓".repeat(8);

    while !input.rest.is_empty() {
        let op = input.u8();
        let pick = usize::from(input.u8());
        match op % 4 {
            0 if rooms.len() < 8 => {
                rooms.push(ModelRoom {
                    id: h.open(),
                    epoch: next_epoch,
                    seq: 0,
                    held: VecDeque::new(),
                    tick: 0,
                });
                next_epoch += 1;
            }
            1 if !rooms.is_empty() => {
                let r = rooms.swap_remove(pick % rooms.len());
                h.close(r.id);
            }
            2 if !rooms.is_empty() => {
                let k = pick % rooms.len();
                let arg = input.u8();
                let room = &mut rooms[k];
                // Mostly the next seq; sometimes a jump ahead or back.
                let seq = match op >> 5 {
                    0 => room.seq.saturating_add(2 + u64::from(arg % 4)),
                    1 => room.seq.saturating_sub(u64::from(arg % 4)),
                    _ => room.seq.saturating_add(1),
                };
                room.seq = room.seq.max(seq);
                let mut len = usize::from(arg) % 120;
                while !text_pool.is_char_boundary(len) {
                    len -= 1;
                }
                let text = &text_pool[..len];
                let from = &text_pool[..usize::from(arg % 5) + 1];
                let name = if k % 2 == 0 { "#even" } else { "#odd.room" };
                let time_ms = u64::from(arg) << 33 | seq;
                h.store(room.id, name, seq, time_ms, from, text);

                // The model, straight from the doc of `store`.
                if limits.per_room > 0 {
                    if room
                        .held
                        .back()
                        .is_some_and(|(s, _)| s.checked_add(1) != Some(seq))
                    {
                        room.held.clear();
                    }
                    while room.held.len() >= limits.per_room {
                        room.held.pop_front();
                    }
                    let mut frame = Vec::new();
                    ServerMessage::HistoryMessage {
                        room: name,
                        seq,
                        time_ms,
                        from,
                        text,
                    }
                    .encode(&mut frame);
                    room.held.push_back((seq, frame));
                    tick += 1;
                    room.tick = tick;
                    let charged = |rooms: &[ModelRoom]| -> usize {
                        rooms
                            .iter()
                            .flat_map(|r| r.held.iter())
                            .map(|(_, f)| f.len() + INDEX_BYTES)
                            .sum()
                    };
                    while charged(&rooms) > limits.max_bytes {
                        let lru = rooms
                            .iter_mut()
                            .filter(|r| !r.held.is_empty())
                            .min_by_key(|r| r.tick)
                            .expect("something is held");
                        lru.held.pop_front();
                    }
                }
            }
            3 if !rooms.is_empty() => {
                let room = &rooms[pick % rooms.len()];
                let (a, b, c) = (input.u8(), input.u8(), input.u8());
                let epoch = match a % 4 {
                    0 => 0,
                    1 => room.epoch + 1000,
                    _ => room.epoch,
                };
                let newest = room.seq.saturating_sub(u64::from(b % 8));
                let after_seq = match b >> 6 {
                    0 => newest.saturating_sub(u64::from(c)),
                    1 => u64::from(c),
                    2 => newest + u64::from(c % 3),
                    _ => u64::MAX - u64::from(c),
                };
                let req = Request {
                    epoch,
                    after_seq,
                    limit: u16::from(a >> 2) % 12,
                    newest,
                };
                let plan = h.plan(room.id, room.epoch, &req);
                // "0 means the server's maximum; the server may cap any limit".
                let most = match req.limit {
                    0 => cap,
                    l => u64::from(l).min(cap),
                };
                let (want, status) = model_history(room, &req, most);
                let (x, y) = h.frames(room.id, &plan);
                let got = [x, y].concat();
                let want_bytes: Vec<u8> =
                    want.iter().flat_map(|(_, f)| f.iter().copied()).collect();
                assert_eq!(plan.status, status, "{req:?}");
                assert_eq!(plan.count, want.len() as u64, "{req:?}");
                if let Some((first, _)) = want.first() {
                    assert_eq!(plan.from_seq, *first);
                }
                assert!(got == want_bytes, "frames differ for {req:?}");
            }
            _ => {}
        }

        // Every room holds what the model holds; the budget holds.
        let mut bytes = 0;
        let mut messages = 0;
        for r in &rooms {
            let first = r.held.front().map_or(0, |(s, _)| *s);
            let last = r.held.back().map_or(0, |(s, _)| *s);
            assert_eq!(h.first_held(r.id), first);
            assert_eq!(h.last_held(r.id), last);
            assert_eq!(h.held(r.id), r.held.len());
            bytes += r
                .held
                .iter()
                .map(|(_, f)| f.len() + INDEX_BYTES)
                .sum::<usize>();
            messages += r.held.len();
        }
        assert_eq!(h.held_bytes(), bytes);
        assert_eq!(h.held_messages(), messages);
        assert!(bytes <= limits.max_bytes);
    }
    for r in rooms {
        h.close(r.id);
    }
    assert_eq!((h.held_bytes(), h.held_messages()), (0, 0));
}

/// protocol.md's HISTORY, by counting: which held frames a request gets
/// when at most `most` are sent, and its HISTORY_END status.
fn model_history<'r>(
    room: &'r ModelRoom,
    req: &muxchat::server::chat::history::Request,
    most: u64,
) -> (Vec<&'r (u64, Vec<u8>)>, u8) {
    use history_status::{GAP, MORE, NEW_EPOCH};
    let cap = most as usize;
    if req.epoch == 0 {
        // The newest held up to `newest`; MORE when older ones are held.
        let upto: Vec<_> = room.held.iter().filter(|(s, _)| *s <= req.newest).collect();
        let skip = upto.len().saturating_sub(cap);
        let status = if skip > 0 { MORE } else { 0 };
        return (upto[skip..].to_vec(), status);
    }
    if req.epoch != room.epoch {
        return (Vec::new(), NEW_EPOCH);
    }
    let wanted = req.newest.saturating_sub(req.after_seq);
    let held: Vec<_> = room
        .held
        .iter()
        .filter(|(s, _)| *s > req.after_seq && *s <= req.newest)
        .collect();
    let mut status = 0;
    if held.len() > cap {
        status |= MORE;
    }
    if (held.len() as u64) < wanted {
        status |= GAP;
    }
    (held.into_iter().take(cap).collect(), status)
}
