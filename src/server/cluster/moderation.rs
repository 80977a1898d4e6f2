//! Moderation in the store (`moderation.lua`): the calls that change a
//! room's state or the server-wide bans, the KICK, KILL and ban removals,
//! the pages a node loads its replica from, and the events (`P modch`)
//! that keep every node's replica current. The replica itself is the
//! chat's (`RoomStates`, `BanSet` in `chat/handlers/moderation/`), so
//! the JOIN, HELLO and SAY checks are the standalone ones; this module
//! owns only the Redis side and the bookkeeping of a load.

use mio::Token;

use super::{split_fields, text, Cluster, Expect};
use crate::codec::resp::Value;
use crate::server::moderation::bans::Ban;
use crate::server::moderation::bans::BanSet;
use crate::server::moderation::room_state::{Invitee, Modes, RoomState, RoomStates};

/// An invitee as the store keeps it (`a:<account>`, `g:<nick>`).
pub fn invitee_field(who: &Invitee) -> String {
    match who {
        Invitee::Account(a) => format!("a:{a}"),
        Invitee::Guest(n) => format!("g:{n}"),
    }
}

/// An invitee from the store's field (`a:<account>`, `g:<nick>`).
pub(crate) fn parse_invitee(s: &str) -> Option<Invitee> {
    match s.split_once(':')? {
        ("a", a) => Some(Invitee::Account(a.to_owned())),
        ("g", n) => Some(Invitee::Guest(n.to_owned())),
        _ => None,
    }
}

/// A ban's value in the store: "until \t by \t reason".
pub(crate) fn ban_value(b: &Ban) -> String {
    format!("{}\t{}\t{}", b.until_ms, b.by, b.reason)
}

/// A ban from its mask and its value in the store.
pub(crate) fn parse_ban(mask: &str, value: &str) -> Option<Ban> {
    let mut f = value.splitn(3, '\t');
    let until_ms = f.next()?.parse().ok()?;
    let by = f.next()?.to_owned();
    let reason = f.next().unwrap_or_default().to_owned();
    Some(Ban {
        mask: mask.parse().ok()?,
        by,
        reason,
        until_ms,
    })
}

/// A room's state as the store's hash holds it (`moderation.lua`).
pub(crate) fn state_fields(s: &RoomState) -> Vec<(String, String)> {
    let mut out = vec![
        ("topic".to_owned(), s.topic.clone()),
        ("topic_by".to_owned(), s.topic_by.clone()),
        ("topic_time".to_owned(), s.topic_time_ms.to_string()),
        ("modes".to_owned(), s.modes.bits().to_string()),
    ];
    if let Some(at) = s.emptied_at_ms {
        out.push(("emptied".to_owned(), at.to_string()));
    }
    out.extend(s.ops.iter().map(|a| (format!("op:{a}"), "1".to_owned())));
    out.extend(
        s.invitations
            .iter()
            .map(|w| (format!("inv:{}", invitee_field(w)), "1".to_owned())),
    );
    out.extend(
        s.bans
            .list()
            .map(|b| (format!("ban:{}", b.mask), ban_value(b))),
    );
    out
}

/// A room's state from the store's hash (field, value, ...); bans that
/// ended are left out.
pub(crate) fn state_from(fields: &[Value], now: u64) -> RoomState {
    let mut s = RoomState::default();
    for pair in fields.chunks(2) {
        let [k, v] = pair else { continue };
        let (Some(k), Some(v)) = (k.as_bytes().and_then(text), v.as_bytes().and_then(text)) else {
            continue;
        };
        match k {
            "topic" => s.topic = v.to_owned(),
            "topic_by" => s.topic_by = v.to_owned(),
            "topic_time" => s.topic_time_ms = v.parse().unwrap_or(0),
            "modes" => {
                s.modes = v
                    .parse()
                    .ok()
                    .and_then(Modes::from_bits)
                    .unwrap_or_default()
            }
            "emptied" => s.emptied_at_ms = v.parse().ok(),
            _ => {
                if let Some(a) = k.strip_prefix("op:") {
                    let _ = s.grant(a);
                } else if let Some(w) = k.strip_prefix("inv:").and_then(parse_invitee) {
                    let _ = s.invite(w);
                } else if let Some(b) = k.strip_prefix("ban:").and_then(|m| parse_ban(m, v)) {
                    if b.until_ms == 0 || b.until_ms > now {
                        let _ = s.bans.insert(b);
                    }
                }
            }
        }
    }
    s
}

