//! One session's life as a state machine: the states, and the only
//! transitions between them.
//!
//! ```text
//!   accept
//!     |
//!     v        HELLO ok
//!  Greeting ------------> Registered
//!     |                       |
//!     | mark_closing(reason)  | mark_closing(reason)   (QUIT, fatal ERROR,
//!     v                       v                         the peer's FIN, reset)
//!  Closing { reason, registered }      <- stage "reap" after the batch
//!     |
//!     | reap: leave rooms, give up the nick, BYE after QUIT
//!     v
//!  Ending { deadline, fin }   flush the last frames, discard input,
//!     |                       FIN after a fatal error, wait for the peer
//!     | output flushed and peer closed / broken / deadline
//!     v
//!  Finished                   removed at the end of the iteration
//! ```
//!
//! The state is private: code elsewhere asks questions (`accepts_input`,
//! `is_ending`) and calls transitions, each of which acts only from the
//! states it is defined for and does nothing (returning `false` or `None`)
//! from any other. So `Greeting -> Ending` or `Finished -> Registered`
//! cannot be written. Two facts are orthogonal to the state and recorded
//! alongside: the peer's FIN (`peer_eof`) and a failed socket (`broken`);
//! `muted` says no more frames may be queued (a fatal ERROR was the last).
//!
//! Four more facts about input and the close live here too, each changed
//! only by its transition below: `paused` (input not read: the session's
//! own output is backed up), `held` (input read but not yet dispatched,
//! kept until the flush resumes it), `waiting` (a request is with the
//! cluster's store) and `abort` (close with a reset).

use std::time::{Duration, Instant};

/// How long the server waits for the client to close after BYE.
const QUIT_LINGER: Duration = Duration::from_secs(5);
/// How long a session that ended otherwise may take to flush and close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Why a session ends, decided when it is marked for closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT with this reason.
    Quit(String),
    /// The client closed its side (EOF).
    PeerClosed,
    /// The socket failed (reset, broken pipe): nothing more can be sent.
    Broken,
    /// The server sent a fatal ERROR; the text is the LEFT reason.
    Fatal(&'static str),
}

impl CloseReason {
    /// The reason in the connection's last log line.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Quit(_) => "quit",
            CloseReason::PeerClosed => "peer closed",
            CloseReason::Broken => "connection broken",
            CloseReason::Fatal(why) => why,
        }
    }

    /// The reason given to the rooms in LEFT.
    pub fn left_reason(&self) -> &str {
        match self {
            CloseReason::Quit(text) => text,
            CloseReason::PeerClosed | CloseReason::Broken => "connection closed",
            CloseReason::Fatal(why) => why,
        }
    }
}

/// Who closes the connection once an ending session's output is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    /// The client closes first (after QUIT, or it already did), so
    /// TIME_WAIT lands on the client.
    Client,
    /// After a fatal error the server ends the conversation: FIN after the
    /// ERROR frame, then wait for the peer's.
    Due,
    /// Our FIN is sent.
    Sent,
}

#[derive(Debug)]
enum State {
    Greeting,
    Registered,
    Closing {
        reason: CloseReason,
        registered: bool,
    },
    Ending {
        deadline: Instant,
        fin: Fin,
    },
    Finished,
}

/// What [`Lifecycle::reap`] hands the chat: how to leave.
#[derive(Debug)]
pub struct Leaving {
    /// Why the session is closing.
    pub reason: CloseReason,
    /// Whether it held a nick (which it now gives up).
    pub registered: bool,
    /// When the server closes regardless.
    pub deadline: Instant,
}

/// A session's place in its life. See the module docs for the diagram.
#[derive(Debug)]
pub struct Lifecycle {
    state: State,
    /// Why it ended, in a word or two, once reaped (for the log).
    ended: &'static str,
    peer_eof: bool,
    broken: bool,
    muted: bool,
    /// Input is not read: the session's own output is backed up.
    paused: bool,
    /// Input was read and not dispatched (the output passed the pause
    /// mark in the middle of it); it is dispatched before the next read.
    held: bool,
    /// A request of this session is with the cluster's store: its next
    /// frames wait, held like paused input, until the answer comes.
    waiting: bool,
    /// Close with a reset (SO_LINGER 0).
    abort: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: State::Greeting,
            ended: "",
            peer_eof: false,
            broken: false,
            muted: false,
            paused: false,
            held: false,
            waiting: false,
            abort: false,
        }
    }
}

