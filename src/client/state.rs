//! The chat session's state, without any I/O.
//!
//! [`Chat`] takes typed commands and server messages and answers with frames
//! to send (queued in an [`OutBuf`]) and lines to show. The event loop in
//! [`super::session`] moves bytes; everything a user can observe is decided
//! here, so it is unit-tested directly.
//!
//! Version 2 (history and resume) lives here too. For each room the client
//! keeps a [`Track`]: the room's epoch and the newest seq shown. On joining
//! it asks for the last [`JOIN_HISTORY`] messages; after a reconnect it asks
//! for everything after the seq it last showed, so that every message is
//! shown exactly once, or the gap is said in one line. Live messages that
//! arrive while such a reply is still coming are held back and shown after
//! it, so the screen stays in seq order.
//!
//! The work is split by job over child modules, all on the one [`Chat`]:
//! - this file: registration, rooms, typed commands and the version-1/2
//!   server messages;
//! - `history`: the per-room [`Track`] and everything that asks for,
//!   matches and shows HISTORY replies (join, resume, `/history`);
//! - `v3`: the version-3 [`Identity`], its frames, the barrier after
//!   WELCOME and its timers (resends, token refresh).

mod history;
mod v3;

pub use history::Track;
pub use v3::{Identity, SYNC_TOKEN};

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::command::{Command, HELP};
use super::format::render;
use super::identity::{push_hello, Outbox, Secret};
use crate::codec::v3::VERSION_3;
use crate::codec::{code, ClientMessage, ErrorCode, ServerMessage};
use crate::codec::{VERSION_1, VERSION_2};
use crate::net::OutBuf;

/// Messages shown on joining a room (HISTORY with epoch 0).
pub const JOIN_HISTORY: u16 = 20;
/// Slack on top of twice the heartbeat before giving up waiting for the
/// server to free a nick held by our own dead connection.
const NICK_HELD_SLACK: Duration = Duration::from_secs(10);

/// Where registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// HELLO sent, no answer yet: typed lines wait.
    Pending,
    /// HELLO refused (e.g. the nick is taken): `/nick` tries again.
    Refused,
    /// WELCOME received.
    Done,
}

/// What the loop should do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Pause reading input for this long (`/sleep`).
    Sleep(Duration),
    /// QUIT was sent: keep reading until BYE (or a timeout), then close.
    Quitting,
    /// Close the connection and exit with this status.
    Exit(i32),
    /// Close this connection and open a new one, at once or after a backoff.
    Reconnect(Retry),
}

/// When to connect again after [`Flow::Reconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// At once (HELLO version 2 was refused: say HELLO 1 instead).
    Now,
    /// After the usual backoff (the server is going away, or our nick is
    /// still held).
    Backoff,
}

/// The session as the user sees it.
#[derive(Debug)]
pub struct Chat {
    /// Our nick (the requested one until WELCOME, then the server's).
    pub nick: String,
    /// Registration state.
    pub registration: Registration,
    /// Rooms we are in, in the order joined, spelled as the server did.
    pub rooms: Vec<String>,
    /// Where plain text goes.
    pub current: Option<String>,
    /// Rooms given with `--join`, joined once WELCOME arrives.
    pub auto_join: Vec<String>,
    /// JOINs sent and not yet answered, each with the room that was current
    /// before it (restored if the JOIN is refused) and whether it is a
    /// rejoin after a reconnect. The server answers each JOIN in order with
    /// JOINED or ERROR, so a queue matches them up.
    pending_joins: VecDeque<(String, Option<String>, bool)>,
    /// Set after a fatal ERROR: the server is about to close.
    pub fatal: bool,
    /// How long HELLO is retried while the server answers UNAVAILABLE or
    /// SHUTTING_DOWN (`None`: for ever).
    pub unavailable_retry: Option<Duration>,
    /// When the current run of such refusals began.
    unavailable_since: Option<Instant>,
    /// The version HELLO asks for: 2, or 1 once a server refused 2.
    pub version: u8,
    /// The version the server confirmed in WELCOME.
    pub spoken: u8,
    /// The server's heartbeat (from WELCOME).
    pub heartbeat: Duration,
    /// Whether a WELCOME was ever received: from then on, a lost
    /// connection is reconnected and the rooms are rejoined.
    pub registered_once: bool,
    /// Between a reconnect and its WELCOME.
    reconnecting: bool,
    /// Whether our nick, refused after a reconnect, is taken to be held by
    /// our own dead connection.
    nick_held: NickHeld,
    /// Resume bookkeeping per room, by lower-cased name.
    tracks: HashMap<String, Track>,
    /// Version 3 (a token was given): who we are and what waits.
    pub identity: Option<Identity>,
}