/// Rooms (or server-wide bans) asked for per page of a load.
pub const LOAD_PAGE: usize = 200;
/// Events kept while a load is in flight, replayed on the loaded replica
/// (a change the load may not have seen); past it a load starts again.
pub const HELD_MAX: usize = 10_000;
/// Server-wide bans per call when a node puts them back after Redis lost
/// them.
pub const RESTORE_CHUNK: usize = 500;

/// What a moderation call's answer is for.
#[derive(Debug)]
pub(crate) enum ModExpect {
    /// A request's change (`mc_mod`): 0 means nothing to change
    /// (UNBAN: NOT_FOUND); an error: UNAVAILABLE.
    Change {
        t: Token,
        sid: u64,
        code: u16,
        /// Kind letter (`moderation.lua`).
        kind: u8,
        /// For the log line and counters: the action, the room as shown,
        /// the target, the reason.
        what: &'static str,
        room: String,
        target: String,
        reason: String,
    },
    /// KICK or KILL: 0 means the nick is not there (NO_SUCH_NICK).
    Target {
        t: Token,
        sid: u64,
        code: u16,
        what: &'static str,
        room: String,
        target: String,
        reason: String,
    },
    /// Bookkeeping (creator's grant, a spent invitation, a ban's removal
    /// of a member, a restore): only an error matters (logged).
    Quiet(&'static str),
    /// The creator's grant, already in this node's replica (so the
    /// creator's next request finds it): 0 means the store had a state
    /// after all (a change raced the JOIN), and the replica is reloaded.
    Creator { room: String, account: String },
    /// A page of room states for the replica (`mc_mod_load`).
    Rooms { load: u64 },
    /// A page of server-wide bans for the replica (`mc_mod_bans`).
    Bans { load: u64 },
}

/// The node's side of its replica: whether it was loaded, the load in
/// flight, the events that came meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// A load finished since the node started (or since its last rebuild).
    pub loaded: bool,
    /// A load is in flight.
    pub loading: bool,
    /// The latest load's number (never reused). Answers of an older load
    /// are dropped.
    pub load: u64,
    /// Events that came while the load was in flight.
    pub held: Vec<Vec<u8>>,
    /// Too many events for `held`: the load starts over when done.
    pub overflowed: bool,
    /// A load is due (start, a rebuild).
    pub due: bool,
    /// The replica being loaded, swapped in when both halves are in.
    pub pending_rooms: Option<RoomStates>,
    pub pending_bans: Option<BanSet>,
    pub rooms_done: bool,
    pub bans_done: bool,
    /// After a load failed: when to try again (not every iteration).
    pub retry_at: Option<std::time::Instant>,
}

impl Replica {
    /// A page of the load failed (an error, the link lost): the load
    /// starts over a second later.
    pub fn failed(&mut self) {
        self.loading = false;
        self.retry_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
    }
}

/// One moderation event from `P modch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModEvent<'a> {
    /// Kind letter (see `moderation.lua`).
    pub kind: u8,
    /// The room's key, or `*`.
    pub room: &'a str,
    /// When the room emptied (ms), 0 while it has members.
    pub emptied: u64,
    pub actor: &'a str,
    pub until: u64,
    pub a: &'a str,
    pub b: &'a str,
}

impl<'a> ModEvent<'a> {
    /// Parses `X\nkind\nroom\nv\nemptied\nactor\nuntil\na\nb`.
    pub(crate) fn parse(payload: &'a [u8]) -> Option<ModEvent<'a>> {
        let f = split_fields(payload, 9)?;
        if f[0] != b"X" || f[1].len() != 1 {
            return None;
        }
        Some(ModEvent {
            kind: f[1][0],
            room: text(f[2])?,
            emptied: super::num(f[4]).unwrap_or(0),
            actor: text(f[5])?,
            until: super::num(f[6]).unwrap_or(0),
            a: text(f[7])?,
            b: text(f[8])?,
        })
    }
}

impl Cluster {
    /// The channel every node hears moderation on.
    pub fn moderation_channel(&self) -> String {
        format!("{}modch", self.prefix)
    }

