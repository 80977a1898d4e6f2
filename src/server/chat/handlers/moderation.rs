//! Moderation (protocol version 3): TOPIC, MODE, OP, KICK, INVITE, BAN,
//! UNBAN, LIST_BANS and KILL; the checks other paths ask of it (JOIN's
//! bans and modes, SAY in a moderated room, HELLO against server-wide
//! bans); ROOM_INFO; the room states' and bans' timers and the state file.
//!
//! The chat owns one [`Moderation`]: the rooms' states (apart from the
//! rooms' incarnations, keyed by the case-folded name), the server-wide
//! bans, and the `--state-file` writer. Who a session is (account,
//! administrator, token `ops`) is asked of `chat/who.rs` only.
//!
//! In a cluster (`--redis`) the checks are the same, against the node's
//! replica of the store's state; each change then goes to the store and
//! comes back as an event every node applies (`chat/cluster/moderation.rs`):
//! the branches below hand the request over once it is checked.

use crate::server::sessions::registry::Sessions;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::Token;

use crate::codec::v3::{action, BanEntry, ClientV3, ServerV3};
use crate::codec::{valid_room, ErrorCode, NameKey};
use crate::server::moderation::bans::{Ban, BanSet, MAX_REASON, MAX_SERVER_BANS};
use crate::server::moderation::masks::Mask;
use crate::server::moderation::room_state::{Invitee, Modes, RoomStates, StateError};
use crate::server::moderation::state_file::{Loaded, StateWriter, Step, StepBudget};

use super::super::history::now_ms;
use super::super::rooms::RoomId;
use super::super::Chat;

/// The room name that stands for the whole server (BAN, UNBAN, LIST_BANS).
const SERVER_WIDE: &str = "*";

/// Actions counted for `/metrics`, in this order.
const KINDS: [&str; 9] = [
    "topic", "mode", "kick", "ban", "unban", "op", "deop", "invite", "kill",
];

/// The chat's moderation state.
#[derive(Debug)]
pub struct Moderation {
    /// Every room's state, apart from its incarnations.
    pub(in crate::server) rooms: RoomStates,
    /// Bans of room `*`.
    pub(in crate::server) server_bans: BanSet,
    /// `--state-file`'s writer (standalone daemons given the option).
    writer: Option<StateWriter>,
    /// Actions done, by kind (`KINDS`' order).
    counts: [u64; KINDS.len()],
    /// Test-only stand-in for identity (see [`FakeWho`]).
    #[cfg(test)]
    pub(in crate::server) fake: FakeWho,
}

/// Who sessions are, for the chat-level tests, before identity is wired:
/// consulted before `chat/who.rs` (which answers "guest" until then).
#[cfg(test)]
#[derive(Debug, Default)]
pub(in crate::server) struct FakeWho {
    pub accounts: std::collections::HashMap<Token, String>,
    pub admins: std::collections::HashSet<Token>,
    pub ops: std::collections::HashMap<Token, String>,
}

impl Moderation {
    /// Empty state; a writer when `--state-file` is given.
    pub fn new(ttl: Duration, state_file: Option<&std::path::Path>) -> Moderation {
        Moderation {
            rooms: RoomStates::new(ttl.as_millis() as u64),
            server_bans: BanSet::new(MAX_SERVER_BANS),
            writer: state_file.map(StateWriter::new),
            counts: [0; KINDS.len()],
            #[cfg(test)]
            fake: FakeWho::default(),
        }
    }

    /// A room's state changed: the state file's rooms are written again.
    fn changed(&mut self) {
        if let Some(w) = &mut self.writer {
            w.mark_rooms_dirty();
        }
    }

    /// The server-wide bans changed: their file is written again (and
    /// only it: up to 200,000 bans are not rewritten for a room's change).
    fn changed_server_bans(&mut self) {
        if let Some(w) = &mut self.writer {
            w.mark_server_bans_dirty();
        }
    }

    fn count(&mut self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.counts[i] += 1;
        }
    }

    /// Bans held in rooms together (a walk of the rooms' states: for a
    /// scrape, not for a request).
    fn room_bans(&self) -> usize {
        self.rooms.iter().map(|(_, s)| s.bans.len()).sum()
    }
}

/// A request's reason cut to [`MAX_REASON`] bytes (at a character
/// boundary): "kicked by ACTOR: REASON" in a LEFT, with the room and the
/// nick, must still fit in a frame of the maximum payload.
fn cut_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// "VERB by ACTOR: REASON", or "VERB by ACTOR" for an empty reason.
fn by_reason(verb: &str, actor: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("{verb} by {actor}")
    } else {
        format!("{verb} by {actor}: {reason}")
    }
}

/// An address as bans see it: an IPv4 client reaching an IPv6 socket is
/// its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The scope a room request acts on.
struct Scope {
    /// The room as named by its incarnation (or the request).
    name: String,
    /// The room's key (`None` for room `*`).
    key: Option<NameKey>,
    /// The live incarnation, if any.
    id: Option<RoomId>,
}

impl Scope {
    fn server() -> Scope {
        Scope {
            name: SERVER_WIDE.into(),
            key: None,
            id: None,
        }
    }

    /// The room's key; room `*` has none and never reaches a room path.
    fn room(&self) -> NameKey {
        self.key.expect("a room scope")
    }
}

