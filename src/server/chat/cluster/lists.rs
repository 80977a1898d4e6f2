//! LIST_ROOMS and LIST_USERS on a cluster node, the chat's side: callers
//! are answered from the node's cache (`cluster/lists.rs`) while it is
//! fresh, and wait for one refresh of it otherwise.

use crate::server::sessions::registry::Sessions;
use std::time::Instant;

use mio::Token;

use crate::codec::v3::VERSION_3;
use crate::codec::{code, ErrorCode, NameKey, ServerMessage};

use super::super::Chat;
use crate::codec::frame::fits;
use crate::codec::resp::Value;
use crate::server::cluster::accounts::record_is_op;
use crate::server::cluster::lists::{Entry, PAGE, USERS_BYTES, USERS_MAX};
use crate::server::cluster::{fold, text, Expect};

impl Chat {
    pub(crate) fn cluster_list_rooms(&mut self, sessions: &mut Sessions, t: Token) {
        if !self.store_ready(sessions, t, code::LIST_ROOMS, 64) {
            return;
        }
        let sid = sessions.at(t).id();
        let now = Instant::now();
        let budget = self.config.max_payload as usize - 2;
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let e = &mut c.lists.rooms;
        if e.fresh(now, c.lists.ttl) {
            let frame = std::mem::take(&mut e.frame);
            self.flush_cast(sessions);
            sessions.reply(t, &frame);
            if let Some(c) = self.cluster.as_deref_mut() {
                c.lists.rooms.frame = frame;
            }
            return;
        }
        e.waiters.push((t, sid));
        if !e.in_flight {
            e.in_flight = true;
            e.sent = Some(now);
            c.lists.refreshes += 1;
            c.lists.acc.start(budget);
            c.fcall(
                Expect::Rooms,
                "mc_rooms_page",
                &[b"0", PAGE.to_string().as_bytes()],
            );
        }
        self.wait(sessions, t);
    }

    pub(crate) fn cluster_list_users(&mut self, sessions: &mut Sessions, t: Token, room: &str) {
        if !self.store_ready(sessions, t, code::LIST_USERS, 128) {
            return;
        }
        let sid = sessions.at(t).id();
        let v3 = self.members.at(t).version() >= VERSION_3;
        let now = Instant::now();
        let key = fold(room);
        let max = (self.config.max_payload as usize / 3)
            .min(u16::MAX as usize)
            .to_string();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let ttl = c.lists.ttl;
        if let Some(e) = c.lists.users.get_mut(&key) {
            if e.fresh(now, ttl) && !e.frame.is_empty() {
                let frame = std::mem::take(e.frame_for(v3));
                self.flush_cast(sessions);
                sessions.reply(t, &frame);
                if let Some(e) = self
                    .cluster
                    .as_deref_mut()
                    .and_then(|c| c.lists.users.get_mut(&key))
                {
                    *e.frame_for(v3) = frame;
                }
                return;
            }
            e.waiters.push((t, sid));
            if e.in_flight {
                return self.wait(sessions, t);
            }
            e.in_flight = true;
            e.sent = Some(now);
        } else {
            // A full cache still shares the read among concurrent callers:
            // the entry lives until its answer comes, then goes.
            c.lists.users.insert(
                key.clone(),
                Entry {
                    in_flight: true,
                    sent: Some(now),
                    waiters: vec![(t, sid)],
                    ..Entry::default()
                },
            );
        }
        c.lists.users_refreshes += 1;
        c.fcall(
            Expect::Users { key: key.clone() },
            "mc_users",
            &[key.as_bytes(), max.as_bytes()],
        );
        self.wait(sessions, t);
    }

