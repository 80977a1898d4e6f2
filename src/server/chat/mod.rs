//! The chat: the protocol's state machine over rooms, nicks and members.
//!
//! Everything here is plain data and bytes: the chat never reads or
//! writes a socket, and keeps no connection. The loop owns the
//! [`Sessions`] and lends them to each call, with the bytes it read
//! ([`Chat::on_input`], [`Chat::on_held`]) or a door's event
//! ([`Chat::on_door`]); handling a frame only appends encoded frames to
//! sessions' output buffers and puts those sessions on the flush list; the
//! event loop writes them out once per iteration ("write before sleep").
//! Every handler takes the lent `sessions` as its first argument. The
//! chat is split by job:
//!
//! - this file: the [`Chat`] state, cutting bytes into whole frames, and
//!   `Chat::dispatch`, which checks a frame and calls its handler;
//! - [`handlers`]: the handlers, one file per concern, and the fan-out;
//! - [`members`]: each session's chat state (nick, rooms, account, key),
//!   by token;
//! - [`identity`]: protocol version 3 (token logins verified a bounded
//!   number per iteration, accounts, session keys, SAY_RESULT and
//!   deduplication, REFRESH and expiry); [`who`]: who a session is, for
//!   the handlers;
//! - [`rooms`], [`history`], [`limits`](super::limits): membership indexes, held
//!   messages, the rate allowance;
//! - [`closing`]: the reap stage, timers, the shutdown drain;
//! - [`super::sessions::registry`] (the loop's, lent to each call): the
//!   sessions, delivery, and the first step of closing.
//!
//! Closing is two-step: a session is *marked* (`Sessions::mark_closing`)
//! wherever the reason is found, and *reaped* after the event batch
//! (`Chat::reap`), so that no fan-out loop ever sees a member vanish under
//! it and no slab key is reused while an event for it may still be in the
//! batch.

pub mod closing;
pub mod cluster;
pub mod handlers;
pub mod history;
pub mod identity;
#[cfg(feature = "fuzzing")]
mod invariants;
pub mod members;
pub mod rooms;
pub mod tokens;
pub mod who;

use std::collections::HashMap;
use std::time::Instant;

use log::debug;
use mio::Token;

use crate::codec::frame::{decode, Decoded, Frame, Header};
use crate::codec::v3::{code as v3code, hello_version, is_version_3_code, ClientV3, VERSION_3};
use crate::codec::{
    code, is_version_2_code, ClientMessage, ErrorCode, NameKey, ServerMessage, VERSION_2,
};

use super::cluster::Cluster;
use super::config::Config;
use super::doors::DoorEvent;
use super::limits::Rate;
use super::metrics;
use super::sessions::lifecycle::CloseReason;
use super::sessions::registry::Sessions;
use super::sessions::session::{Marks, Session};
use super::sessions::timers::Timers;
use super::trace::Trace;
use super::web::{Response, Status};
use handlers::moderation::Moderation;
use history::{Epochs, History};
use members::{Member, Members};
use rooms::{RoomId, Rooms};

/// What dispatching one frame costs against a read budget (the doors'
/// unit of work, which they charge too).
pub use super::doors::FRAME_COST;

/// The chat's state: members, rooms, the nick index, timers, history,
/// identity and moderation. The sessions are the loop's, lent per call.
#[derive(Debug)]
pub struct Chat {
    pub(super) config: Config,
    pub(super) rate: Rate,
    /// What each session is in the chat, by token.
    pub(super) members: Members,
    pub(super) rooms: Rooms,
    /// Case-folded nick to session: WHISPER and NICK never scan.
    pub(super) nicks: HashMap<NameKey, Token>,
    /// Deadlines (login, heartbeat, lingering close).
    pub(super) timers: Timers,
    /// Every room's held messages, under one byte budget.
    pub(super) history: History,
    /// Picks each new room incarnation's epoch.
    pub(super) epochs: Epochs,
    /// Lingering rooms removed by `--max-lingering-rooms` or
    /// `--lingering-memory` before their TTL ended.
    pub(super) rooms_evicted: u64,
    /// Heap bytes of lingering rooms expired since the loop last took the
    /// count (about: what `--lingering-memory` charges them), for its trim.
    pub(super) rooms_released: usize,
    /// Set once SIGINT/SIGTERM started the drain.
    pub(super) draining: bool,
    /// Scratch buffer: a fan-out frame is encoded here once, then copied to
    /// each member.
    pub(super) frame: Vec<u8>,
    /// A run of MESSAGEs for one room from consecutive SAYs of one read,
    /// not yet fanned out (see `Chat::flush_cast`).
    pub(super) cast: Vec<u8>,
    pub(super) cast_room: Option<RoomId>,
    pub(super) cast_frames: u64,
    pub(super) stamp: u64,
    pub(super) started: Instant,
    pub(super) server_name: String,
    /// When the input being handled was read (SAY-to-write latency).
    pub(super) now: Instant,
    /// The loop trace (`--trace-file`): off unless the daemon sets it.
    pub trace: Trace,
    /// The cluster (`--redis`); standalone when `None`.
    pub(super) cluster: Option<Box<Cluster>>,
    /// Sessions whose wait for the cluster's store ended while their
    /// input was paused: (token, session id), for the loop to read.
    pub(super) woken: Vec<(Token, u64)>,
    /// Room states, server-wide bans, the state file (version 3).
    pub(super) moderation: Moderation,
    /// Protocol version 3: tokens, accounts, session keys, dedup.
    pub(super) identity: identity::Identity,
}

