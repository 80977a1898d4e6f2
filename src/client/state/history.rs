//! History and resume for [`Chat`]: the per-room [`Track`] (epoch, seqs
//! shown, HISTORY requests in flight, live lines held back) and the
//! methods that send HISTORY, match its replies to requests and show
//! them in seq order, or say the gap in one line.

use std::collections::VecDeque;

use super::{key, Chat, JOIN_HISTORY};
use crate::codec::VERSION_2;
use crate::codec::{history_status, ClientMessage};
use crate::net::OutBuf;

/// Live lines held per room while its history is still arriving; past it
/// they are shown at once (out of seq order, never lost).
const MAX_HELD_LIVE: usize = 10_000;

/// A HISTORY request sent for a room and not yet closed by HISTORY_END.
/// The server answers one session's requests in order, so a queue per room
/// matches replies to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    /// Epoch 0: the last messages, on joining.
    Recent,
    /// Everything after the last seq shown, after a reconnect.
    Resume,
    /// `/history`: messages older than `before`; `last_rx` is the newest
    /// received so far (the reply comes oldest first), `got` how many.
    Older { before: u64, last_rx: u64, got: u16 },
}

/// What the client knows of one joined room, for history and resume.
#[derive(Debug, Default)]
pub struct Track {
    /// The room's epoch (from ROOM_STATE); `None` until one arrives (and
    /// always with a version-1 server).
    pub epoch: Option<u64>,
    /// The newest seq shown or accounted for (as missed): a resume asks
    /// for what comes after it.
    pub last: u64,
    /// The oldest seq shown in this epoch, where `/history` continues.
    pub oldest: Option<u64>,
    /// `last_seq` of the latest ROOM_STATE: history never goes past it.
    pub(super) state_last: u64,
    /// `first_held` of the latest ROOM_STATE.
    pub(super) first_held: u64,
    /// HISTORY requests in flight, oldest first.
    pub(super) requests: VecDeque<Request>,
    /// Live messages (seq, line) held until the join or resume history
    /// has been shown.
    pub(super) held: Vec<(u64, String)>,
    /// Messages counted as lost during the current resume.
    pub(super) missed: u64,
}

impl Track {
    /// Whether a join or resume reply is still arriving (live lines wait).
    pub(super) fn syncing(&self) -> bool {
        self.requests
            .iter()
            .any(|r| matches!(r, Request::Recent | Request::Resume))
    }

    pub(super) fn saw(&mut self, seq: u64) {
        self.last = self.last.max(seq);
        self.oldest = Some(self.oldest.map_or(seq, |o| o.min(seq)));
    }
}

impl Chat {
    pub(super) fn history(out: &mut OutBuf, room: &str, epoch: u64, after_seq: u64, limit: u16) {
        out.push_client(&ClientMessage::History {
            room,
            epoch,
            after_seq,
            limit,
        });
    }

    /// `/history N`: asks for the N held messages just before the oldest
    /// one shown in the current room.
    pub(super) fn older(&mut self, n: u16, out: &mut OutBuf, show: &mut Vec<String>) {
        let Some(room) = self.current.clone() else {
            show.push("! you are not in a room: /join #room first".into());
            return;
        };
        if self.spoken < VERSION_2 {
            show.push("! this server keeps no history (it speaks protocol version 1)".into());
            return;
        }
        let Some(t) = self.tracks.get_mut(&key(&room)) else {
            show.push(format!("! you are not in {room} yet"));
            return;
        };
        let Some(epoch) = t.epoch else {
            show.push(format!("! {room} has not been set up yet; try again"));
            return;
        };
        let before = t.oldest.unwrap_or(t.state_last + 1);
        if before <= t.first_held.max(1) {
            show.push(format!("* no older messages held in {room}"));
            return;
        }
        // Start no earlier than the oldest held, so the reply is not a
        // "gap" for messages the server had already let go.
        let after = before
            .saturating_sub(u64::from(n) + 1)
            .max(t.first_held.saturating_sub(1));
        let want = (before - 1 - after).min(u64::from(n)) as u16;
        Self::history(out, &room, epoch, after, want);
        t.requests.push_back(Request::Older {
            before,
            last_rx: after,
            got: 0,
        });
    }

