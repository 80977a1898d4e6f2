//! HISTORY: a room's held messages, planned against the session's epoch
//! and cut to fit its output.

use crate::server::sessions::registry::Sessions;
use mio::Token;

use crate::codec::{code, history_status, valid_room, ErrorCode, ServerMessage};

use super::super::history::{History, Plan, Request, RingId};
use super::super::{encode_into, Chat};

/// Cuts `plan` so its frames hold at most `budget` bytes, keeping the
/// oldest messages of a resume or the newest of an epoch-0 request, and
/// says MORE when it cut (possibly down to no message, when the session's
/// output is already at its pause mark), but not below `floor` messages.
/// Each probe is O(1) (two offsets in
/// the ring), so a binary search over the count costs next to nothing.
fn trim_to_bytes(
    h: &History,
    ring: RingId,
    plan: &mut Plan,
    newest: bool,
    budget: usize,
    floor: u64,
) {
    let bytes = |p: &Plan| {
        let (a, b) = h.frames(ring, p);
        a.len() + b.len()
    };
    let cut = |p: &Plan, count: u64| Plan {
        from_seq: if newest {
            p.from_seq + (p.count - count)
        } else {
            p.from_seq
        },
        count,
        status: p.status,
    };
    if plan.count <= floor || bytes(plan) <= budget {
        return;
    }
    let (mut lo, mut hi) = (floor, plan.count - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if bytes(&cut(plan, mid)) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    *plan = cut(plan, lo);
    if lo == 0 {
        plan.from_seq = 0;
    }
    plan.status |= history_status::MORE;
}

impl Chat {
    /// HISTORY (version 2, members only): held messages of the room,
    /// copied from the store's encoded frames, then HISTORY_END. Nothing
    /// above the `last_seq` of the session's ROOM_STATE is sent (those
    /// came live). One reply's messages fit in a quarter of `--max-outbuf`
    /// and in what is left below the session's pause mark; what does not
    /// fit is "more" (status bit 1), to ask for again. So however many
    /// HISTORY requests one read carries, the session's output stays near
    /// its pause mark, its input pauses (backpressure) and it is never cut
    /// for its own replies.
    pub(in crate::server) fn history(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: &str,
        epoch: u64,
        after_seq: u64,
        limit: u16,
    ) {
        if !valid_room(room) {
            return self.error(sessions, t, ErrorCode::BadRoom, code::HISTORY, "");
        }
        let Some(index) = self.member_of(t, room) else {
            return self.error(sessions, t, ErrorCode::NotInRoom, code::HISTORY, "");
        };
        if self.cluster.is_some() {
            return self.cluster_history(sessions, t, index, epoch, after_seq, limit);
        }
        let m = self.members.at(t).rooms()[index];
        let r = self.rooms.get(m.room);
        let req = Request {
            epoch,
            after_seq,
            limit,
            newest: m.joined_at_seq,
        };
        let mut plan = self.history.plan(r.ring, r.epoch, &req);
        let marks = sessions.marks();
        let pending = sessions.at(t).pending();
        let budget = (marks.max_outbuf / 4).min(marks.pause_above.saturating_sub(pending));
        // A session with next to nothing pending always gets a message, so
        // a message larger than the budget cannot stall a resume.
        let floor = u64::from(pending <= marks.resume_below);
        trim_to_bytes(&self.history, r.ring, &mut plan, epoch == 0, budget, floor);
        let (a, b) = self.history.frames(r.ring, &plan);
        encode_into(
            &mut self.frame,
            &ServerMessage::HistoryEnd {
                room: &r.name,
                epoch: r.epoch,
                newest: req.newest,
                status: plan.status,
            },
        );
        let s = sessions.at_mut(t);
        if s.life().muted() {
            return;
        }
        // Appended as a reply, not a delivery: a reply is bounded (above)
        // and its own input pauses past the pause mark, so it is never a
        // reason to cut the session.
        s.append(a, plan.count);
        s.append(b, 0);
        s.append(&self.frame, 1);
        sessions.stats.frames_out += plan.count + 1;
        sessions.stats.history_replies += 1;
        sessions.queue_flush(t);
    }
}
