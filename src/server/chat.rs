//! The chat: the protocol's state machine over sessions, rooms and nicks.
//!
//! Everything here is plain data and bytes. Nothing calls into the kernel:
//! handling a frame only appends encoded frames to sessions' output buffers
//! and puts those sessions on the flush list; the event loop writes them
//! out once per iteration ("write before sleep"). Closing is two-step: a
//! session is *marked* (`mark_closing`) wherever the reason is found, and
//! *reaped* after the event batch ([`Chat::reap`]), so that no fan-out loop
//! ever sees a member vanish under it and no slab key is reused while an
//! event for it may still be in the batch.

use std::collections::HashMap;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::debug;
use mio::Token;
use slab::Slab;

use crate::config::Config;
use crate::protocol::frame::{decode, Decoded, Frame, Header};
use crate::protocol::{
    code, valid_nick, valid_room, ClientMessage, ErrorCode, NameKey, ServerMessage,
    PROTOCOL_VERSION,
};

use super::limits::{Rate, TokenBucket};
use super::rooms::{RoomId, Rooms};
use super::session::{CloseReason, Membership, OutBuf, Phase, Session};
use super::timers::Timers;

/// A run of SAYs to one room is fanned out once it holds this many bytes,
/// which bounds the batch and the delay of the slow-consumer check.
const CAST_LIMIT: usize = 64 * 1024;
/// How long the server waits for the client to close after BYE.
const QUIT_LINGER: Duration = Duration::from_secs(5);
/// How long a session that ended otherwise may take to flush and close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Counters reported by STATS_REPLY.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct Stats {
    pub accepted: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub poll_wakeups: u64,
    pub events: u64,
    pub kicked_slow: u64,
    pub kicked_timeout: u64,
    pub rejected_full: u64,
    pub rate_limited: u64,
    pub messages: u64,
}

/// The sessions and the work lists the event loop drains each iteration.
#[derive(Debug)]
pub struct Sessions {
    /// Every connection, keyed by its token.
    pub slab: Slab<Session>,
    /// Sessions with output queued this iteration (each at most once).
    pub flush_list: Vec<Token>,
    /// Sessions marked for closing, reaped after the event batch.
    pub closing: Vec<Token>,
    /// Sessions done closing, removed at the end of the iteration.
    pub finished: Vec<Token>,
    max_outbuf: usize,
    frames_out: u64,
    kicked_slow: u64,
}

impl Sessions {
    /// Queues already-encoded frames for `t`. This is the fan-out's inner
    /// step: one memcpy into a buffer, and the session joins the flush list
    /// once. A session whose backlog passes `--max-outbuf` is cut as a slow
    /// consumer; everybody else is unaffected.
    #[inline]
    pub fn deliver(&mut self, t: Token, bytes: &[u8]) {
        self.deliver_frames(t, bytes, 1);
    }

    /// [`Sessions::deliver`] for `frames` frames encoded back to back.
    #[inline]
    pub fn deliver_frames(&mut self, t: Token, bytes: &[u8], frames: u64) {
        let s = &mut self.slab[t.0];
        if s.muted {
            return;
        }
        s.out.append(bytes);
        self.frames_out += frames;
        if s.out.pending() > self.max_outbuf {
            self.kicked_slow += 1;
            self.cut(
                t,
                ErrorCode::SlowConsumer,
                0,
                "output backlog over the limit",
            );
        } else {
            self.queue_flush(t);
        }
    }

    /// A fatal error: queue the ERROR as the session's last frame, mute it
    /// (nothing may follow the ERROR, and later fan-outs in the same batch
    /// must not cut it again), and mark it for closing.
    pub fn cut(&mut self, t: Token, error: ErrorCode, request: u16, detail: &str) {
        let s = &mut self.slab[t.0];
        s.out.push(&ServerMessage::error(error, request, detail));
        s.muted = true;
        debug!("{t:?} {} fatal {}", s.peer, error.name());
        let why = match error {
            ErrorCode::SlowConsumer => "slow consumer",
            ErrorCode::PingTimeout => "ping timeout",
            ErrorCode::LoginTimeout => "login timeout",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::BadVersion => "bad version",
            _ => "error",
        };
        self.queue_flush(t);
        self.mark_closing(t, CloseReason::Fatal(why));
    }