impl Chat {
    /// Makes `loaded` (the state file read at start) the chat's state.
    pub fn restore_moderation(&mut self, loaded: Loaded) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        self.moderation.rooms = loaded.rooms;
        self.moderation.rooms.set_ttl(ttl);
        self.moderation.server_bans = loaded.server_bans;
    }

    /// `/metrics`' moderation series: actions by kind (counters) and the
    /// bans held (gauges).
    pub fn moderation_stats(&self) -> Vec<(&'static str, u64)> {
        const NAMES: [&str; 9] = [
            "moderation_topic",
            "moderation_mode",
            "moderation_kick",
            "moderation_ban",
            "moderation_unban",
            "moderation_op",
            "moderation_deop",
            "moderation_invite",
            "moderation_kill",
        ];
        let m = &self.moderation;
        let mut list: Vec<(&'static str, u64)> = NAMES.into_iter().zip(m.counts).collect();
        list.push(("bans_room", m.room_bans() as u64));
        list.push(("bans_server", m.server_bans.len() as u64));
        list.push(("room_states", m.rooms.len() as u64));
        list
    }

    // ----- who (through chat/who.rs; a fake in the chat's unit tests) ----

    fn who_account(&self, t: Token) -> Option<String> {
        #[cfg(test)]
        if let Some(a) = self.moderation.fake.accounts.get(&t) {
            return Some(a.clone());
        }
        self.account_of(t).map(str::to_owned)
    }

    fn who_admin(&self, t: Token) -> bool {
        #[cfg(test)]
        if self.moderation.fake.admins.contains(&t) {
            return true;
        }
        self.is_admin(t)
    }

    fn who_token_ops(&self, t: Token, room: &str) -> bool {
        #[cfg(test)]
        if let Some(p) = self.moderation.fake.ops.get(&t) {
            let p = p.to_ascii_lowercase();
            if crate::server::moderation::masks::glob_match(p.as_bytes(), room.as_bytes(), true) {
                return true;
            }
        }
        self.token_ops(t, room)
    }

    fn ip_of(&self, sessions: &Sessions, t: Token) -> IpAddr {
        canonical(sessions.at(t).peer().ip())
    }

    /// Whether `t` is an operator of the room `name`: an account that is
    /// an administrator, whose token's `ops` match the room, or that holds
    /// a grant in its state. Guests never are.
    pub(in crate::server) fn is_room_operator(&self, t: Token, name: &str) -> bool {
        let Some(account) = self.who_account(t) else {
            return false;
        };
        if self.who_admin(t) || self.who_token_ops(t, name) {
            return true;
        }
        NameKey::new(name)
            .and_then(|k| self.moderation.rooms.get(&k))
            .is_some_and(|s| s.ops.contains(&account))
    }

    // ----- what other paths ask -------------------------------------------

    /// SAY in a moderated room needs operator rights (NOT_ALLOWED).
    /// One bool on the SAY path: the room's `moderated` flag.
    pub(in crate::server) fn may_say(&self, t: Token, room: RoomId) -> Result<(), ErrorCode> {
        let r = self.rooms.get(room);
        if r.moderated && !self.is_room_operator(t, &r.name) {
            return Err(ErrorCode::NotAllowed);
        }
        Ok(())
    }

    /// Sets room `id`'s `moderated` flag from its state (a room created,
    /// its modes changed, its state dropped).
    pub(in crate::server) fn sync_moderated(&mut self, id: RoomId) {
        let moderated = NameKey::new(&self.rooms.get(id).name)
            .and_then(|k| self.moderation.rooms.get(&k))
            .is_some_and(|s| s.modes.has(Modes::MODERATED));
        self.rooms.get_mut(id).moderated = moderated;
    }

    /// HELLO against the server-wide bans: the detail of a fatal BANNED if
    /// one matches (`account`: the verified token's, `None` for a guest;
    /// `nick_shown`: the nick as others would see it).
    pub(in crate::server) fn hello_banned(
        &self,
        sessions: &Sessions,
        t: Token,
        account: Option<&str>,
        nick_shown: &str,
    ) -> Option<String> {
        if self.moderation.server_bans.is_empty() {
            return None;
        }
        let ban =
            self.moderation
                .server_bans
                .matching(account, nick_shown, self.ip_of(sessions, t))?;
        Some(by_reason("banned", &ban.by, &ban.reason))
    }

    /// JOIN's moderation checks (before the room is joined): a room ban
    /// (BANNED), accounts only (NOT_ALLOWED for a guest), invite-only
    /// (INVITE_ONLY without an invitation or operator rights; an
    /// invitation is spent by the JOIN it lets in).
    pub(in crate::server) fn may_join(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        room: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(key) = NameKey::new(room) else {
            return Ok(());
        };
        let Some(state) = self.moderation.rooms.get(&key) else {
            return Ok(());
        };
        let account = self.who_account(t);
        let nick = self.members.at(t).nick().to_owned();
        if let Some(ban) = state
            .bans
            .matching(account.as_deref(), &nick, self.ip_of(sessions, t))
        {
            return Err((ErrorCode::Banned, by_reason("banned", &ban.by, &ban.reason)));
        }
        if state.modes.has(Modes::ACCOUNTS_ONLY) && account.is_none() {
            return Err((
                ErrorCode::NotAllowed,
                "this room takes accounts only".into(),
            ));
        }
        if state.modes.has(Modes::INVITE_ONLY) && !self.is_room_operator(t, room) {
            let state = self.moderation.rooms.entry(key);
            if !state.take_invitation(account.as_deref(), &nick) {
                return Err((ErrorCode::InviteOnly, String::new()));
            }
            self.moderation.changed();
            if self.cluster.is_some() {
                let who = match account {
                    Some(a) => Invitee::Account(a),
                    None => Invitee::guest(&nick),
                };
                self.cluster_invitation_spent(key.as_str(), &who);
            }
        }
        Ok(())
    }

    /// `t` joined room `id` (standalone): the room's state is kept while
    /// it has members; the account whose JOIN made a room with no state
    /// live is granted OP; a version-3 session then gets ROOM_INFO.
    pub(in crate::server) fn room_state_joined(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
    ) {
        let r = self.rooms.get(id);
        // Only the JOIN that makes a room live has anything to do here
        // (then ROOM_INFO): the common JOIN costs a length check.
        let first = (r.members.len() == 1)
            .then(|| NameKey::new(&r.name))
            .flatten();
        if let Some(key) = first {
            self.moderation.rooms.room_occupied(&key);
            let account = self
                .who_account(t)
                .filter(|_| self.moderation.rooms.has_no_state(&key));
            if let Some(account) = account {
                if let Ok(true) = self.moderation.rooms.entry(key).grant(&account) {
                    let name = &self.rooms.get(id).name;
                    info!(
                        target: "muxchat::moderation",
                        action = "op", actor = "", account = account.as_str(),
                        target = account.as_str(), room = name.as_str();
                        "{account} created {name}: granted OP"
                    );
                    self.moderation.changed();
                }
            }
        }
        self.room_info_to(sessions, t, id);
    }

    /// ROOM_INFO of room `id` to `t`, if `t` speaks version 3.
    pub(in crate::server) fn room_info_to(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        id: RoomId,
    ) {
        if self.members.at(t).version() < crate::codec::v3::VERSION_3 {
            return;
        }
        self.encode_room_info(&self.rooms.get(id).name.clone());
        sessions.reply(t, &self.frame);
    }

    /// ROOM_INFO of `name` into `self.frame`.
    fn encode_room_info(&mut self, name: &str) {
        let key = NameKey::new(name);
        let state = key.as_ref().and_then(|k| self.moderation.rooms.get(k));
        let (topic, by, time, modes) = match state {
            Some(s) => (
                s.topic.as_str(),
                s.topic_by.as_str(),
                s.topic_time_ms,
                s.modes.bits(),
            ),
            None => ("", "", 0, 0),
        };
        self.frame.clear();
        ServerV3::RoomInfo {
            room: name,
            topic,
            topic_by: by,
            topic_time_ms: time,
            modes,
        }
        .encode(&mut self.frame);
    }

    /// The last member left room `id`: its state's TTL starts.
    pub(in crate::server) fn room_state_emptied(&mut self, id: RoomId) {
        if let Some(key) = NameKey::new(&self.rooms.get(id).name) {
            let had = self.moderation.rooms.get(&key).is_some();
            self.moderation.rooms.room_emptied(&key, now_ms());
            if had {
                self.moderation.changed();
            }
        }
    }

    // ----- timers and the state file ---------------------------------------

    /// When the moderation timers next have work: a room state's drop, a
    /// ban's end, the state file's next write step.
    pub(in crate::server) fn moderation_deadline(&self) -> Option<Instant> {
        if self.moderation_load_due() {
            return Some(Instant::now());
        }
        let m = &self.moderation;
        let now = now_ms();
        let at = [
            m.rooms.next_deadline(),
            m.server_bans.next_expiry(),
            m.writer.as_ref().and_then(|w| w.next_write_at(now)),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now)));
        // A cluster replica's load that failed is tried again then.
        let retry = self.moderation_retry_at();
        at.into_iter().chain(retry).min()
    }

    /// The timers' stage: drops room states whose TTL ran out, lifts the
    /// bans that ended, and takes one bounded step of a state-file write.
    pub(in crate::server) fn moderation_timers(&mut self) {
        if self.cluster.is_some() {
            self.moderation_cluster_tick();
        }
        let now = now_ms();
        let m = &mut self.moderation;
        if m.rooms.next_deadline().is_some_and(|at| at <= now) {
            let (dropped, ended) = m.rooms.expire(now);
            for room in &dropped {
                info!(target: "muxchat::moderation", room = room.as_str(); "state of {} dropped", room.as_str());
            }
            for e in &ended {
                info!(
                    target: "muxchat::moderation",
                    action = "unban", room = e.room.as_str(), target = e.ban.mask.to_string().as_str();
                    "ban of {} in {} ended", e.ban.mask, e.room.as_str()
                );
            }
            if !dropped.is_empty() || !ended.is_empty() {
                m.changed();
            }
            // A dropped state's room is empty, but may linger and revive.
            for room in &dropped {
                if let Some(id) = self.rooms.find(room.as_str()) {
                    self.sync_moderated(id);
                }
            }
        }
        let m = &mut self.moderation;
        if m.server_bans.next_expiry().is_some_and(|at| at <= now) {
            let ended = m.server_bans.expire(now);
            for ban in &ended {
                info!(
                    target: "muxchat::moderation",
                    action = "unban", room = "*", target = ban.mask.to_string().as_str();
                    "server-wide ban of {} ended", ban.mask
                );
            }
            if !ended.is_empty() {
                m.changed_server_bans();
            }
        }
        let Some(w) = &mut m.writer else { return };
        if w.next_write_at(now).is_none_or(|at| at > now) {
            return;
        }
        let part = w.writing();
        match w.step(now, &m.rooms, &m.server_bans, StepBudget::default()) {
            Ok(Step::Written(n)) => {
                let file = part.map_or(w.path(), |p| w.path_of(p));
                log::debug!("state file {} written ({n} bytes)", file.display())
            }
            Ok(_) => {}
            Err(e) => warn!(
                "state file {}: cannot write it ({e}); trying again in a second",
                w.path().display()
            ),
        }
    }

    /// Shutdown: writes what has changed, at once.
    pub fn flush_state(&mut self) {
        let m = &mut self.moderation;
        let Some(w) = &mut m.writer else { return };
        if let Err(e) = w.flush_all(now_ms(), &m.rooms, &m.server_bans) {
            warn!("state file {}: cannot write it ({e})", w.path().display());
        }
    }

    /// `--room-state-ttl-ms` after a SIGHUP.
    pub(in crate::server) fn moderation_reconfigure(&mut self) {
        let ttl = self.config.room_state_ttl.as_millis() as u64;
        self.moderation.rooms.set_ttl(ttl);
    }

    // ----- the requests --------------------------------------------------------

    /// A moderation request (codes 114-122) from a version-3 session.
    pub(in crate::server) fn moderation(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        payload: &[u8],
    ) {
        let Ok(msg) = ClientV3::decode(code, payload) else {
            return self.error(sessions, t, ErrorCode::Malformed, code, "");
        };
        match msg {
            ClientV3::Topic { room, topic } => self.set_topic(sessions, t, code, room, topic),
            ClientV3::Mode { room, set, clear } => {
                self.set_modes(sessions, t, code, room, set, clear)
            }
            ClientV3::Op { room, nick, grant } => self.op(sessions, t, code, room, nick, grant),
            ClientV3::Kick { room, nick, reason } => {
                self.kick(sessions, t, code, room, nick, cut_reason(reason))
            }
            ClientV3::Invite { room, nick } => self.invite(sessions, t, code, room, nick),
            ClientV3::Ban {
                room,
                mask,
                duration_s,
                reason,
            } => self.ban(
                sessions,
                t,
                code,
                room,
                mask,
                duration_s,
                cut_reason(reason),
            ),
            ClientV3::Unban { room, mask } => self.unban(sessions, t, code, room, mask),
            ClientV3::ListBans { room } => self.list_bans(sessions, t, code, room),
            ClientV3::Kill { nick, reason } => {
                self.kill(sessions, t, code, nick, cut_reason(reason))
            }
            // HELLO, SAY and REFRESH are identity's, never routed here.
            _ => self.error(sessions, t, ErrorCode::UnknownCode, code, ""),
        }
    }

    /// The checks every room request makes, in order: the room's name
    /// (`*` only where `server_wide` allows it, and for administrators),
    /// membership (administrators excepted), operator rights. `None`:
    /// refused, the ERROR sent.
    fn authorize(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        server_wide: bool,
    ) -> Option<Scope> {
        let admin = self.who_admin(t) && self.who_account(t).is_some();
        if room == SERVER_WIDE {
            if !admin {
                self.error(
                    sessions,
                    t,
                    ErrorCode::NotAllowed,
                    code,
                    "room * needs an administrator",
                );
                return None;
            }
            if !server_wide {
                self.error(sessions, t, ErrorCode::BadRoom, code, "");
                return None;
            }
            return Some(Scope::server());
        }
        let Some(key) = NameKey::new(room).filter(|_| valid_room(room)) else {
            self.error(sessions, t, ErrorCode::BadRoom, code, "");
            return None;
        };
        let id = self.rooms.find(room);
        let member = id.is_some_and(|id| self.members.at(t).membership(id).is_some());
        if !member && !admin {
            self.error(sessions, t, ErrorCode::NotInRoom, code, "");
            return None;
        }
        let name = match id {
            Some(id) => self.rooms.get(id).name.clone(),
            None => room.to_owned(),
        };
        if !self.is_room_operator(t, &name) {
            self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "needs operator rights in the room",
            );
            return None;
        }
        Some(Scope {
            name,
            key: Some(key),
            id: id.filter(|&id| !self.rooms.get(id).members.is_empty()),
        })
    }

    /// The target session of a request naming `nick`: connected, and for
    /// `in_room`, a member of it (NO_SUCH_NICK otherwise, ERROR sent).
    fn target(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        nick: &str,
        in_room: Option<RoomId>,
    ) -> Option<Token> {
        let found = NameKey::new(nick).and_then(|k| self.nicks.get(&k).copied());
        let found = match (found, in_room) {
            (Some(s), Some(id)) => self
                .sessions_of_member(s)
                .into_iter()
                .find(|&s| self.members.at(s).membership(id).is_some()),
            (found, _) => found,
        };
        if found.is_none() {
            self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        }
        found
    }

    /// A state change to room `key` made while it has no members starts
    /// its TTL (else a state made for an empty room would never go).
    fn touched(&mut self, scope: &Scope) {
        if let (None, Some(key)) = (scope.id, scope.key) {
            self.moderation.rooms.room_emptied(&key, now_ms());
        }
        if scope.key.is_some() {
            self.moderation.changed();
        } else {
            self.moderation.changed_server_bans();
        }
    }

    /// The frame in `self.frame` to each version-3 member of room `id`.
    fn cast_v3(&mut self, sessions: &mut Sessions, id: Option<RoomId>) {
        let Some(id) = id else { return };
        for &m in &self.rooms.get(id).members {
            if self.members.at(m).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(m, &self.frame);
            }
        }
    }

    /// ROOM_INFO to every version-3 member, and to the actor if it is not
    /// one (an administrator acting from outside).
    fn cast_room_info(&mut self, sessions: &mut Sessions, t: Token, scope: &Scope) {
        self.encode_room_info(&scope.name);
        self.cast_v3(sessions, scope.id);
        if scope
            .id
            .is_none_or(|id| self.members.at(t).membership(id).is_none())
        {
            sessions.reply(t, &self.frame);
        }
    }

    /// MODERATION to every version-3 member and to the actor (once); for
    /// room `*`, to the actor only.
    fn cast_moderation(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        scope: &Scope,
        act: u8,
        target: &str,
        reason: &str,
        until_ms: u64,
    ) {
        let actor = self.members.at(t).nick().to_owned();
        self.frame.clear();
        ServerV3::Moderation {
            room: &scope.name,
            actor: &actor,
            action: act,
            target,
            reason,
            until_ms,
        }
        .encode(&mut self.frame);
        self.cast_v3(sessions, scope.id);
        if scope
            .id
            .is_none_or(|id| self.members.at(t).membership(id).is_none())
        {
            sessions.reply(t, &self.frame);
        }
    }

    /// One line at info per action: actor, account, address, target,
    /// reason.
    fn log_action(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        kind: &'static str,
        room: &str,
        target: &str,
        reason: &str,
    ) {
        self.moderation.count(kind);
        let actor = self.members.at(t).nick();
        let account = self.who_account(t).unwrap_or_default();
        let peer = sessions.at(t).peer();
        info!(
            target: "muxchat::moderation",
            action = kind, actor = actor, account = account.as_str(), peer:% = peer,
            room = room, target = target, reason = reason;
            "{kind} in {room} by {actor} ({peer}): {target} {reason}"
        );
    }

    fn set_topic(&mut self, sessions: &mut Sessions, t: Token, code: u16, room: &str, topic: &str) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            if topic.len() > crate::server::moderation::room_state::MAX_TOPIC {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::TextTooLong,
                    code,
                    "a topic is at most 390 bytes",
                );
            }
            let time = now_ms().to_string();
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b't', "topic"),
                scope.room().as_str(),
                0,
                (&time, topic),
                (&scope.name, "", topic),
            );
        }
        let actor = self.members.at(t).nick().to_owned();
        let state = self.moderation.rooms.entry(scope.room());
        if let Err(StateError::TopicTooLong) = state.set_topic(topic, &actor, now_ms()) {
            return self.error(
                sessions,
                t,
                ErrorCode::TextTooLong,
                code,
                "a topic is at most 390 bytes",
            );
        }
        self.touched(&scope);
        self.log_action(sessions, t, "topic", &scope.name, "", topic);
        self.cast_room_info(sessions, t, &scope);
    }

    fn set_modes(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        set: u16,
        clear: u16,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            let now = self
                .moderation
                .rooms
                .get(&scope.room())
                .map(|s| s.modes)
                .unwrap_or_default();
            let Some(next) = now.apply(set, clear) else {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::Malformed,
                    code,
                    &StateError::UnknownModes.to_string(),
                );
            };
            if next == now {
                self.encode_room_info(&scope.name);
                return sessions.reply(t, &self.frame);
            }
            let bits = next.bits().to_string();
            let target = format!("modes={bits}");
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'm', "mode"),
                scope.room().as_str(),
                0,
                (&bits, ""),
                (&scope.name, &target, ""),
            );
        }
        let state = self.moderation.rooms.entry(scope.room());
        match state.change_modes(set, clear) {
            Err(e) => return self.error(sessions, t, ErrorCode::Malformed, code, &e.to_string()),
            Ok(false) => {
                // Nothing changed, nobody else is told; the actor still
                // gets the modes as they are.
                self.encode_room_info(&scope.name);
                return sessions.reply(t, &self.frame);
            }
            Ok(true) => {}
        }
        let bits = self
            .moderation
            .rooms
            .get(&scope.room())
            .map_or(0, |s| s.modes.bits());
        // Live or lingering, the incarnation's flag follows the mode.
        if let Some(id) = self.rooms.find(&scope.name) {
            self.sync_moderated(id);
        }
        self.touched(&scope);
        self.log_action(
            sessions,
            t,
            "mode",
            &scope.name,
            &format!("modes={bits}"),
            "",
        );
        self.cast_room_info(sessions, t, &scope);
    }

    fn op(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        nick: &str,
        grant: u8,
    ) {
        if grant > 1 {
            return self.error(sessions, t, ErrorCode::Malformed, code, "grant is 0 or 1");
        }
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() && !self.nick_is_here(nick) {
            let kind = if grant == 1 { b'o' } else { b'd' };
            let key = scope.room();
            return self.cluster_ask(sessions, t, code, kind, (&scope.name, key.as_str()), nick);
        }
        let Some(target) = self.target(sessions, t, code, nick, scope.id) else {
            return;
        };
        if scope.id.is_none() {
            return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        }
        let Some(account) = self.who_account(target) else {
            return self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "a guest cannot be an operator",
            );
        };
        if self.cluster.is_some() {
            let shown = self.members.at(target).nick().to_owned();
            let full = self.moderation.rooms.get(&scope.room()).is_some_and(|s| {
                !s.ops.contains(&account)
                    && s.ops.len() >= crate::server::moderation::room_state::MAX_GRANTS
            });
            if grant == 1 && full {
                let e = StateError::Full(
                    "operator grants",
                    crate::server::moderation::room_state::MAX_GRANTS,
                );
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let (kind, what) = if grant == 1 {
                (b'o', "op")
            } else {
                (b'd', "deop")
            };
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (kind, what),
                scope.room().as_str(),
                0,
                (&account, &shown),
                (&scope.name, &shown, ""),
            );
        }
        let state = self.moderation.rooms.entry(scope.room());
        let (kind, act) = if grant == 1 {
            if let Err(e) = state.grant(&account) {
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            ("op", action::OP)
        } else {
            state.revoke(&account);
            ("deop", action::DEOP)
        };
        let shown = self.members.at(target).nick().to_owned();
        self.touched(&scope);
        self.log_action(sessions, t, kind, &scope.name, &shown, "");
        self.cast_moderation(sessions, t, &scope, act, &shown, "", 0);
    }

    fn kick(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        nick: &str,
        reason: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() {
            // The member may be on any node: the store knows.
            if !self.valid_target(nick) {
                return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
            }
            let key = scope.room();
            return self.cluster_kick(sessions, t, code, (&scope.name, key.as_str()), nick, reason);
        }
        let Some(id) = scope.id else {
            return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
        };
        let Some(target) = self.target(sessions, t, code, nick, Some(id)) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let actor = self.members.at(t).nick().to_owned();
        self.log_action(sessions, t, "kick", &scope.name, &shown, reason);
        self.cast_moderation(sessions, t, &scope, action::KICK, &shown, reason, 0);
        self.part_member(sessions, target, id, &by_reason("kicked", &actor, reason));
    }

    fn invite(&mut self, sessions: &mut Sessions, t: Token, code: u16, room: &str, nick: &str) {
        let Some(scope) = self.authorize(sessions, t, code, room, false) else {
            return;
        };
        if self.cluster.is_some() && !self.nick_is_here(nick) {
            let key = scope.room();
            return self.cluster_ask(sessions, t, code, b'i', (&scope.name, key.as_str()), nick);
        }
        let Some(target) = self.target(sessions, t, code, nick, None) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let who = match self.who_account(target) {
            Some(a) => Invitee::Account(a),
            None => Invitee::guest(&shown),
        };
        if self.cluster.is_some() {
            let full = self.moderation.rooms.get(&scope.room()).is_some_and(|s| {
                !s.invitations.contains(&who)
                    && s.invitations.len() >= crate::server::moderation::room_state::MAX_INVITATIONS
            });
            if full {
                let e = StateError::Full(
                    "invitations",
                    crate::server::moderation::room_state::MAX_INVITATIONS,
                );
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let field = crate::server::cluster::moderation::invitee_field(&who);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'i', "invite"),
                scope.room().as_str(),
                0,
                (&field, &shown),
                (&scope.name, &shown, ""),
            );
        }
        if let Err(e) = self.moderation.rooms.entry(scope.room()).invite(who) {
            return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
        }
        self.touched(&scope);
        self.log_action(sessions, t, "invite", &scope.name, &shown, "");
        let actor = self.members.at(t).nick().to_owned();
        encode_into_v3(
            &mut self.frame,
            &ServerV3::Invited {
                room: &scope.name,
                by: &actor,
            },
        );
        for s in self.sessions_of_member(target) {
            if self.members.at(s).version() >= crate::codec::v3::VERSION_3 {
                sessions.deliver(s, &self.frame);
            }
        }
        self.cast_moderation(sessions, t, &scope, action::INVITE, &shown, "", 0);
    }

    fn ban(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        code: u16,
        room: &str,
        mask: &str,
        duration_s: u32,
        reason: &str,
    ) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let mask: Mask = match mask.parse() {
            Ok(m) => m,
            Err(e) => {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::Malformed,
                    code,
                    &format!("mask: {e}"),
                )
            }
        };
        let until_ms = match duration_s {
            0 => 0,
            d => now_ms() + u64::from(d) * 1000,
        };
        let actor = self.members.at(t).nick().to_owned();
        let ban = Ban {
            mask: mask.clone(),
            by: actor.clone(),
            reason: reason.to_owned(),
            until_ms,
        };
        let server_wide = scope.name == SERVER_WIDE;
        if self.cluster.is_some() {
            let set = if server_wide {
                Some(&self.moderation.server_bans)
            } else {
                self.moderation.rooms.get(&scope.room()).map(|s| &s.bans)
            };
            if let Some(set) = set.filter(|s| s.get(&mask).is_none() && s.len() >= s.limit()) {
                let e = crate::server::moderation::bans::BanError::Full(set.limit());
                return self.error(sessions, t, ErrorCode::NotAllowed, code, &e.to_string());
            }
            let text = mask.to_string();
            let key = scope.key.map(|k| k.as_str().to_owned());
            let room = key.as_deref().unwrap_or(SERVER_WIDE);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'b', "ban"),
                room,
                until_ms,
                (&text, reason),
                (&scope.name, &text, reason),
            );
        }
        let added = if server_wide {
            self.moderation
                .server_bans
                .insert(ban)
                .map_err(|e| e.to_string())
        } else {
            self.moderation
                .rooms
                .ban(scope.room(), ban)
                .map_err(|e| e.to_string())
        };
        if let Err(e) = added {
            return self.error(sessions, t, ErrorCode::NotAllowed, code, &e);
        }
        let text = mask.to_string();
        self.touched(&scope);
        self.log_action(sessions, t, "ban", &scope.name, &text, reason);
        self.cast_moderation(sessions, t, &scope, action::BAN, &text, reason, until_ms);
        let why = by_reason("banned", &actor, reason);
        if server_wide {
            // Rare, and an administrator's: a walk of every session.
            for s in sessions.tokens() {
                if s == t
                    || !sessions.at(s).life().is_registered()
                    || !self.accepts_input(sessions, s)
                {
                    continue;
                }
                let account = self.who_account(s);
                if mask.matches(
                    account.as_deref(),
                    self.members.at(s).nick(),
                    self.ip_of(sessions, s),
                ) {
                    let rooms: Vec<RoomId> =
                        self.members.at(s).rooms().iter().map(|m| m.room).collect();
                    for id in rooms {
                        self.part_member(sessions, s, id, &why);
                    }
                    sessions.cut(s, ErrorCode::Banned, 0, &why);
                }
            }
        } else if let Some(id) = scope.id {
            let hit: Vec<Token> = self
                .rooms
                .get(id)
                .members
                .iter()
                .copied()
                .filter(|&m| {
                    let account = self.who_account(m);
                    mask.matches(
                        account.as_deref(),
                        self.members.at(m).nick(),
                        self.ip_of(sessions, m),
                    )
                })
                .collect();
            for m in hit {
                self.part_member(sessions, m, id, &why);
            }
        }
    }

    fn unban(&mut self, sessions: &mut Sessions, t: Token, code: u16, room: &str, mask: &str) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let mask: Mask = match mask.parse() {
            Ok(m) => m,
            Err(e) => {
                return self.error(
                    sessions,
                    t,
                    ErrorCode::Malformed,
                    code,
                    &format!("mask: {e}"),
                )
            }
        };
        if self.cluster.is_some() {
            let text = mask.to_string();
            let key = scope.key.map(|k| k.as_str().to_owned());
            let room = key.as_deref().unwrap_or(SERVER_WIDE);
            return self.cluster_mod_change(
                sessions,
                t,
                code,
                (b'n', "unban"),
                room,
                0,
                (&text, ""),
                (&scope.name, &text, ""),
            );
        }
        let gone = if scope.name == SERVER_WIDE {
            self.moderation.server_bans.remove(&mask)
        } else {
            self.moderation.rooms.unban(&scope.room(), &mask)
        };
        if gone.is_err() {
            return self.error(sessions, t, ErrorCode::NotFound, code, "no such ban");
        }
        let text = mask.to_string();
        self.touched(&scope);
        self.log_action(sessions, t, "unban", &scope.name, &text, "");
        self.cast_moderation(sessions, t, &scope, action::UNBAN, &text, "", 0);
    }

    fn list_bans(&mut self, sessions: &mut Sessions, t: Token, code: u16, room: &str) {
        let Some(scope) = self.authorize(sessions, t, code, room, true) else {
            return;
        };
        let set = if scope.name == SERVER_WIDE {
            Some(&self.moderation.server_bans)
        } else {
            self.moderation.rooms.get(&scope.room()).map(|s| &s.bans)
        };
        // As many as fit in one frame of the maximum payload.
        let mut budget = (self.config.max_payload as usize).saturating_sub(4 + scope.name.len());
        let texts: Vec<(String, &Ban)> = set
            .into_iter()
            .flat_map(BanSet::list)
            .map(|b| (b.mask.to_string(), b))
            .take_while(|(m, b)| {
                crate::codec::frame::fits(
                    &mut budget,
                    2 + m.len() + 2 + b.by.len() + 2 + b.reason.len() + 8,
                )
            })
            .take(u16::MAX as usize)
            .collect();
        let bans = texts
            .iter()
            .map(|(mask, b)| BanEntry {
                mask,
                by: &b.by,
                reason: &b.reason,
                until_ms: b.until_ms,
            })
            .collect();
        let mut frame = std::mem::take(&mut self.frame);
        encode_into_v3(
            &mut frame,
            &ServerV3::BanList {
                room: &scope.name,
                bans,
            },
        );
        sessions.reply(t, &frame);
        self.frame = frame;
    }

    fn kill(&mut self, sessions: &mut Sessions, t: Token, code: u16, nick: &str, reason: &str) {
        if !(self.who_admin(t) && self.who_account(t).is_some()) {
            return self.error(
                sessions,
                t,
                ErrorCode::NotAllowed,
                code,
                "KILL needs an administrator",
            );
        }
        if self.cluster.is_some() {
            // The nick may be on any node: the store knows.
            if !self.valid_target(nick) {
                return self.error(sessions, t, ErrorCode::NoSuchNick, code, "");
            }
            return self.cluster_kill(sessions, t, code, nick, reason);
        }
        let Some(target) = self.target(sessions, t, code, nick, None) else {
            return;
        };
        let shown = self.members.at(target).nick().to_owned();
        let actor = self.members.at(t).nick().to_owned();
        let scope = Scope::server();
        self.log_action(sessions, t, "kill", SERVER_WIDE, &shown, reason);
        self.cast_moderation(sessions, t, &scope, action::KILL, &shown, reason, 0);
        let why = by_reason("killed", &actor, reason);
        let detail = if reason.is_empty() {
            why.as_str()
        } else {
            reason
        };
        let devices = self.sessions_of_member(target);
        let rooms: Vec<RoomId> = self
            .members
            .at(target)
            .rooms()
            .iter()
            .map(|m| m.room)
            .collect();
        for id in rooms {
            self.part_member(sessions, target, id, &why);
        }
        for s in devices {
            if self.accepts_input(sessions, s) {
                sessions.cut(s, ErrorCode::Killed, 0, detail);
            }
        }
    }
}