    /// `mc_mod`: one change of a room's state (or, room `*`, of the
    /// server-wide bans), published to every node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mod_change(
        &mut self,
        expect: ModExpect,
        kind: u8,
        room: &str,
        actor: &str,
        until: u64,
        (a, b): (&str, &str),
        ttl_ms: u64,
    ) {
        let (kind, until, ttl) = ([kind], until.to_string(), ttl_ms.to_string());
        self.fcall(
            Expect::Moderation(expect),
            "mc_mod",
            &[
                &kind,
                room.as_bytes(),
                actor.as_bytes(),
                until.as_bytes(),
                a.as_bytes(),
                b.as_bytes(),
                ttl.as_bytes(),
            ],
        );
    }

    /// `mc_mod_kick`: the member `nk` (folded) leaves the room, "kicked".
    pub(crate) fn mod_kick(
        &mut self,
        expect: ModExpect,
        room: &str,
        nk: &str,
        actor: &str,
        (reason, why): (&str, &str),
    ) {
        let room_ttl = self.room_ttl.as_millis().to_string();
        self.fcall(
            Expect::Moderation(expect),
            "mc_mod_kick",
            &[
                room.as_bytes(),
                nk.as_bytes(),
                actor.as_bytes(),
                reason.as_bytes(),
                why.as_bytes(),
                room_ttl.as_bytes(),
            ],
        );
    }

    /// `mc_mod_part`: this node's member `nick` (session `sid`) leaves
    /// the room, removed by a ban this node matched it against.
    pub(crate) fn mod_part(&mut self, room: &str, nick: &str, sid: u64, why: &str) {
        let (node, sid) = (self.node.clone(), sid.to_string());
        let room_ttl = self.room_ttl.as_millis().to_string();
        let nk = super::fold(nick);
        self.fcall(
            Expect::Moderation(ModExpect::Quiet("ban removal")),
            "mc_mod_part",
            &[
                room.as_bytes(),
                nk.as_bytes(),
                node.as_bytes(),
                sid.as_bytes(),
                nick.as_bytes(),
                why.as_bytes(),
                room_ttl.as_bytes(),
            ],
        );
    }

    /// `mc_mod_ask`: `payload` to the node holding `nk` (folded).
    pub(crate) fn mod_ask(&mut self, expect: ModExpect, nk: &str, payload: &str) {
        self.fcall(
            Expect::Moderation(expect),
            "mc_mod_ask",
            &[nk.as_bytes(), payload.as_bytes()],
        );
    }

    /// `mc_mod_kill`: every node ends its sessions of `nk` (folded).
    pub(crate) fn mod_kill(&mut self, expect: ModExpect, nk: &str, actor: &str, reason: &str) {
        self.fcall(
            Expect::Moderation(expect),
            "mc_mod_kill",
            &[nk.as_bytes(), actor.as_bytes(), reason.as_bytes()],
        );
    }

    /// Starts loading the replica: the first page of room states and of
    /// server-wide bans. Events until the last page are held.
    pub(crate) fn mod_load(&mut self) {
        let r = &mut self.moderation;
        r.load += 1;
        r.loading = true;
        r.held.clear();
        r.overflowed = false;
        r.due = false;
        let load = r.load;
        self.mod_load_rooms(load, "0");
        self.mod_load_bans(load, "0");
    }

    pub(crate) fn mod_load_rooms(&mut self, load: u64, cursor: &str) {
        let count = LOAD_PAGE.to_string();
        self.fcall(
            Expect::Moderation(ModExpect::Rooms { load }),
            "mc_mod_load",
            &[cursor.as_bytes(), count.as_bytes()],
        );
    }