    /// Puts `t` on the flush list unless it is already there.
    #[inline]
    pub fn queue_flush(&mut self, t: Token) {
        let s = &mut self.slab[t.0];
        if !s.flush_queued {
            s.flush_queued = true;
            self.flush_list.push(t);
        }
    }

    /// Step one of closing: remember why, and queue the session for the
    /// reap stage. Safe to call anywhere, any number of times.
    pub fn mark_closing(&mut self, t: Token, reason: CloseReason) {
        let s = &mut self.slab[t.0];
        if s.closing.is_some() || matches!(s.phase, Phase::Ending { .. }) {
            if reason == CloseReason::Broken {
                s.broken = true;
            }
            return;
        }
        s.broken = reason == CloseReason::Broken;
        s.closing = Some(reason);
        self.closing.push(t);
    }

    /// Queues `t` for removal at the end of the iteration.
    pub fn finish(&mut self, t: Token) {
        let s = &mut self.slab[t.0];
        if !s.finished {
            s.finished = true;
            self.finished.push(t);
        }
    }
}

/// The whole chat state: sessions, rooms, the nick index, timers, counters.
#[derive(Debug)]
pub struct Chat {
    config: Config,
    rate: Rate,
    /// Sessions and the loop's work lists.
    pub sessions: Sessions,
    rooms: Rooms,
    /// Case-folded nick to session: WHISPER and NICK never scan.
    nicks: HashMap<NameKey, Token>,
    /// Deadlines (login, heartbeat, lingering close).
    pub timers: Timers,
    /// Counters for STATS_REPLY.
    pub stats: Stats,
    /// Set once SIGINT/SIGTERM started the drain.
    pub draining: bool,
    next_id: u64,
    /// Scratch buffer: a fan-out frame is encoded here once, then copied to
    /// each member.
    frame: Vec<u8>,
    /// A run of MESSAGEs for one room from consecutive SAYs of one read,
    /// not yet fanned out (see [`Chat::flush_cast`]).
    cast: Vec<u8>,
    cast_room: Option<RoomId>,
    cast_frames: u64,
    stamp: u64,
    started: Instant,
    server_name: String,
}