/// Said when a moderation command is typed in a session below version 3.
pub const MODERATION_NEEDS_V3: &str = "! moderation needs a token sign-in (version 3)";

/// NICK_IN_USE after a reconnect most likely means the server has not yet
/// noticed that our previous connection is gone (a silent drop): its
/// heartbeat frees the nick within two heartbeats. Past that, someone else
/// has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NickHeld {
    /// Not refused since the last WELCOME.
    No,
    /// Refused; retrying until this deadline.
    Until(Instant),
    /// The deadline passed: the user picks another nick.
    GaveUp,
}

/// The default of `--unavailable-retry-s`.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(300);

/// Errors that say "not now" rather than "no".
fn transient(e: ErrorCode) -> bool {
    matches!(e, ErrorCode::ShuttingDown | ErrorCode::Unavailable)
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn key(room: &str) -> String {
    room.to_ascii_lowercase()
}

impl Chat {
    /// A session about to say HELLO as `nick`, joining `auto_join` after.
    pub fn new(nick: &str, auto_join: Vec<String>) -> Chat {
        Chat {
            nick: nick.to_string(),
            registration: Registration::Pending,
            rooms: Vec::new(),
            current: None,
            auto_join,
            pending_joins: VecDeque::new(),
            fatal: false,
            unavailable_retry: Some(UNAVAILABLE_RETRY),
            unavailable_since: None,
            version: VERSION_2,
            spoken: VERSION_1,
            heartbeat: Duration::from_secs(30),
            registered_once: false,
            reconnecting: false,
            nick_held: NickHeld::No,
            tracks: HashMap::new(),
            identity: None,
        }
    }

    /// Speaks version 3 with `token`; `from_file` when it can be read
    /// again for REFRESH.
    pub fn with_token(mut self, token: Secret, from_file: bool) -> Chat {
        self.version = VERSION_3;
        self.identity = Some(Identity {
            token,
            session_key: Secret::default(),
            account: String::new(),
            role: 0,
            token_exp_ms: 0,
            outbox: Outbox::default(),
            refresh_at: None,
            from_file,
            warned_stale: false,
            syncing: false,
            synced: Vec::new(),
        });
        self
    }

    /// The HELLO frame to open with.
    pub fn hello(&self, out: &mut OutBuf) {
        if let Some(id) = &self.identity {
            push_hello(out, &self.nick, &id.token, &id.session_key);
            return;
        }
        out.push_client(&ClientMessage::Hello {
            version: self.version,
            nick: &self.nick,
        });
    }

    /// Whether typed lines may be acted on now (not while HELLO is
    /// unanswered: a script's first lines would otherwise race it).
    pub fn ready_for_input(&self) -> bool {
        self.registration != Registration::Pending
            && !self.identity.as_ref().is_some_and(|id| id.syncing)
    }

    /// What the client knows of `room` (for tests and the session).
    pub fn track(&self, room: &str) -> Option<&Track> {
        self.tracks.get(&key(room))
    }

    /// The connection is gone and a new one is about to say HELLO. Rooms
    /// are kept to be rejoined; what was in flight on the old connection
    /// is forgotten. Live lines held back for an unfinished history reply
    /// are dropped unshown: the resume asks for everything after the last
    /// seq shown, so they come back, once.
    pub fn connection_lost(&mut self) {
        self.registration = Registration::Pending;
        self.fatal = false;
        self.reconnecting = self.registered_once;
        for (room, _, rejoin) in self.pending_joins.drain(..) {
            if !rejoin && !self.rooms.iter().any(|r| same(r, &room)) {
                self.auto_join.push(room);
            }
        }
        for t in self.tracks.values_mut() {
            t.requests.clear();
            t.held.clear();
            t.missed = 0;
        }
        if let Some(id) = &mut self.identity {
            // Unanswered SAYs stay: they go again after the rejoins.
            id.syncing = false;
            id.synced.clear();
            id.refresh_at = None;
        }
    }

    fn join(&mut self, room: String, out: &mut OutBuf) {
        out.push_client(&ClientMessage::Join { room: &room });
        let before = self.current.replace(room.clone());
        self.pending_joins.push_back((room, before, false));
    }

    /// Acts on one typed command.
    pub fn command(&mut self, cmd: Command<'_>, out: &mut OutBuf, show: &mut Vec<String>) -> Flow {
        let registered = self.registration == Registration::Done;
        match cmd {
            Command::Empty => {}
            Command::Help => show.extend(HELP.iter().map(|s| s.to_string())),
            Command::Sleep(d) => return Flow::Sleep(d),
            Command::Quit(reason) => {
                out.push_client(&ClientMessage::Quit { reason });
                return Flow::Quitting;
            }
            Command::Nick(nick) if !registered => {
                self.nick = nick.to_string();
                self.registration = Registration::Pending;
                self.hello(out);
            }
            _ if !registered => {
                show.push("! you are not registered yet: pick a nick with /nick NAME".into());
            }
            Command::Say(text) => match (&self.current, &mut self.identity) {
                (Some(room), Some(id)) => {
                    if id.outbox.say(room, text, out).is_none() {
                        show.push(format!(
                            "! not sent: {} messages still wait for the server's answer",
                            id.outbox.len()
                        ));
                    }
                }
                (Some(room), None) => out.push_client(&ClientMessage::Say { room, text }),
                (None, _) => show.push("! you are not in a room: /join #room first".into()),
            },
            Command::Join(room) => self.join(room, out),
            Command::Leave(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => out.push_client(&ClientMessage::Leave { room: &room }),
                None => show.push("! you are not in a room".into()),
            },
            Command::Switch(room) => match self.rooms.iter().find(|r| same(r, &room)) {
                Some(r) => {
                    self.current = Some(r.clone());
                    show.push(format!("* now talking in {r}"));
                }
                None => show.push(format!("! you are not in {room}: /join it first")),
            },
            Command::Msg { nick, text } => {
                out.push_client(&ClientMessage::Whisper { nick, text });
                show.push(format!("<- (whisper to {nick}) {text}"));
            }
            Command::Nick(nick) => out.push_client(&ClientMessage::Nick { nick }),
            Command::Rooms => out.push_client(&ClientMessage::ListRooms),
            Command::Who(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => out.push_client(&ClientMessage::ListUsers { room: &room }),
                None => show.push("! which room? /who #room".into()),
            },
            Command::Stats => out.push_client(&ClientMessage::Stats),
            Command::History(n) => self.older(n, out, show),
            Command::Topic { .. }
            | Command::Mode { .. }
            | Command::Op { .. }
            | Command::Kick { .. }
            | Command::Ban { .. }
            | Command::Unban { .. }
            | Command::Bans(_)
            | Command::Invite { .. }
            | Command::Kill { .. } => self.moderate(&cmd, out, show),
        }
        Flow::Continue
    }

    /// A moderation command: its request, when the session speaks version
    /// 3 (older versions have no such requests). Nothing is echoed: the
    /// server's answer (ROOM_INFO, MODERATION, BAN_LIST or an ERROR) is
    /// what shows, so the screen never claims what the server refused.
    fn moderate(&self, cmd: &Command<'_>, out: &mut OutBuf, show: &mut Vec<String>) {
        if self.spoken != VERSION_3 {
            show.push(MODERATION_NEEDS_V3.into());
            return;
        }
        if let Some(req) = cmd.moderation() {
            crate::client::identity::push_v3(out, &req);
        }
    }

    /// Acts on one message from the server.
    pub fn server(
        &mut self,
        msg: &ServerMessage<'_>,
        out: &mut OutBuf,
        show: &mut Vec<String>,
    ) -> Flow {
        match *msg {
            ServerMessage::Message { room, seq, .. } => {
                self.live(room, seq, render(msg, &self.nick), show);
                return Flow::Continue;
            }
            ServerMessage::HistoryMessage { room, seq, .. } => {
                self.history_message(room, seq, render(msg, &self.nick), show);
                return Flow::Continue;
            }
            ServerMessage::RoomState {
                room,
                epoch,
                last_seq,
                first_held,
            } => {
                self.room_state(room, epoch, last_seq, first_held, out, show);
                return Flow::Continue;
            }
            ServerMessage::HistoryEnd {
                room,
                epoch,
                newest,
                status,
            } => {
                self.history_end(room, epoch, newest, status, out, show);
                return Flow::Continue;
            }
            ServerMessage::Error { error, request, .. } if request == code::HELLO => {
                if let Some(flow) = self.hello_refused(error, show) {
                    return flow;
                }
            }
            _ => {}
        }
        if let ServerMessage::Pong { token: SYNC_TOKEN } = *msg {
            if self.identity.as_ref().is_some_and(|id| id.syncing) {
                self.finish_sync(out, show);
            }
            return Flow::Continue;
        }
        // Render before updating state, so our own nick change reads "you".
        show.extend(render(msg, &self.nick));
        match *msg {
            ServerMessage::Ping { token } => out.push_client(&ClientMessage::Pong { token }),
            ServerMessage::Welcome {
                version,
                nick,
                heartbeat_ms,
                ..
            } => {
                self.welcome(version, nick, heartbeat_ms, show);
                self.rejoin(out, show);
            }
            ServerMessage::Joined { room, nick } if same(nick, &self.nick) => {
                let rejoin = match self.pending_joins.iter().position(|(r, ..)| same(r, room)) {
                    Some(i) => self.pending_joins.remove(i).is_some_and(|(_, _, r)| r),
                    None => false,
                };
                let known = self.rooms.iter().any(|r| same(r, room));
                if let Some(id) = self.identity.as_mut().filter(|id| id.syncing) {
                    // The server put the session back in a room of ours
                    // (takeover, or another session of the account).
                    id.synced.push(room.to_string());
                }
                if !known {
                    self.rooms.push(room.to_string());
                }
                if !rejoin && !known {
                    // A fresh join: whatever was known of an earlier stay
                    // in the room no longer applies.
                    self.tracks.insert(key(room), Track::default());
                }
                // The server's spelling wins for the current room's name.
                if self.current.as_deref().is_some_and(|c| same(c, room)) {
                    self.current = Some(room.to_string());
                }
            }
            ServerMessage::Left { room, nick, .. } if same(nick, &self.nick) => {
                self.rooms.retain(|r| !same(r, room));
                self.tracks.remove(&key(room));
                if self.current.as_deref().is_some_and(|c| same(c, room)) {
                    self.current = self.rooms.last().cloned();
                    if let Some(c) = &self.current {
                        show.push(format!("* now talking in {c}"));
                    }
                }
            }
            ServerMessage::NickChanged { old, new } if same(old, &self.nick) => {
                self.nick = new.to_string();
            }
            ServerMessage::Error { error, request, .. } => {
                if request == code::HELLO && self.registration == Registration::Pending {
                    self.registration = Registration::Refused;
                    show.push("! pick another nick with /nick NAME".into());
                }
                if request == code::JOIN {
                    if let Some(flow) = self.join_refused(error) {
                        return flow;
                    }
                }
                if ErrorCode::from_u16(error).is_some_and(|e| e.is_fatal()) {
                    self.fatal = true;
                }
            }
            // A restart usually follows: close at once (the server need not
            // wait out its grace for us) and come back.
            ServerMessage::Shutdown { .. } => return Flow::Reconnect(Retry::Backoff),
            ServerMessage::Bye { .. } => return Flow::Exit(0),
            _ => {}
        }
        Flow::Continue
    }

    /// A refused HELLO that the client handles by itself; `None` leaves it
    /// to the general path (shown, then "pick another nick").
    fn hello_refused(&mut self, error: u16, show: &mut Vec<String>) -> Option<Flow> {
        let error = ErrorCode::from_u16(error)?;
        if self.identity.is_some() {
            if let Some(flow) = self.hello_refused_v3(error, show) {
                return Some(flow);
            }
        }
        if error == ErrorCode::BadVersion && self.version > VERSION_1 {
            // A version-1 server: say HELLO 1 on a new connection (BAD_VERSION
            // is fatal, the server closes this one).
            self.version = VERSION_1;
            return Some(Flow::Reconnect(Retry::Now));
        }
        if transient(error) {
            // The server is draining, or its store is unreachable: come
            // back later rather than ask for another nick, but not for
            // ever, and say so once rather than at every attempt.
            let now = Instant::now();
            let since = *self.unavailable_since.get_or_insert(now);
            if let Some(limit) = self.unavailable_retry {
                if now.duration_since(since) >= limit {
                    show.push(format!(
                        "! the server could not register us for {} s: giving up \
                         (--unavailable-retry-s)",
                        limit.as_secs()
                    ));
                    return Some(Flow::Exit(1));
                }
            }
            if since == now {
                show.push(format!(
                    "{}; retrying with backoff",
                    super::format::error_line(error as u16, code::HELLO, "")
                ));
            }
            return Some(Flow::Reconnect(Retry::Backoff));
        }
        if error != ErrorCode::NickInUse || !self.reconnecting {
            return None;
        }
        let now = Instant::now();
        let window = 2 * self.heartbeat + NICK_HELD_SLACK;
        match self.nick_held {
            NickHeld::No => {
                self.nick_held = NickHeld::Until(now + window);
                show.push(format!(
                    "! {} is still held by your previous connection (the server has not \
                     noticed it is gone); retrying until its heartbeat frees the nick",
                    self.nick
                ));
                Some(Flow::Reconnect(Retry::Backoff))
            }
            NickHeld::Until(t) if now < t => Some(Flow::Reconnect(Retry::Backoff)),
            NickHeld::Until(_) => {
                self.nick_held = NickHeld::GaveUp;
                show.push(format!(
                    "! {} is still taken after {} s: someone else has it",
                    self.nick,
                    window.as_secs()
                ));
                // Then "pick another nick with /nick NAME"; the rooms are
                // rejoined after the WELCOME that follows.
                None
            }
            NickHeld::GaveUp => None,
        }
    }

    fn welcome(&mut self, version: u8, nick: &str, heartbeat_ms: u32, show: &mut Vec<String>) {
        self.nick = nick.to_string();
        self.unavailable_since = None;
        self.registration = Registration::Done;
        self.spoken = version;
        self.heartbeat = Duration::from_millis(u64::from(heartbeat_ms.max(1)));
        self.nick_held = NickHeld::No;
        self.registered_once = true;
        if self.reconnecting && version < VERSION_2 && !self.rooms.is_empty() {
            show.push(
                "! this server keeps no history (protocol version 1): what was said \
                 while you were away is lost"
                    .into(),
            );
        }
    }

    /// After WELCOME: JOIN the rooms we were in (after a reconnect), then
    /// the `--join` ones.
    /// Rooms in `synced` are already back (the server said JOINED).
    fn rejoin(&mut self, out: &mut OutBuf, synced: &[String]) {
        if std::mem::take(&mut self.reconnecting) {
            for room in self.rooms.clone() {
                if synced.iter().any(|r| same(r, &room)) {
                    continue;
                }
                out.push_client(&ClientMessage::Join { room: &room });
                self.pending_joins
                    .push_back((room, self.current.clone(), true));
            }
        }
        for room in std::mem::take(&mut self.auto_join) {
            if let Some(r) = synced.iter().find(|r| same(r, &room)) {
                self.current = Some(r.clone());
                continue;
            }
            self.join(room, out);
        }
    }

    /// A refused JOIN. A rejoin refused for a passing reason (draining,
    /// store unreachable) keeps the room and reconnects later, so that it
    /// is still resumed from where it was.
    fn join_refused(&mut self, error: u16) -> Option<Flow> {
        let (room, before, rejoin) = self.pending_joins.pop_front()?;
        if rejoin && ErrorCode::from_u16(error).is_some_and(transient) {
            self.pending_joins.push_front((room, before, rejoin));
            return Some(Flow::Reconnect(Retry::Backoff));
        }
        if rejoin {
            // The room could not be rejoined (e.g. a lower room limit):
            // we are no longer in it.
            self.rooms.retain(|r| !same(r, &room));
            self.tracks.remove(&key(&room));
            if self.current.as_deref().is_some_and(|c| same(c, &room)) {
                self.current = self.rooms.last().cloned();
            }
        } else if self.current.as_deref().is_some_and(|c| same(c, &room)) {
            // Already-in-room leaves us in it: keep talking there.
            if !self.rooms.iter().any(|r| same(r, &room)) {
                self.current = before;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