impl Chat {
    /// An empty chat.
    pub fn new(config: Config, now: Instant) -> Chat {
        let history = History::new(history::Limits {
            per_room: config.history,
            max_bytes: config.history_memory,
            reply_cap: config.history.clamp(1, u16::MAX as usize) as u16,
        });
        let config_node_name = config.node_name.clone();
        let moderation = Moderation::new(config.room_state_ttl, config.state_file.as_deref());
        let identity = identity::Identity::new(&config);
        Chat {
            rate: Rate {
                per_sec: config.rate,
                burst: config.burst,
            },
            config,
            members: Members::default(),
            rooms: Rooms::default(),
            nicks: HashMap::new(),
            timers: Timers::default(),
            history,
            epochs: Epochs::new(),
            rooms_evicted: 0,
            rooms_released: 0,
            draining: false,
            frame: Vec::with_capacity(256),
            cast: Vec::new(),
            cast_room: None,
            cast_frames: 0,
            stamp: 0,
            started: now,
            now,
            // A standalone daemon given --node-name shows it as a node does,
            // so an operator can tell several standalone daemons apart.
            server_name: match &config_node_name {
                Some(name) => format!("muxchatd {} (node {name})", env!("CARGO_PKG_VERSION")),
                None => format!("muxchatd {}", env!("CARGO_PKG_VERSION")),
            },
            trace: Trace::off(),
            cluster: None,
            woken: Vec::new(),
            moderation,
            identity,
        }
    }

