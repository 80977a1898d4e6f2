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
//! comes back as an event every node applies (`chat/cluster/moderation/`):
//! the request files hand the request over once it is checked.
//!
//! One file per concern:
//! - [`checks`]: who a session is to moderation, and what JOIN, SAY,
//!   HELLO and LIST_USERS ask of it (bans, modes, ROOM_INFO, `@` marks);
//! - [`timers`]: room states' TTLs, bans' ends, the state file's writes;
//! - [`authority`]: what every request shares: the checks of the actor
//!   and the target, and casting ROOM_INFO and MODERATION;
//! - [`topic_modes`]: TOPIC, MODE and OP;
//! - [`kick_invite`]: KICK and INVITE (and OP or INVITE asked of this
//!   node by another);
//! - [`bans`]: BAN, UNBAN, LIST_BANS and KILL.

pub mod authority;
pub mod bans;
pub mod checks;
pub mod kick_invite;
pub mod timers;
pub mod topic_modes;

use crate::server::sessions::registry::Sessions;
use std::net::IpAddr;
use std::time::Duration;

use mio::Token;

use crate::codec::v3::{ClientV3, ServerV3};
use crate::codec::{ErrorCode, NameKey};
use crate::server::moderation::bans::{BanSet, MAX_REASON, MAX_SERVER_BANS};
use crate::server::moderation::room_state::RoomStates;
use crate::server::moderation::state_file::{Loaded, StateWriter};

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
}

/// A version-3 frame into the reusable buffer.
fn encode_into_v3(frame: &mut Vec<u8>, msg: &ServerV3<'_>) {
    frame.clear();
    msg.encode(frame);
}

#[cfg(test)]
mod tests;