impl Chat {
    /// Whether a session of this node has `nick`.
    fn nick_is_here(&self, nick: &str) -> bool {
        NameKey::new(nick).is_some_and(|k| self.nicks.contains_key(&k))
    }

    /// OP or INVITE asked of another node by the target's node (relayed
    /// in `chat/cluster/moderation.rs`): the checks that need the
    /// target's session, then the change; refusals go back to `actor`.
    pub(in crate::server) fn answer_ask(
        &mut self,
        kind: u8,
        (name, key): (&str, &str),
        nick: &str,
        actor: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let target = NameKey::new(nick)
            .and_then(|k| self.nicks.get(&k).copied())
            .ok_or((ErrorCode::NoSuchNick, String::new()))?;
        let shown = self.members.at(target).nick().to_owned();
        let account = self.who_account(target);
        let state_key = NameKey::new(key).ok_or((ErrorCode::BadRoom, String::new()))?;
        let state = self.moderation.rooms.get(&state_key);
        let (a, what) = if kind == b'i' {
            let who = match account {
                Some(a) => Invitee::Account(a),
                None => Invitee::guest(&shown),
            };
            let max = crate::server::moderation::room_state::MAX_INVITATIONS;
            if state.is_some_and(|s| !s.invitations.contains(&who) && s.invitations.len() >= max) {
                return Err((
                    ErrorCode::NotAllowed,
                    StateError::Full("invitations", max).to_string(),
                ));
            }
            (
                crate::server::cluster::moderation::invitee_field(&who),
                "invite",
            )
        } else {
            let in_room = self
                .rooms
                .find(key)
                .is_some_and(|id| self.members.at(target).membership(id).is_some());
            if !in_room {
                return Err((ErrorCode::NoSuchNick, String::new()));
            }
            let Some(account) = account else {
                return Err((
                    ErrorCode::NotAllowed,
                    "a guest cannot be an operator".into(),
                ));
            };
            let max = crate::server::moderation::room_state::MAX_GRANTS;
            if kind == b'o'
                && state.is_some_and(|s| !s.ops.contains(&account) && s.ops.len() >= max)
            {
                return Err((
                    ErrorCode::NotAllowed,
                    StateError::Full("operator grants", max).to_string(),
                ));
            }
            (account, if kind == b'o' { "op" } else { "deop" })
        };
        info!(
            target: "muxchat::moderation",
            action = what, actor = actor, room = name, target = shown.as_str();
            "{what} in {name} by {actor} (through another node): {shown}"
        );
        self.moderation.count(what);
        self.cluster_answer_change(kind, key, actor, (&a, &shown));
        Ok(())
    }

    /// A cluster request the store took: logged and counted on the
    /// actor's node, as standalone.
    pub(in crate::server) fn cluster_logged(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        what: &'static str,
        room: &str,
        target: &str,
        reason: &str,
    ) {
        self.log_action(sessions, t, what, room, target, reason);
    }
}

/// A version-3 frame into the reusable buffer.
fn encode_into_v3(frame: &mut Vec<u8>, msg: &ServerV3<'_>) {
    frame.clear();
    msg.encode(frame);
}

impl Chat {
    /// For a version-3 LIST_USERS of room `id` by `t`: each member's nick
    /// as listed, `@` before an operator's, in member order. Empty for
    /// older versions (they see the nicks alone) and for rooms whose
    /// members cannot be operators (no accounts).
    pub(in crate::server) fn operator_marks(&self, t: Token, id: RoomId) -> Vec<String> {
        if self.members.at(t).version() < crate::codec::v3::VERSION_3 {
            return Vec::new();
        }
        let r = self.rooms.get(id);
        r.members
            .iter()
            .map(|&m| {
                let nick = self.members.at(m).nick();
                if self.is_room_operator(m, &r.name) {
                    format!("@{nick}")
                } else {
                    nick.to_owned()
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "moderation_tests.rs"]
mod tests;