    /// Makes this chat a cluster node: its rooms, nicks and history are
    /// shared through the store from now on.
    pub fn set_cluster(&mut self, cluster: Cluster) {
        self.server_name = format!(
            "muxchatd {} (node {})",
            env!("CARGO_PKG_VERSION"),
            cluster.name
        );
        self.cluster = Some(Box::new(cluster));
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The per-session rate allowance (a door's frames take from it too).
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Settings reloaded on SIGHUP (only the options `reload::plan` found
    /// safe to change live differ): the rate and the output marks held
    /// as copies are replaced too; everything else reads `config` when
    /// it needs it.
    pub fn set_config(&mut self, sessions: &mut Sessions, config: Config) {
        self.rate = Rate {
            per_sec: config.rate,
            burst: config.burst,
        };
        sessions.set_marks(Marks::new(&config));
        self.config = config;
        self.moderation_reconfigure();
    }

    /// Registered sessions now (those with a nick).
    pub fn registered(&self) -> usize {
        self.nicks.len()
    }

    /// The earliest timer deadline (sessions' and lingering rooms'), for
    /// the poll timeout.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        let room = self
            .rooms
            .oldest_lingering()
            .map(|(_, since)| since + self.config.room_ttl);
        let cluster = self.cluster.as_deref().map(Cluster::next_deadline);
        [
            self.timers.next_deadline(),
            room,
            cluster,
            self.moderation_deadline(),
            self.identity_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the chat started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Heap bytes given back to the allocator since the last trim:
    /// rooms removed, history rings shrunk or dropped (the sessions'
    /// buffers are the loop's own count).
    pub fn released(&self) -> usize {
        self.rooms_released + self.history.released()
    }

    /// Before a trim: clears the counts of `released`, and gives the
    /// rooms' and the history's tables their spare capacity back if a
    /// burst of rooms went and left them mostly empty (else the trim
    /// would find little to return).
    pub fn prepare_trim(&mut self) {
        self.rooms_released = 0;
        self.history.clear_released();
        self.rooms.shrink_if_sparse();
        self.history.shrink_if_sparse();
    }

    /// A connection the loop just opened at `t` ([`Sessions::open`]): a
    /// fresh member, and its login deadline.
    pub fn on_open(&mut self, sessions: &mut Sessions, t: Token) {
        self.members.open(t);
        let deadline = self.next_deadline(sessions, t);
        self.arm(sessions, t, deadline);
    }

    /// `t`'s member if `t` is still the session `sid` (tokens are reused).
    pub fn live_member(&self, sessions: &Sessions, t: Token, sid: u64) -> Option<&Member> {
        sessions
            .get(t)
            .filter(|s| s.id() == sid)
            .map(|_| self.members.at(t))
    }

    /// Removes a finished session and hands it back to the event loop to
    /// deregister and close.
    /// Its nick (empty if it never registered) comes with it, for the
    /// connection's last log line.
    pub fn remove(&mut self, sessions: &mut Sessions, t: Token) -> (Session, Member) {
        (sessions.remove(t), self.members.close(t))
    }

    // ----- input --------------------------------------------------------

    /// Input held back when the output passed the pause mark: dispatched
    /// before anything still in the socket, which it was read before.
    /// Returns the frames dispatched, and whether input is still held (the
    /// output passed the mark again).
    pub fn on_held(&mut self, sessions: &mut Sessions, t: Token, now: Instant) -> (usize, bool) {
        self.now = now;
        let held = sessions.at_mut(t).take_partial();
        let frames = self.dispatch_slice(sessions, t, &held, now);
        self.flush_cast(sessions);
        (frames, sessions.at(t).is_holding())
    }

    /// Bytes read from `t`'s socket: completes a partial frame carried over
    /// from earlier reads, then dispatches every whole frame in `data`
    /// straight from the caller's buffer, and keeps a trailing partial frame
    /// for next time. Returns the number of frames dispatched.
    pub fn on_input(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        data: &[u8],
        now: Instant,
    ) -> usize {
        self.now = now;
        let frames = self.dispatch_all(sessions, t, data, now);
        self.flush_cast(sessions);
        frames
    }

    fn dispatch_all(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        mut data: &[u8],
        now: Instant,
    ) -> usize {
        let max = self.config.max_payload;
        let marks = sessions.marks();
        let mut frames = 0;
        // A partial read left part of a frame behind: finish that frame
        // first, taking only the bytes it still needs.
        while self.accepts_input(sessions, t) && !sessions.at(t).inbuf().is_empty() {
            let s = sessions.at_mut(t);
            match decode(s.inbuf(), max) {
                Decoded::Incomplete(need) => {
                    let take = need.min(data.len());
                    s.keep_partial(&data[..take]);
                    data = &data[take..];
                    if take < need {
                        return frames;
                    }
                }
                Decoded::TooLarge(h) => {
                    self.too_large(sessions, t, h);
                    return frames;
                }
                Decoded::Frame(..) => {
                    let buf = s.take_partial();
                    if let Decoded::Frame(frame, _) = decode(&buf, max) {
                        self.dispatch(sessions, t, frame, now);
                        frames += 1;
                    }
                    if !data.is_empty() && self.over_pause(sessions, t, marks) {
                        sessions.at_mut(t).hold(data);
                        return frames;
                    }
                }
            }
        }
        frames + self.dispatch_slice(sessions, t, data, now)
    }

    /// Dispatches the whole frames of `data` (no partial frame may be
    /// carried over in `inbuf`), keeping a trailing partial frame. Stops
    /// as soon as the session's output passes its pause mark, and holds
    /// the rest (at most one read) until the flush resumes it: one read
    /// can carry thousands of requests whose replies are far larger than
    /// they are, so checking the mark only before a read is not enough.
    fn dispatch_slice(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        mut data: &[u8],
        now: Instant,
    ) -> usize {
        let max = self.config.max_payload;
        let marks = sessions.marks();
        let mut frames = 0;
        while !data.is_empty() && self.accepts_input(sessions, t) {
            match decode(data, max) {
                Decoded::Frame(frame, used) => {
                    self.dispatch(sessions, t, frame, now);
                    frames += 1;
                    data = &data[used..];
                    if !data.is_empty() && self.over_pause(sessions, t, marks) {
                        if self.accepts_input(sessions, t) {
                            sessions.at_mut(t).hold(data);
                        }
                        break;
                    }
                }
                Decoded::Incomplete(_) => {
                    // Less than one frame: bounded by the header check
                    // below on the next read, never more than one frame.
                    sessions.at_mut(t).keep_partial(data);
                    break;
                }
                Decoded::TooLarge(h) => {
                    self.too_large(sessions, t, h);
                    break;
                }
            }
        }
        frames
    }

    /// What a session's door needs from the chat.
    pub fn on_door(&mut self, sessions: &mut Sessions, t: Token, ev: DoorEvent, now: Instant) {
        self.now = now;
        let served = CloseReason::Fatal("http request served");
        match ev {
            DoorEvent::Metrics => {
                let mut stats = self.stats_list(sessions, now);
                stats.extend(self.moderation_stats());
                let text = metrics::render(
                    &stats,
                    self.draining,
                    &sessions.hist,
                    &metrics::ProcessStats::read(),
                );
                let resp = Response::new(Status::Ok, metrics::CONTENT_TYPE, text);
                sessions.at_mut(t).respond(&resp);
                sessions.mark_closing(t, served);
            }
            DoorEvent::Healthz => {
                // A load balancer must stop sending clients to a node
                // that cannot register them (or not check them against
                // its replica of the bans yet).
                let cut_off = self.cluster.as_deref().is_some_and(|c| !c.serving());
                let resp = if self.draining {
                    Response::text(Status::Unavailable, "draining")
                } else if cut_off {
                    Response::text(Status::Unavailable, "cluster unavailable")
                } else {
                    Response::text(Status::Ok, "ok")
                };
                sessions.at_mut(t).respond(&resp);
                sessions.mark_closing(t, served);
            }
            DoorEvent::Answered => sessions.mark_closing(t, served),
            DoorEvent::Upgraded => {
                debug!("{t:?} upgraded to WebSocket");
                // The login timeout runs from the upgrade on.
                sessions.at_mut(t).restart_login(now);
                let deadline = self.next_deadline(sessions, t);
                self.arm(sessions, t, deadline);
            }
            // Fatal at the door even where the protocol's error is not
            // (MALFORMED): a broken framing cannot be resynchronised.
            // A session already cut (its ERROR sent, the door's close
            // queued) gets no second ERROR.
            DoorEvent::Fatal { .. } if !self.accepts_input(sessions, t) => {}
            DoorEvent::Fatal { error, detail } => {
                self.flush_cast(sessions);
                self.trace_error(sessions, t, error, 0);
                sessions.cut(t, error, 0, detail);
            }
            DoorEvent::Closed => sessions.on_peer_eof(t),
        }
        sessions.queue_flush(t);
    }

    fn accepts_input(&self, sessions: &Sessions, t: Token) -> bool {
        sessions.at(t).life().accepts_input()
    }

    /// Whether `t`'s output is past its pause mark. MESSAGEs still batched
    /// for a room (`cast`) are not counted yet: the batch is bounded
    /// (`CAST_LIMIT`), and fanning it out per frame would undo it.
    fn over_pause(&self, sessions: &Sessions, t: Token, marks: Marks) -> bool {
        sessions.at(t).over_pause(marks)
    }

    fn too_large(&mut self, sessions: &mut Sessions, t: Token, h: Header) {
        let detail = format!(
            "payload of {} bytes is over the maximum of {}",
            h.length, self.config.max_payload
        );
        self.error(sessions, t, ErrorCode::FrameTooLarge, h.code, &detail);
    }

    /// One whole frame from `t`, checked in the order the protocol gives:
    /// flags, known code, registration, payload layout, then each command's
    /// own name, text and state checks.
    fn dispatch(&mut self, sessions: &mut Sessions, t: Token, frame: Frame<'_>, now: Instant) {
        sessions.stats.frames_in += 1;
        sessions.at_mut(t).touch(now);
        let request = frame.code;
        if request != code::SAY {
            // Whatever this frame produces must come after the MESSAGEs
            // already batched.
            self.flush_cast(sessions);
        }
        let v3 = self.members.at(t).version() >= VERSION_3;
        let s = sessions.at_mut(t);
        if request != code::PONG && !s.allow(self.rate, now) {
            self.trace.refuse(t, s.id(), "rate", request);
            sessions.stats.rate_limited += 1;
            if v3 && request == code::SAY {
                return self.refuse_say_v3(sessions, t, frame.payload, ErrorCode::RateLimited);
            }
            return self.error(sessions, t, ErrorCode::RateLimited, request, "");
        }
        if frame.flags != 0 {
            return self.error(sessions, t, ErrorCode::BadFrame, request, "");
        }
        let registered = s.life().is_registered();
        if is_version_3_code(request) {
            // Codes 113-122 exist for version-3 sessions only.
            return match (v3 && registered, request) {
                (true, v3code::REFRESH) => match ClientV3::decode(request, frame.payload) {
                    Ok(ClientV3::Refresh { token }) => self.refresh(sessions, t, token.0),
                    _ => self.error(sessions, t, ErrorCode::Malformed, request, ""),
                },
                (true, _) => self.moderation(sessions, t, request, frame.payload),
                _ => self.error(sessions, t, ErrorCode::UnknownCode, request, ""),
            };
        }
        if !ClientMessage::is_known(request) {
            return self.error(sessions, t, ErrorCode::UnknownCode, request, "");
        }
        let before_hello = matches!(request, code::HELLO | code::PING | code::PONG | code::QUIT);
        if !registered && !before_hello {
            return self.error(sessions, t, ErrorCode::NotRegistered, request, "");
        }
        // A version-1 session sees no change at all: HISTORY is a code it
        // does not have.
        if is_version_2_code(request) && self.members.at(t).version() < VERSION_2 {
            return self.error(sessions, t, ErrorCode::UnknownCode, request, "");
        }
        if registered && request == code::HELLO {
            return self.error(sessions, t, ErrorCode::AlreadyRegistered, request, "");
        }
        if request == code::HELLO && hello_version(frame.payload) == Some(VERSION_3) {
            return match ClientV3::decode(request, frame.payload) {
                Ok(ClientV3::Hello {
                    nick,
                    token,
                    session_key,
                    ..
                }) => self.hello_v3(sessions, t, nick, token.0, session_key.0),
                // Version 3 in the short layout of versions 1 and 2 (a
                // client that only changed the byte): it speaks neither.
                _ if ClientMessage::decode(request, frame.payload).is_ok() => self.error(
                    sessions,
                    t,
                    ErrorCode::BadVersion,
                    request,
                    "a version-3 HELLO carries a token and a session key",
                ),
                _ => self.error(sessions, t, ErrorCode::Malformed, request, ""),
            };
        }
        if v3 && request == code::SAY {
            return self.say_v3(sessions, t, frame.payload);
        }
        let Ok(msg) = ClientMessage::decode(request, frame.payload) else {
            return self.error(sessions, t, ErrorCode::Malformed, request, "");
        };
        match msg {
            ClientMessage::Hello { version, nick } => self.hello(sessions, t, version, nick),
            ClientMessage::Join { room } => self.join(sessions, t, room),
            ClientMessage::Leave { room } => self.leave(sessions, t, room),
            ClientMessage::Say { room, text } => self.say(sessions, t, room, text),
            ClientMessage::Whisper { nick, text } => self.whisper(sessions, t, nick, text),
            ClientMessage::Nick { nick } => self.change_nick(sessions, t, nick),
            ClientMessage::ListRooms => self.list_rooms(sessions, t),
            ClientMessage::ListUsers { room } => self.list_users(sessions, t, room),
            ClientMessage::Ping { token } => {
                self.reply(sessions, t, &ServerMessage::Pong { token })
            }
            ClientMessage::Pong { .. } => {}
            ClientMessage::Quit { reason } => {
                let reason = if reason.is_empty() { "quit" } else { reason };
                sessions.mark_closing(t, CloseReason::Quit(reason.to_owned()));
            }
            ClientMessage::Stats => self.send_stats(sessions, t, now),
            ClientMessage::History {
                room,
                epoch,
                after_seq,
                limit,
            } => self.history(sessions, t, room, epoch, after_seq, limit),
        }
    }

    // ----- helpers ------------------------------------------------------

    /// A reply to `t` alone.
    pub(super) fn reply(&mut self, sessions: &mut Sessions, t: Token, msg: &ServerMessage<'_>) {
        encode_into(&mut self.frame, msg);
        sessions.reply(t, &self.frame);
    }

    /// ERROR to `t`. A fatal error also marks the session for closing;
    /// a non-fatal one changes nothing else.
    pub(super) fn error(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        error: ErrorCode,
        request: u16,
        detail: &str,
    ) {
        self.flush_cast(sessions);
        self.trace_error(sessions, t, error, request);
        let detail = if detail.is_empty() {
            error.describe()
        } else {
            detail
        };
        if error.is_fatal() {
            sessions.cut(t, error, request, detail);
        } else {
            self.reply(sessions, t, &ServerMessage::error(error, request, detail));
        }
    }
}

/// Encodes `msg` into the reusable scratch buffer.
pub(super) fn encode_into(frame: &mut Vec<u8>, msg: &ServerMessage<'_>) {
    frame.clear();
    msg.encode(frame);
}

impl Chat {
    /// The loop trace's `error` line: the session's id is looked up only
    /// when the trace is on, so with it off this is one branch.
    #[inline]
    fn trace_error(&mut self, sessions: &mut Sessions, t: Token, error: ErrorCode, request: u16) {
        if self.trace.is_on() {
            let id = sessions.at(t).id();
            self.trace.error(t, id, error, request);
        }
    }
}