    pub(super) fn room_state(
        &mut self,
        room: &str,
        epoch: u64,
        last_seq: u64,
        first_held: u64,
        out: &mut OutBuf,
        show: &mut Vec<String>,
    ) {
        let t = self.tracks.entry(key(room)).or_default();
        let resume = match t.epoch {
            Some(e) if e == epoch => true,
            Some(_) => {
                show.push(format!(
                    "! {room} was re-created while you were away: what was said in it before is gone"
                ));
                *t = Track::default();
                false
            }
            None => false,
        };
        t.epoch = Some(epoch);
        t.state_last = last_seq;
        t.first_held = first_held;
        if resume {
            if last_seq > t.last {
                Self::history(out, room, epoch, t.last, 0);
                t.requests.push_back(Request::Resume);
            }
        } else {
            // Live messages start after last_seq: that is where we are.
            t.last = last_seq;
            if last_seq > 0 && first_held > 0 {
                Self::history(out, room, 0, 0, JOIN_HISTORY);
                t.requests.push_back(Request::Recent);
            }
        }
    }

    pub(super) fn live(
        &mut self,
        room: &str,
        seq: u64,
        lines: Vec<String>,
        show: &mut Vec<String>,
    ) {
        let Some(t) = self.tracks.get_mut(&key(room)) else {
            show.extend(lines);
            return;
        };
        if t.epoch.is_some() && seq <= t.last && !t.syncing() {
            // Already shown (as history): never twice.
            return;
        }
        if t.syncing() && t.held.len() < MAX_HELD_LIVE {
            t.held.extend(lines.into_iter().map(|l| (seq, l)));
            return;
        }
        t.saw(seq);
        show.extend(lines);
    }

    pub(super) fn history_message(
        &mut self,
        room: &str,
        seq: u64,
        lines: Vec<String>,
        show: &mut Vec<String>,
    ) {
        let Some(t) = self.tracks.get_mut(&key(room)) else {
            return;
        };
        match t.requests.front_mut() {
            Some(Request::Recent) => {
                t.saw(seq);
                show.extend(lines);
            }
            Some(Request::Resume) => {
                if seq <= t.last {
                    return;
                }
                t.missed += seq - t.last - 1;
                t.saw(seq);
                show.extend(lines);
            }
            Some(Request::Older {
                before,
                last_rx,
                got,
            }) if seq < *before && seq > *last_rx => {
                *last_rx = seq;
                *got += 1;
                t.oldest = Some(t.oldest.map_or(seq, |o| o.min(seq)));
                show.extend(lines);
            }
            Some(Request::Older { .. }) | None => {}
        }
    }

    pub(super) fn history_end(
        &mut self,
        room: &str,
        epoch: u64,
        newest: u64,
        status: u8,
        out: &mut OutBuf,
        show: &mut Vec<String>,
    ) {
        let Some(t) = self.tracks.get_mut(&key(room)) else {
            return;
        };
        let Some(req) = t.requests.pop_front() else {
            return;
        };
        let more = status & history_status::MORE != 0;
        match req {
            Request::Recent => {
                if more {
                    show.push(format!("* older messages of {room}: /history"));
                }
                t.last = t.last.max(newest);
            }
            Request::Resume if status & history_status::NEW_EPOCH != 0 => {
                show.push(format!("! {room} was re-created while you were away"));
                t.last = newest;
                t.missed = 0;
            }
            Request::Resume if more && t.last < newest => {
                Self::history(out, room, epoch, t.last, 0);
                t.requests.push_front(Request::Resume);
                return;
            }
            Request::Resume => {
                // Complete: whatever up to `newest` did not come is gone.
                t.missed += newest.saturating_sub(t.last);
                t.last = t.last.max(newest);
                match std::mem::take(&mut t.missed) {
                    0 => {}
                    1 => show.push(format!("! missed 1 message in {room}")),
                    n => show.push(format!("! missed {n} messages in {room}")),
                }
            }
            Request::Older {
                before,
                last_rx,
                got,
            } => {
                if got == 0 {
                    show.push(format!("* no older messages held in {room}"));
                } else if more && last_rx + 1 < before {
                    // The server capped the reply below what was asked:
                    // say so rather than loop on requests.
                    show.push(format!(
                        "* the server sent {got} of them; /history again for more"
                    ));
                }
            }
        }
        if !t.syncing() {
            for (seq, line) in std::mem::take(&mut t.held) {
                if seq > t.last || t.epoch.is_none() {
                    t.saw(seq);
                    show.push(line);
                }
            }
        }
    }
}