impl Lifecycle {
    // ----- questions ----------------------------------------------------

    /// Why the session ended (empty until it is reaped).
    pub fn end_reason(&self) -> &'static str {
        self.ended
    }

    /// Registered under a nick and not closing: may chat.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered)
    }

    /// Still in the login phase (the login timeout applies).
    pub fn is_greeting(&self) -> bool {
        matches!(self.state, State::Greeting)
    }

    /// Frames from the peer are still dispatched (not yet closing).
    pub fn accepts_input(&self) -> bool {
        matches!(self.state, State::Greeting | State::Registered)
    }

    /// Marked for closing, waiting for the reap stage.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    /// Has left the chat: only flushes and waits (input is discarded).
    pub fn is_ending(&self) -> bool {
        matches!(self.state, State::Ending { .. } | State::Finished)
    }

    /// Queued for removal.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// When an ending session is closed regardless.
    pub fn ending_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Ending { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// The peer has sent FIN.
    pub fn peer_eof(&self) -> bool {
        self.peer_eof
    }

    /// The socket failed: nothing more can be written.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// No more frames may be queued.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// Nothing more will be read: EOF, a failed socket, or removal.
    pub fn input_done(&self) -> bool {
        self.peer_eof || self.broken || self.is_finished()
    }

    /// Input is paused (backpressure).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Read input waits to be dispatched.
    pub fn is_holding(&self) -> bool {
        self.held
    }

    /// A request waits for the cluster's store.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// An abortive close (RST) was asked for.
    pub fn aborts(&self) -> bool {
        self.abort
    }

    // ----- transitions --------------------------------------------------

    /// Input stops being read until [`Lifecycle::resume`] (backpressure).
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Input read and not dispatched is kept: reading pauses until the
    /// flush resumes it.
    pub fn hold(&mut self) {
        self.held = true;
        self.paused = true;
    }

    /// The held input was taken out to be dispatched.
    pub fn release_held(&mut self) {
        self.held = false;
    }

    /// Paused input resumes. Returns whether it was paused (the caller
    /// reads again without waiting for an edge).
    pub fn resume(&mut self) -> bool {
        std::mem::replace(&mut self.paused, false)
    }

    /// Starts or ends waiting for the cluster's store. Returns whether
    /// input was paused or held meanwhile (the caller must read it again:
    /// no new edge will say it is there).
    pub fn set_waiting(&mut self, waiting: bool) -> bool {
        self.waiting = waiting;
        !waiting && (self.held || self.paused)
    }

    /// The socket is to be reset rather than closed.
    pub fn abort(&mut self) {
        self.abort = true;
    }

    /// Greeting -> Registered (HELLO accepted).
    pub fn register(&mut self) -> bool {
        if !self.is_greeting() {
            return false;
        }
        self.state = State::Registered;
        true
    }

    /// Greeting | Registered -> Closing. Returns true when newly marked (the
    /// caller queues it for the reap stage). A failed socket is recorded
    /// whatever the state.
    pub fn mark_closing(&mut self, reason: CloseReason) -> bool {
        if reason == CloseReason::Broken {
            self.broken = true;
        }
        let registered = match self.state {
            State::Greeting => false,
            State::Registered => true,
            _ => return false,
        };
        self.state = State::Closing { reason, registered };
        true
    }

    /// A fatal ERROR was queued for a session already marked for closing
    /// (QUIT, then a slow-consumer cut in the same batch): the fatal error
    /// wins, so no BYE follows the ERROR and the server ends the
    /// conversation itself instead of waiting for the client to close.
    /// Returns true when the session was already closing.
    pub fn escalate(&mut self, why: &'static str) -> bool {
        match &mut self.state {
            State::Closing { reason, .. } => {
                *reason = CloseReason::Fatal(why);
                true
            }
            _ => false,
        }
    }

    /// A fatal ERROR is queued: nothing may follow it.
    pub fn mute(&mut self) {
        self.muted = true;
    }

    /// Closing -> Ending, at the reap stage. After a fatal error or a
    /// failed socket the session is muted at once (its ERROR, if any, is
    /// already its last frame); otherwise it still gets the LEFT frames
    /// of its own leaving, and the caller mutes it afterwards.
    pub fn reap(&mut self, now: Instant) -> Option<Leaving> {
        if !self.is_closing() {
            return None;
        }
        let State::Closing { reason, registered } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return None;
        };
        let (linger, fin) = match reason {
            CloseReason::Quit(_) => (QUIT_LINGER, Fin::Client),
            CloseReason::Fatal(_) => (CLOSE_LINGER, Fin::Due),
            CloseReason::PeerClosed | CloseReason::Broken => (CLOSE_LINGER, Fin::Client),
        };
        if matches!(reason, CloseReason::Fatal(_) | CloseReason::Broken) {
            self.muted = true;
        }
        self.ended = reason.label();
        let deadline = now + linger;
        self.state = State::Ending { deadline, fin };
        Some(Leaving {
            reason,
            registered,
            deadline,
        })
    }

    /// The peer sent FIN (the caller decides between closing and finishing).
    pub fn peer_closed(&mut self) {
        self.peer_eof = true;
    }

    /// The socket failed while ending: recorded; the caller finishes it.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Whether our FIN is due now that the output is flushed; records it as
    /// sent (the caller shuts the write side once).
    pub fn take_fin(&mut self) -> bool {
        match &mut self.state {
            State::Ending { fin, .. } if *fin == Fin::Due => {
                *fin = Fin::Sent;
                true
            }
            _ => false,
        }
    }

    /// Ending -> Finished. Returns true when newly finished (the caller
    /// queues it for removal).
    pub fn finish(&mut self) -> bool {
        if !matches!(self.state, State::Ending { .. }) {
            return false;
        }
        self.state = State::Finished;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_path_and_illegal_transitions() {
        let now = Instant::now();
        let mut l = Lifecycle::default();
        assert!(!l.finish(), "Greeting -> Finished is not a transition");
        assert!(l.reap(now).is_none(), "Greeting cannot be reaped");
        assert!(l.is_greeting());
        assert!(l.register());
        assert!(!l.register(), "registers once");
        assert!(l.mark_closing(CloseReason::Quit("bye".into())));
        assert!(!l.mark_closing(CloseReason::PeerClosed), "marked once");
        assert!(!l.accepts_input());
        let leaving = l.reap(now).expect("closing is reaped");
        assert!(leaving.registered);
        assert_eq!(leaving.reason.left_reason(), "bye");
        assert!(!l.muted(), "a quitter still gets its own LEFT frames");
        assert!(!l.take_fin(), "after QUIT the client closes first");
        assert!(l.is_ending());
        assert!(l.finish());
        assert!(!l.finish());
        assert!(!l.register(), "Finished -> Registered is not a transition");
    }

    #[test]
    fn fatal_mutes_and_sends_fin_once() {
        let now = Instant::now();
        let mut l = Lifecycle::default();
        assert!(l.mark_closing(CloseReason::Fatal("slow consumer")));
        let leaving = l.reap(now).unwrap();
        assert!(!leaving.registered);
        assert!(l.muted());
        assert!(l.take_fin());
        assert!(!l.take_fin());
    }

    #[test]
    fn broken_is_recorded_even_when_already_closing() {
        let mut l = Lifecycle::default();
        assert!(l.mark_closing(CloseReason::PeerClosed));
        assert!(!l.broken());
        assert!(!l.mark_closing(CloseReason::Broken));
        assert!(l.broken());
    }

    #[test]
    fn held_input_pauses_and_a_wait_ending_reports_it() {
        let mut l = Lifecycle::default();
        assert!(!l.set_waiting(true));
        assert!(l.is_waiting());
        assert!(!l.set_waiting(false), "nothing was paused meanwhile");
        l.hold();
        assert!(l.is_holding() && l.is_paused());
        l.set_waiting(true);
        assert!(l.set_waiting(false), "held input must be read again");
        l.release_held();
        assert!(!l.is_holding());
        assert!(l.resume());
        assert!(!l.resume(), "resumes once");
        assert!(!l.aborts());
        l.abort();
        assert!(l.aborts());
    }
}