    /// One page of a LIST_ROOMS refresh: the next page is asked for, or
    /// the reply goes to every caller waiting, and is kept.
    pub(crate) fn rooms_listed(&mut self, sessions: &mut Sessions, v: Result<Value, String>) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let page = v.as_ref().ok().and_then(Value::as_array);
        let cursor = page
            .and_then(|p| p.first())
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec);
        let (Some(page), Some(cursor)) = (page, cursor) else {
            let e = &mut c.lists.rooms;
            e.in_flight = false;
            let waiters = std::mem::take(&mut e.waiters);
            c.lists.acc.start(0);
            for (t, sid) in waiters {
                self.unavailable(sessions, t, sid, code::LIST_ROOMS);
            }
            return;
        };
        c.lists.acc.add(&page[1..]);
        if cursor != b"0" && !c.lists.acc.full {
            // An answer just came on the command link, so it is up: the
            // next page's loss with it is an error like any other.
            c.fcall(
                Expect::Rooms,
                "mc_rooms_page",
                &[&cursor, PAGE.to_string().as_bytes()],
            );
            return;
        }
        let acc = std::mem::take(&mut c.lists.acc);
        let rooms: Vec<(&str, u32)> = acc.rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let mut frame = Vec::new();
        ServerMessage::RoomList(rooms).encode(&mut frame);
        let e = &mut c.lists.rooms;
        e.in_flight = false;
        let waiters = std::mem::take(&mut e.waiters);
        self.answer_waiters(sessions, &waiters, &frame);
        if let Some(c) = self.cluster.as_deref_mut() {
            let e = &mut c.lists.rooms;
            e.at = e.sent;
            e.frame = frame;
        }
    }

    /// The store's LIST_USERS answer for the room `key`: to every caller
    /// waiting, and kept if the cache has room.
    pub(crate) fn users_listed(
        &mut self,
        sessions: &mut Sessions,
        key: &str,
        v: Result<Value, String>,
    ) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let Some(e) = c.lists.users.get_mut(key) else {
            return;
        };
        e.in_flight = false;
        let waiters = std::mem::take(&mut e.waiters);
        let v = match v {
            Ok(v) => v,
            Err(_) => {
                for (t, sid) in waiters {
                    self.unavailable(sessions, t, sid, code::LIST_USERS);
                }
                return;
            }
        };
        let (frame, frame3) = self.user_list_frames(&v);
        self.flush_cast(sessions);
        for &(t, sid) in &waiters {
            if sessions.get_live(t, sid).is_some() {
                let v3 = self.members.at(t).version() >= VERSION_3;
                sessions.reply(t, if v3 { &frame3 } else { &frame });
            }
            self.wake(sessions, t, sid);
        }
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let lists = &mut c.lists;
        let Some(e) = lists.users.get_mut(key) else {
            return;
        };
        let old = std::mem::take(&mut e.frame).len() + std::mem::take(&mut e.frame3).len();
        lists.users_bytes -= old;
        let size = frame.len() + frame3.len();
        let keep = lists.users.len() <= USERS_MAX
            && lists.users_bytes + size <= USERS_BYTES
            && !lists.ttl.is_zero();
        if keep {
            lists.users_bytes += size;
            if let Some(e) = lists.users.get_mut(key) {
                e.at = e.sent;
                e.frame = frame;
                e.frame3 = frame3;
            }
        } else {
            lists.users.remove(key);
        }
    }

    fn answer_waiters(&mut self, sessions: &mut Sessions, waiters: &[(Token, u64)], frame: &[u8]) {
        self.flush_cast(sessions);
        for &(t, sid) in waiters {
            if sessions.get_live(t, sid).is_some() {
                sessions.reply(t, frame);
            }
            self.wake(sessions, t, sid);
        }
    }

    /// USER_LIST from `mc_users`'s answer, cut to one frame, for older
    /// versions and for version 3 (operators' nicks with a leading `@`:
    /// by their token, as the store keeps it, or by a grant in this node's
    /// replica); NOT_IN_ROOM (both) when the room does not exist.
    fn user_list_frames(&self, v: &Value) -> (Vec<u8>, Vec<u8>) {
        let mut frame = Vec::new();
        let room = v
            .as_array()
            .and_then(|items| Some((items, text(items.first()?.as_bytes()?)?)));
        let Some((items, room)) = room else {
            ServerMessage::error(ErrorCode::NotInRoom, code::LIST_USERS, "no such room")
                .encode(&mut frame);
            return (frame.clone(), frame);
        };
        let state = NameKey::new(room).and_then(|k| self.moderation.rooms.get(&k));
        // (nick, operator) for each member: its nick, sub and record.
        let members: Vec<(&str, bool)> = items[1..]
            .chunks(3)
            .filter_map(|m| {
                let nick = text(m.first()?.as_bytes()?)?;
                let sub = m.get(1).and_then(Value::as_bytes).and_then(text);
                let rec = m.get(2).and_then(Value::as_bytes).unwrap_or_default();
                let op = sub.is_some_and(|sub| {
                    !sub.is_empty()
                        && (record_is_op(rec, room) || state.is_some_and(|s| s.ops.contains(sub)))
                });
                Some((nick, op))
            })
            .take(u16::MAX as usize)
            .collect();
        let budget = (self.config.max_payload as usize).saturating_sub(4 + room.len());
        let mut left = budget;
        let nicks: Vec<&str> = members
            .iter()
            .map(|&(nick, _)| nick)
            .take_while(|nick| fits(&mut left, 2 + nick.len()))
            .collect();
        ServerMessage::UserList { room, nicks }.encode(&mut frame);
        let mut left = budget;
        let marked: Vec<String> = members
            .iter()
            .map(|&(nick, op)| {
                if op {
                    format!("@{nick}")
                } else {
                    nick.to_owned()
                }
            })
            .take_while(|nick| fits(&mut left, 2 + nick.len()))
            .collect();
        let mut frame3 = Vec::new();
        ServerMessage::UserList {
            room,
            nicks: marked.iter().map(String::as_str).collect(),
        }
        .encode(&mut frame3);
        (frame, frame3)
    }
}