impl Chat {
    /// An empty chat.
    pub fn new(config: Config, now: Instant) -> Chat {
        Chat {
            rate: Rate {
                per_sec: config.rate,
                burst: config.burst,
            },
            sessions: Sessions {
                slab: Slab::with_capacity(1024),
                flush_list: Vec::new(),
                closing: Vec::new(),
                finished: Vec::new(),
                max_outbuf: config.max_outbuf,
                frames_out: 0,
                kicked_slow: 0,
            },
            config,
            rooms: Rooms::default(),
            nicks: HashMap::new(),
            timers: Timers::default(),
            stats: Stats::default(),
            draining: false,
            next_id: 0,
            frame: Vec::with_capacity(256),
            cast: Vec::new(),
            cast_room: None,
            cast_frames: 0,
            stamp: 0,
            started: now,
            server_name: format!("muxchatd {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connections open now, registered or not.
    pub fn connections(&self) -> usize {
        self.sessions.slab.len()
    }

    /// Adds a freshly accepted connection and returns its token.
    pub fn add_session(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) -> Token {
        self.next_id += 1;
        self.stats.accepted += 1;
        let entry = self.sessions.slab.vacant_entry();
        let t = Token(entry.key());
        entry.insert(Session {
            stream,
            id: self.next_id,
            peer,
            phase: Phase::Login,
            nick: String::new(),
            rooms: Vec::new(),
            inbuf: Vec::new(),
            out: OutBuf::default(),
            writable_interest: false,
            flush_queued: false,
            flushed_in: 0,
            read_in: 0,
            paused: false,
            closing: None,
            broken: false,
            muted: false,
            finished: false,
            fin_sent: false,
            peer_eof: false,
            last_rx: now,
            pinged: false,
            accepted_at: now,
            bucket: TokenBucket::new(self.rate, now),
            timer_at: None,
            stamp: 0,
        });
        let deadline = self.next_deadline(t);
        self.arm(t, deadline);
        t
    }

    /// Removes a finished session and hands its socket back to the event
    /// loop to deregister and close.
    pub fn remove(&mut self, t: Token) -> Session {
        self.sessions.slab.remove(t.0)
    }

    // ----- input --------------------------------------------------------

    /// Bytes read from `t`'s socket: completes a partial frame carried over
    /// from earlier reads, then dispatches every whole frame in `data`
    /// straight from the caller's buffer, and keeps a trailing partial frame
    /// for next time. Returns the number of frames dispatched.
    pub fn on_input(&mut self, t: Token, data: &[u8], now: Instant) -> usize {
        let frames = self.dispatch_all(t, data, now);
        self.flush_cast();
        frames
    }

    fn dispatch_all(&mut self, t: Token, mut data: &[u8], now: Instant) -> usize {
        let max = self.config.max_payload;
        let mut frames = 0;
        // A partial read left part of a frame behind: finish that frame
        // first, taking only the bytes it still needs.
        while self.accepts_input(t) && !self.sessions.slab[t.0].inbuf.is_empty() {
            let s = &mut self.sessions.slab[t.0];
            match decode(&s.inbuf, max) {
                Decoded::Incomplete(need) => {
                    let take = need.min(data.len());
                    s.inbuf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if take < need {
                        return frames;
                    }
                }
                Decoded::TooLarge(h) => {
                    self.too_large(t, h);
                    return frames;
                }
                Decoded::Frame(..) => {
                    let buf = mem::take(&mut s.inbuf);
                    if let Decoded::Frame(frame, _) = decode(&buf, max) {
                        self.dispatch(t, frame, now);
                        frames += 1;
                    }
                }
            }
        }
        while !data.is_empty() && self.accepts_input(t) {
            match decode(data, max) {
                Decoded::Frame(frame, used) => {
                    self.dispatch(t, frame, now);
                    frames += 1;
                    data = &data[used..];
                }
                Decoded::Incomplete(_) => {
                    // Less than one frame: bounded by the header check
                    // below on the next read, never more than one frame.
                    self.sessions.slab[t.0].inbuf.extend_from_slice(data);
                    break;
                }
                Decoded::TooLarge(h) => {
                    self.too_large(t, h);
                    break;
                }
            }
        }
        frames
    }

    /// The peer sent FIN. Frames before it have been handled; now the
    /// session leaves (a half-close is a leave).
    pub fn on_peer_eof(&mut self, t: Token) {
        let s = &mut self.sessions.slab[t.0];
        s.peer_eof = true;
        s.inbuf = Vec::new();
        match s.phase {
            Phase::Ending { .. } => {
                if s.out.pending() == 0 || s.broken {
                    self.sessions.finish(t);
                }
            }
            _ => self.sessions.mark_closing(t, CloseReason::PeerClosed),
        }
    }

    /// The socket failed (reset, broken pipe).
    pub fn on_broken(&mut self, t: Token) {
        match self.sessions.slab[t.0].phase {
            Phase::Ending { .. } => {
                self.sessions.slab[t.0].broken = true;
                self.sessions.finish(t);
            }
            _ => self.sessions.mark_closing(t, CloseReason::Broken),
        }
    }

    fn accepts_input(&self, t: Token) -> bool {
        let s = &self.sessions.slab[t.0];
        s.closing.is_none() && matches!(s.phase, Phase::Login | Phase::Chat)
    }

    fn too_large(&mut self, t: Token, h: Header) {
        let detail = format!(
            "payload of {} bytes is over the maximum of {}",
            h.length, self.config.max_payload
        );
        self.error(t, ErrorCode::FrameTooLarge, h.code, &detail);
    }

    /// One whole frame from `t`, checked in the order the protocol gives:
    /// flags, known code, registration, payload layout, then each command's
    /// own name, text and state checks.
    fn dispatch(&mut self, t: Token, frame: Frame<'_>, now: Instant) {
        self.stats.frames_in += 1;
        let s = &mut self.sessions.slab[t.0];
        s.last_rx = now;
        s.pinged = false;
        let request = frame.code;
        if request != code::SAY {
            // Whatever this frame produces must come after the MESSAGEs
            // already batched.
            self.flush_cast();
        }
        let s = &mut self.sessions.slab[t.0];
        if request != code::PONG && !s.bucket.allow(self.rate, now) {
            self.stats.rate_limited += 1;
            return self.error(t, ErrorCode::RateLimited, request, "");
        }
        if frame.flags != 0 {
            return self.error(t, ErrorCode::BadFrame, request, "");
        }
        // The codec knows version 2's HISTORY; this daemon does not speak
        // version 2 yet, so HISTORY stays an unknown code as in version 1.
        if !ClientMessage::is_known(request) || request == code::HISTORY {
            return self.error(t, ErrorCode::UnknownCode, request, "");
        }
        let registered = s.phase == Phase::Chat;
        let before_hello = matches!(request, code::HELLO | code::PING | code::PONG | code::QUIT);
        if !registered && !before_hello {
            return self.error(t, ErrorCode::NotRegistered, request, "");
        }
        if registered && request == code::HELLO {
            return self.error(t, ErrorCode::AlreadyRegistered, request, "");
        }
        let Ok(msg) = ClientMessage::decode(request, frame.payload) else {
            return self.error(t, ErrorCode::Malformed, request, "");
        };
        match msg {
            ClientMessage::Hello { version, nick } => self.hello(t, version, nick),
            ClientMessage::Join { room } => self.join(t, room),
            ClientMessage::Leave { room } => self.leave(t, room),
            ClientMessage::Say { room, text } => self.say(t, room, text),
            ClientMessage::Whisper { nick, text } => self.whisper(t, nick, text),
            ClientMessage::Nick { nick } => self.change_nick(t, nick),
            ClientMessage::ListRooms => self.list_rooms(t),
            ClientMessage::ListUsers { room } => self.list_users(t, room),
            ClientMessage::Ping { token } => self.reply(t, &ServerMessage::Pong { token }),
            ClientMessage::Pong { .. } => {}
            ClientMessage::Quit { reason } => {
                let reason = if reason.is_empty() { "quit" } else { reason };
                self.sessions
                    .mark_closing(t, CloseReason::Quit(reason.to_owned()));
            }
            ClientMessage::Stats => self.send_stats(t, now),
            ClientMessage::History { .. } => self.error(t, ErrorCode::UnknownCode, request, ""),
        }
    }

    // ----- commands -----------------------------------------------------

    fn hello(&mut self, t: Token, version: u8, nick: &str) {
        if version != PROTOCOL_VERSION {
            return self.error(
                t,
                ErrorCode::BadVersion,
                code::HELLO,
                "this server speaks version 1",
            );
        }
        if !valid_nick(nick) {
            return self.error(t, ErrorCode::BadNick, code::HELLO, "");
        }
        if self.draining {
            return self.error(t, ErrorCode::ShuttingDown, code::HELLO, "");
        }
        let Some(key) = NameKey::new(nick) else {
            return self.error(t, ErrorCode::BadNick, code::HELLO, "");
        };
        if self.nicks.contains_key(&key) {
            return self.error(t, ErrorCode::NickInUse, code::HELLO, "");
        }
        self.nicks.insert(key, t);
        let s = &mut self.sessions.slab[t.0];
        s.nick = nick.to_owned();
        s.phase = Phase::Chat;
        debug!("{t:?} {} registered as {nick}", s.peer);
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            nick,
            server: &self.server_name,
            heartbeat_ms: self.config.heartbeat.as_millis() as u32,
            max_payload: self.config.max_payload,
        };
        encode_into(&mut self.frame, &welcome);
        self.sessions.deliver(t, &self.frame);
    }

    fn join(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::JOIN, "");
        }
        if self.draining {
            return self.error(t, ErrorCode::ShuttingDown, code::JOIN, "");
        }
        if self.member_of(t, room).is_some() {
            return self.error(t, ErrorCode::AlreadyInRoom, code::JOIN, "");
        }
        if self.sessions.slab[t.0].rooms.len() >= self.config.max_rooms {
            return self.error(t, ErrorCode::TooManyRooms, code::JOIN, "");
        }
        let (id, slot) = self.rooms.join(room, t);
        let s = &mut self.sessions.slab[t.0];
        s.rooms.push(Membership { room: id, slot });
        let joined = ServerMessage::Joined {
            room: &self.rooms.get(id).name,
            nick: &s.nick,
        };
        encode_into(&mut self.frame, &joined);
        self.cast_presence(id, t);
    }