    pub(crate) fn mod_load_bans(&mut self, load: u64, cursor: &str) {
        let count = LOAD_PAGE.to_string();
        self.fcall(
            Expect::Moderation(ModExpect::Bans { load }),
            "mc_mod_bans",
            &[cursor.as_bytes(), count.as_bytes()],
        );
    }

    /// `mc_mod_restore`: a room's state from this node's replica, put
    /// back unless the store has one.
    pub(crate) fn mod_restore(&mut self, room: &str, ttl_ms: u64, fields: &[(String, String)]) {
        let ttl = ttl_ms.to_string();
        let mut args: Vec<&[u8]> = vec![room.as_bytes(), ttl.as_bytes()];
        for (k, v) in fields {
            args.push(k.as_bytes());
            args.push(v.as_bytes());
        }
        self.fcall(
            Expect::Moderation(ModExpect::Quiet("restore room state")),
            "mc_mod_restore",
            &args,
        );
    }

    /// `mc_mod_restore_bans`: server-wide bans put back (`first`: the
    /// first chunk, which finds out whether the store lost them).
    pub(crate) fn mod_restore_bans(&mut self, first: bool, bans: &[(String, String)]) {
        let node = self.node.clone();
        let first: &[u8] = if first { b"1" } else { b"0" };
        let mut args: Vec<&[u8]> = vec![node.as_bytes(), first];
        for (k, v) in bans {
            args.push(k.as_bytes());
            args.push(v.as_bytes());
        }
        self.fcall(
            Expect::Moderation(ModExpect::Quiet("restore server-wide bans")),
            "mc_mod_restore_bans",
            &args,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{state_fields, state_from, ModEvent};
    use crate::codec::resp::Value;
    use crate::server::moderation::bans::Ban;
    use crate::server::moderation::room_state::{Invitee, Modes, RoomState};

    #[test]
    fn a_room_state_goes_to_the_store_and_back_unchanged_but_for_ended_bans() {
        let mut s = RoomState::default();
        s.set_topic("the topic", "alice", 42).unwrap();
        s.modes = Modes::from_bits(3).unwrap();
        s.grant("sub-1").unwrap();
        s.invite(Invitee::guest("~Gus")).unwrap();
        s.invite(Invitee::Account("sub-2".into())).unwrap();
        s.emptied_at_ms = Some(7);
        let ban = |mask: &str, until_ms| Ban {
            mask: mask.parse().unwrap(),
            by: "alice".into(),
            reason: "a\ttab and more".into(),
            until_ms,
        };
        s.bans.insert(ban("nick:spam*", 0)).unwrap();
        s.bans.insert(ban("ip:10.0.0.0/8", 2_000)).unwrap();
        s.bans.insert(ban("account:gone", 500)).unwrap();
        let flat: Vec<Value> = state_fields(&s)
            .into_iter()
            .flat_map(|(k, v)| [Value::Bulk(k.into_bytes()), Value::Bulk(v.into_bytes())])
            .collect();
        let back = state_from(&flat, 1_000);
        assert_eq!(
            (back.topic.as_str(), back.topic_by.as_str()),
            ("the topic", "alice")
        );
        assert_eq!(
            (back.topic_time_ms, back.modes, back.emptied_at_ms),
            (42, s.modes, Some(7))
        );
        assert_eq!((&back.ops, &back.invitations), (&s.ops, &s.invitations));
        let masks: Vec<String> = back.bans.list().map(|b| b.mask.to_string()).collect();
        assert_eq!(masks.len(), 2, "{masks:?}");
        assert!(back.bans.list().all(|b| b.reason == "a\ttab and more"));
    }

    #[test]
    fn an_event_parses_with_a_reason_holding_newlines() {
        let e = ModEvent::parse(b"X\nb\nlobby\n3\n0\nalice\n99\nnick:spam*\nno\nmore").unwrap();
        assert_eq!(e.kind, b'b');
        assert_eq!((e.room, e.actor, e.until), ("lobby", "alice", 99));
        assert_eq!((e.a, e.b), ("nick:spam*", "no\nmore"));
        assert!(ModEvent::parse(b"X\nbb\nlobby\n3\n0\na\n0\nx\ny").is_none());
        assert!(ModEvent::parse(b"W\nb\nlobby").is_none());
    }
}
