//! The chat's side of a session's end, and of the daemon's: the reap stage
//! (step two of closing), the timers (login timeout, heartbeats, lingering
//! closes), and the shutdown drain.

use crate::server::sessions::registry::Sessions;
use std::time::Instant;

use log::debug;
use mio::Token;

use crate::codec::{ErrorCode, NameKey, ServerMessage};

use super::super::sessions::lifecycle::CloseReason;
use super::{encode_into, Chat};

impl Chat {
    /// Step two of closing, after the event batch: each marked session
    /// leaves its rooms (LEFT with the reason), gives up its nick, gets BYE
    /// if it quit, and waits in `Ending` for its output to drain and its
    /// peer to close. At most `--closes-per-iteration` a call: 19,500
    /// connections hanging up at once cost about 25 µs each (their last
    /// writes and close()) and, reaped together, held one iteration for
    /// half a second; the rest stay marked and the loop comes back for
    /// them without sleeping.
    pub fn reap(&mut self, sessions: &mut Sessions, now: Instant) {
        for _ in 0..self.config.closes_per_iteration.max(1) {
            let Some(t) = sessions.pop_closing() else {
                break;
            };
            let s = sessions.at_mut(t);
            let Some(leaving) = s.reap(now) else {
                continue;
            };
            debug!(
                "{t:?} {} closing: {}",
                s.peer(),
                leaving.reason.left_reason()
            );
            self.trace.close(t, s.id(), &leaving.reason);
            if self.cluster.is_some() {
                self.cluster_close(
                    sessions,
                    t,
                    leaving.reason.left_reason(),
                    leaving.registered,
                );
            }
            self.identity_close(sessions, t);
            while let Some(last) = self.members.at(t).rooms().len().checked_sub(1) {
                let id = self.members.at(t).rooms()[last].room;
                self.part_member(sessions, t, id, leaving.reason.left_reason());
            }
            if leaving.registered {
                // Not the nick another session of its account (or the
                // one that took it over) holds now.
                if let Some(key) = NameKey::new(self.members.at(t).nick()) {
                    if self.nicks.get(&key) == Some(&t) {
                        self.nicks.remove(&key);
                    }
                }
            }
            let s = sessions.at_mut(t);
            if let CloseReason::Quit(_) = leaving.reason {
                s.out_mut().push(&ServerMessage::Bye { reason: "goodbye" });
            }
            s.mute();
            if s.life().broken() || (s.life().peer_eof() && s.pending() == 0) {
                sessions.finish(t);
            } else {
                sessions.queue_flush(t);
                self.arm(sessions, t, leaving.deadline);
            }
        }
    }

    /// Handles every timer entry due at `now`: lingering rooms whose TTL
    /// ended, login timeouts, heartbeat PINGs and PING_TIMEOUTs, lingering
    /// closes. An entry whose session
    /// has since been active is simply rescheduled.
    pub fn run_timers(&mut self, sessions: &mut Sessions, now: Instant) {
        self.expire_rooms(sessions, now);
        self.cluster_tick(sessions, now);
        self.moderation_timers();
        self.identity_tick(sessions);
        while let Some((at, t, id)) = self.timers.pop_due(now) {
            match sessions.get_live(t, id) {
                Some(s) if s.timer_at() == Some(at) => s.set_timer_at(None),
                _ => continue, // stale: superseded, or the session is gone
            }
            self.on_timer(sessions, t, now);
        }
    }

    fn on_timer(&mut self, sessions: &mut Sessions, t: Token, now: Instant) {
        let hb = self.config.heartbeat;
        let s = sessions.at_mut(t);
        let life = s.life();
        if life.is_closing() || life.is_finished() {
            return;
        }
        if let Some(deadline) = life.ending_deadline() {
            if now >= deadline {
                // The peer did not close in time: whatever the kernel still
                // holds for it goes with a reset, not with the socket's
                // orphaned send queue.
                s.set_abort();
                self.trace.timer(t, s.id(), "linger-close");
                sessions.finish(t);
            } else {
                self.arm(sessions, t, deadline);
            }
            return;
        }
        if life.is_greeting() && now >= s.accepted_at() + self.config.login_timeout {
            self.trace.timer(t, s.id(), "login-timeout");
            sessions.stats.kicked_timeout += 1;
            return self.error(sessions, t, ErrorCode::LoginTimeout, 0, "");
        }
        let silent = now.saturating_duration_since(s.last_rx());
        if silent >= hb * 2 {
            self.trace.timer(t, s.id(), "ping-timeout");
            sessions.stats.kicked_timeout += 1;
            return self.error(sessions, t, ErrorCode::PingTimeout, 0, "");
        }
        if silent >= hb && !s.pinged() {
            s.set_pinged();
            self.trace.timer(t, s.id(), "ping");
            let token = now.duration_since(self.started).as_millis() as u64;
            self.reply(sessions, t, &ServerMessage::Ping { token });
        } else {
            // Quiet since the last check: give idle buffers back.
            sessions.released += s.release_idle_buffers();
        }
        let deadline = self.next_deadline(sessions, t);
        self.arm(sessions, t, deadline);
    }

    /// When `t` next needs looking at, if nothing arrives before then.
    pub(in crate::server) fn next_deadline(&self, sessions: &Sessions, t: Token) -> Instant {
        let s = sessions.at(t);
        let hb = self.config.heartbeat;
        let beat = if s.pinged() {
            s.last_rx() + hb * 2
        } else {
            s.last_rx() + hb
        };
        if let Some(deadline) = s.life().ending_deadline() {
            deadline
        } else if s.life().is_greeting() {
            beat.min(s.accepted_at() + self.config.login_timeout)
        } else {
            beat
        }
    }

    /// Makes sure `t` has a timer entry no later than `at`.
    pub(in crate::server) fn arm(&mut self, sessions: &mut Sessions, t: Token, at: Instant) {
        let s = sessions.at_mut(t);
        if s.timer_at().is_none_or(|cur| at < cur) {
            s.set_timer_at(Some(at));
            self.timers.schedule(at, t, s.id());
        }
    }

    /// SIGINT/SIGTERM: tell every session the server is going away. From
    /// now on HELLO and JOIN get SHUTTING_DOWN; everything else is served
    /// until the clients close or the grace period ends.
    pub fn begin_drain(&mut self, sessions: &mut Sessions) {
        self.draining = true;
        let grace_ms = self.config.grace.as_millis().min(u32::MAX as u128) as u32;
        encode_into(
            &mut self.frame,
            &ServerMessage::Shutdown {
                grace_ms,
                reason: "server shutting down",
            },
        );
        for t in sessions.tokens() {
            sessions.deliver(t, &self.frame);
        }
    }
}