    fn leave(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::LEAVE, "");
        }
        match self.member_of(t, room) {
            Some(index) => self.part(t, index, ""),
            None => self.error(t, ErrorCode::NotInRoom, code::LEAVE, ""),
        }
    }

    fn say(&mut self, t: Token, room: &str, text: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::SAY, "");
        }
        if let Err(e) = self.check_text(text) {
            return self.error(t, e, code::SAY, "");
        }
        let Some(index) = self.member_of(t, room) else {
            return self.error(t, ErrorCode::NotInRoom, code::SAY, "");
        };
        self.stats.messages += 1;
        let id = self.sessions.slab[t.0].rooms[index].room;
        if self.cast_room != Some(id) {
            self.flush_cast();
            self.cast_room = Some(id);
        }
        let s = &self.sessions.slab[t.0];
        let r = self.rooms.get_mut(id);
        r.seq += 1;
        // Encode once; every member gets a copy of the same bytes.
        ServerMessage::Message {
            room: &r.name,
            seq: r.seq,
            from: &s.nick,
            text,
        }
        .encode(&mut self.cast);
        self.cast_frames += 1;
        if self.cast.len() >= CAST_LIMIT {
            self.flush_cast();
        }
    }

    /// Fans out the batched MESSAGEs: one bulk copy per member instead of
    /// one small copy per member per message. Copying a member's whole run
    /// at once writes its buffer sequentially, where a copy per message
    /// interleaved 1,000 write streams and missed the cache on nearly every
    /// one. Called before anything else is queued for anyone, so every
    /// member still sees frames in exactly the order they were produced.
    fn flush_cast(&mut self) {
        let Some(id) = self.cast_room.take() else {
            return;
        };
        let frames = mem::take(&mut self.cast_frames);
        for &member in &self.rooms.get(id).members {
            self.sessions.deliver_frames(member, &self.cast, frames);
        }
        self.cast.clear();
    }

    fn whisper(&mut self, t: Token, nick: &str, text: &str) {
        if !valid_nick(nick) {
            return self.error(t, ErrorCode::BadNick, code::WHISPER, "");
        }
        if let Err(e) = self.check_text(text) {
            return self.error(t, e, code::WHISPER, "");
        }
        let Some(&target) = NameKey::new(nick).and_then(|k| self.nicks.get(&k)) else {
            return self.error(t, ErrorCode::NoSuchNick, code::WHISPER, "");
        };
        let from = &self.sessions.slab[t.0].nick;
        encode_into(&mut self.frame, &ServerMessage::WhisperFrom { from, text });
        self.sessions.deliver(target, &self.frame);
    }

    fn change_nick(&mut self, t: Token, new: &str) {
        if !valid_nick(new) {
            return self.error(t, ErrorCode::BadNick, code::NICK, "");
        }
        let Some(key) = NameKey::new(new) else {
            return self.error(t, ErrorCode::BadNick, code::NICK, "");
        };
        if self.nicks.get(&key).is_some_and(|&owner| owner != t) {
            return self.error(t, ErrorCode::NickInUse, code::NICK, "");
        }
        let s = &mut self.sessions.slab[t.0];
        let old = mem::replace(&mut s.nick, new.to_owned());
        if let Some(old_key) = NameKey::new(&old) {
            self.nicks.remove(&old_key);
        }
        self.nicks.insert(key, t);
        encode_into(
            &mut self.frame,
            &ServerMessage::NickChanged { old: &old, new },
        );
        // Once to the sender and once to each session sharing any room
        // with it, however many rooms they share: a fresh stamp marks who
        // already has it.
        self.stamp += 1;
        let stamp = self.stamp;
        self.sessions.slab[t.0].stamp = stamp;
        self.sessions.deliver(t, &self.frame);
        let rooms: Vec<RoomId> = self.sessions.slab[t.0]
            .rooms
            .iter()
            .map(|m| m.room)
            .collect();
        for id in rooms {
            for &member in &self.rooms.get(id).members {
                let m = &mut self.sessions.slab[member.0];
                if m.stamp != stamp {
                    m.stamp = stamp;
                    self.sessions.deliver(member, &self.frame);
                }
            }
        }
    }

    fn list_rooms(&mut self, t: Token) {
        // Truncated to what fits in one frame of the max payload.
        let mut room_budget = self.config.max_payload as usize - 2;
        let rooms: Vec<(&str, u32)> = self
            .rooms
            .iter()
            .map(|r| (r.name.as_str(), r.members.len() as u32))
            .take_while(|(name, _)| fits(&mut room_budget, 2 + name.len() + 4))
            .collect();
        encode_into(&mut self.frame, &ServerMessage::RoomList(rooms));
        self.sessions.deliver(t, &self.frame);
    }

    fn list_users(&mut self, t: Token, room: &str) {
        if !valid_room(room) {
            return self.error(t, ErrorCode::BadRoom, code::LIST_USERS, "");
        }
        let Some(id) = self.rooms.find(room) else {
            return self.error(t, ErrorCode::NotInRoom, code::LIST_USERS, "no such room");
        };
        let r = self.rooms.get(id);
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + r.name.len());
        let slab = &self.sessions.slab;
        let nicks: Vec<&str> = r
            .members
            .iter()
            .map(|m| slab[m.0].nick.as_str())
            .take_while(|nick| fits(&mut budget, 2 + nick.len()))
            .collect();
        encode_into(
            &mut self.frame,
            &ServerMessage::UserList {
                room: &r.name,
                nicks,
            },
        );
        self.sessions.deliver(t, &self.frame);
    }

    fn send_stats(&mut self, t: Token, now: Instant) {
        let st = &self.stats;
        let stats = [
            (
                "uptime_ms",
                now.duration_since(self.started).as_millis() as u64,
            ),
            ("connections", self.sessions.slab.len() as u64),
            ("accepted", st.accepted),
            ("sessions", self.nicks.len() as u64),
            ("rooms", self.rooms.len() as u64),
            ("frames_in", st.frames_in),
            ("frames_out", self.sessions.frames_out),
            ("bytes_in", st.bytes_in),
            ("bytes_out", st.bytes_out),
            ("poll_wakeups", st.poll_wakeups),
            ("events", st.events),
            ("kicked_slow", self.sessions.kicked_slow),
            ("kicked_timeout", st.kicked_timeout),
            ("rejected_full", st.rejected_full),
            ("rate_limited", st.rate_limited),
            ("messages", st.messages),
        ];
        encode_into(&mut self.frame, &ServerMessage::StatsReply(stats.to_vec()));
        self.sessions.deliver(t, &self.frame);
    }

    // ----- helpers ------------------------------------------------------

    /// A reply to `t` alone.
    fn reply(&mut self, t: Token, msg: &ServerMessage<'_>) {
        encode_into(&mut self.frame, msg);
        self.sessions.deliver(t, &self.frame);
    }

    /// ERROR to `t`. A fatal error also marks the session for closing;
    /// a non-fatal one changes nothing else.
    fn error(&mut self, t: Token, error: ErrorCode, request: u16, detail: &str) {
        self.flush_cast();
        let detail = if detail.is_empty() {
            error.describe()
        } else {
            detail
        };
        if error.is_fatal() {
            self.sessions.cut(t, error, request, detail);
        } else {
            self.reply(t, &ServerMessage::error(error, request, detail));
        }
    }

    fn check_text(&self, text: &str) -> Result<(), ErrorCode> {
        if text.is_empty() {
            Err(ErrorCode::Malformed)
        } else if text.len() > self.config.max_text {
            Err(ErrorCode::TextTooLong)
        } else {
            Ok(())
        }
    }

    /// Index in `t`'s membership list of the room `room`, if `t` is in it.
    fn member_of(&self, t: Token, room: &str) -> Option<usize> {
        let id = self.rooms.find(room)?;
        self.sessions.slab[t.0].membership(id)
    }

    /// Sends the frame in `self.frame` (JOINED or LEFT) to the room, or
    /// only to `t` when the room is above the presence limit.
    fn cast_presence(&mut self, id: RoomId, t: Token) {
        let members = &self.rooms.get(id).members;
        if members.len() > self.config.presence_limit {
            self.sessions.deliver(t, &self.frame);
        } else {
            for &member in members {
                self.sessions.deliver(member, &self.frame);
            }
        }
    }

    /// `t` leaves the room at `index` of its membership list: LEFT to the
    /// room (the leaver included), then the member list shrinks by a
    /// swap-remove, fixing the slot of the member moved into the hole.
    fn part(&mut self, t: Token, index: usize, reason: &str) {
        let s = &self.sessions.slab[t.0];
        let m = s.rooms[index];
        let left = ServerMessage::Left {
            room: &self.rooms.get(m.room).name,
            nick: &s.nick,
            reason,
        };
        encode_into(&mut self.frame, &left);
        self.cast_presence(m.room, t);
        if let Some(moved) = self.rooms.leave(m.room, m.slot) {
            let other = &mut self.sessions.slab[moved.0];
            if let Some(mm) = other.rooms.iter_mut().find(|x| x.room == m.room) {
                mm.slot = m.slot;
            }
        }
        self.sessions.slab[t.0].rooms.swap_remove(index);
    }

    // ----- closing, timers, shutdown ------------------------------------

    /// Step two of closing, after the event batch: each marked session
    /// leaves its rooms (LEFT with the reason), gives up its nick, gets BYE
    /// if it quit, and waits in `Ending` for its output to drain and its
    /// peer to close.
    pub fn reap(&mut self, now: Instant) {
        while let Some(t) = self.sessions.closing.pop() {
            let s = &mut self.sessions.slab[t.0];
            let Some(reason) = s.closing.take() else {
                continue;
            };
            if matches!(reason, CloseReason::Fatal(_) | CloseReason::Broken) {
                // Its ERROR is already queued; nothing may follow it.
                s.muted = true;
            }
            debug!("{t:?} {} closing: {}", s.peer, reason.left_reason());
            while !self.sessions.slab[t.0].rooms.is_empty() {
                let last = self.sessions.slab[t.0].rooms.len() - 1;
                self.part(t, last, reason.left_reason());
            }
            let s = &mut self.sessions.slab[t.0];
            if s.phase == Phase::Chat {
                if let Some(key) = NameKey::new(&s.nick) {
                    self.nicks.remove(&key);
                }
            }
            let (linger, server_fin) = match reason {
                CloseReason::Quit(_) => {
                    s.out.push(&ServerMessage::Bye { reason: "goodbye" });
                    (QUIT_LINGER, false)
                }
                CloseReason::Fatal(_) => (CLOSE_LINGER, true),
                CloseReason::PeerClosed | CloseReason::Broken => (CLOSE_LINGER, false),
            };
            let deadline = now + linger;
            s.phase = Phase::Ending {
                deadline,
                server_fin,
            };
            s.muted = true;
            if s.broken || (s.peer_eof && s.out.pending() == 0) {
                self.sessions.finish(t);
            } else {
                self.sessions.queue_flush(t);
                self.arm(t, deadline);
            }
        }
    }

    /// Handles every timer entry due at `now`: login timeouts, heartbeat
    /// PINGs and PING_TIMEOUTs, lingering closes. An entry whose session
    /// has since been active is simply rescheduled.
    pub fn run_timers(&mut self, now: Instant) {
        while let Some((at, t, id)) = self.timers.pop_due(now) {
            match self.sessions.slab.get_mut(t.0) {
                Some(s) if s.id == id && s.timer_at == Some(at) => s.timer_at = None,
                _ => continue, // stale: superseded, or the session is gone
            }
            self.on_timer(t, now);
        }
    }

    fn on_timer(&mut self, t: Token, now: Instant) {
        let hb = self.config.heartbeat;
        let s = &mut self.sessions.slab[t.0];
        if s.closing.is_some() || s.finished {
            return;
        }
        if let Phase::Ending { deadline, .. } = s.phase {
            if now >= deadline {
                self.sessions.finish(t);
            } else {
                self.arm(t, deadline);
            }
            return;
        }
        if s.phase == Phase::Login && now >= s.accepted_at + self.config.login_timeout {
            self.stats.kicked_timeout += 1;
            return self.error(t, ErrorCode::LoginTimeout, 0, "");
        }
        let silent = now.saturating_duration_since(s.last_rx);
        if silent >= hb * 2 {
            self.stats.kicked_timeout += 1;
            return self.error(t, ErrorCode::PingTimeout, 0, "");
        }
        if silent >= hb && !s.pinged {
            s.pinged = true;
            let token = now.duration_since(self.started).as_millis() as u64;
            self.reply(t, &ServerMessage::Ping { token });
        } else {
            // Quiet since the last check: give idle buffers back.
            let s = &mut self.sessions.slab[t.0];
            s.out.release_if_empty();
            if s.inbuf.is_empty() {
                s.inbuf = Vec::new();
            }
        }
        let deadline = self.next_deadline(t);
        self.arm(t, deadline);
    }

    /// When `t` next needs looking at, if nothing arrives before then.
    fn next_deadline(&self, t: Token) -> Instant {
        let s = &self.sessions.slab[t.0];
        let hb = self.config.heartbeat;
        let beat = if s.pinged {
            s.last_rx + hb * 2
        } else {
            s.last_rx + hb
        };
        match s.phase {
            Phase::Login => beat.min(s.accepted_at + self.config.login_timeout),
            Phase::Ending { deadline, .. } => deadline,
            Phase::Chat => beat,
        }
    }

    /// Makes sure `t` has a timer entry no later than `at`.
    fn arm(&mut self, t: Token, at: Instant) {
        let s = &mut self.sessions.slab[t.0];
        if s.timer_at.is_none_or(|cur| at < cur) {
            s.timer_at = Some(at);
            self.timers.schedule(at, t, s.id);
        }
    }

    /// SIGINT/SIGTERM: tell every session the server is going away. From
    /// now on HELLO and JOIN get SHUTTING_DOWN; everything else is served
    /// until the clients close or the grace period ends.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        let grace_ms = self.config.grace.as_millis().min(u32::MAX as u128) as u32;
        encode_into(
            &mut self.frame,
            &ServerMessage::Shutdown {
                grace_ms,
                reason: "server shutting down",
            },
        );
        let tokens: Vec<Token> = self.sessions.slab.iter().map(|(k, _)| Token(k)).collect();
        for t in tokens {
            self.sessions.deliver(t, &self.frame);
        }
    }
}

/// Encodes `msg` into the reusable scratch buffer.
fn encode_into(frame: &mut Vec<u8>, msg: &ServerMessage<'_>) {
    frame.clear();
    msg.encode(frame);
}

/// Takes `need` bytes from `budget` if they fit.
fn fits(budget: &mut usize, need: usize) -> bool {
    match budget.checked_sub(need) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}
