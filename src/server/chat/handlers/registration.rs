//! Registration: HELLO (a nick and a protocol version) and NICK.

use crate::server::sessions::registry::Sessions;
use log::info;
use mio::Token;

use crate::codec::{code, is_supported_version, valid_nick, ErrorCode, NameKey, ServerMessage};

use super::super::rooms::RoomId;
use super::super::{encode_into, Chat};
use crate::server::identity::KeyOwner;

impl Chat {
    pub(in crate::server) fn hello(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        version: u8,
        nick: &str,
    ) {
        if !is_supported_version(version) {
            return self.error(
                sessions,
                t,
                ErrorCode::BadVersion,
                code::HELLO,
                "this server speaks versions 1 and 2",
            );
        }
        if !valid_nick(nick) {
            return self.error(sessions, t, ErrorCode::BadNick, code::HELLO, "");
        }
        if self.draining {
            return self.error(sessions, t, ErrorCode::ShuttingDown, code::HELLO, "");
        }
        // Versions 1 and 2 are guests when tokens are taken.
        let Some(shown) = self.old_hello_nick(sessions, t, nick) else {
            return;
        };
        let nick = &*shown;
        let Some(key) = NameKey::new(nick) else {
            return self.error(sessions, t, ErrorCode::BadNick, code::HELLO, "");
        };
        if self.nicks.contains_key(&key) {
            return self.error(sessions, t, ErrorCode::NickInUse, code::HELLO, "");
        }
        if let Some(why) = self.hello_banned(sessions, t, None, nick) {
            return sessions.cut(t, ErrorCode::Banned, code::HELLO, &why);
        }
        if self.cluster.is_some() {
            return self.cluster_hello(sessions, t, version, nick, &key);
        }
        self.register(sessions, t, key, version, nick);
    }

    /// The nick is ours: the session is registered and welcomed.
    pub(in crate::server) fn register(
        &mut self,
        sessions: &mut Sessions,
        t: Token,
        key: NameKey,
        version: u8,
        nick: &str,
    ) {
        self.nicks.insert(key, t);
        let m = self.members.at_mut(t);
        m.replace_nick(nick);
        m.set_version(version);
        let s = sessions.at_mut(t);
        s.register();
        // One line per connection at info (with "opened" and "ended"): a
        // log pipeline follows a session by its peer address. Versions 1
        // and 2 are guests: no account.
        info!(
            target: "muxchat::conn",
            peer:% = s.peer(), door = s.door(), tls = s.is_tls(), nick = nick, account = "";
            "registered: {nick} from {} (v{version})", s.peer()
        );
        let welcome = ServerMessage::Welcome {
            version,
            nick,
            server: &self.server_name,
            heartbeat_ms: self.config.heartbeat.as_millis() as u32,
            max_payload: self.config.max_payload,
        };
        encode_into(&mut self.frame, &welcome);
        sessions.reply(t, &self.frame);
    }

    pub(in crate::server) fn change_nick(&mut self, sessions: &mut Sessions, t: Token, new: &str) {
        if !valid_nick(new) {
            return self.error(sessions, t, ErrorCode::BadNick, code::NICK, "");
        }
        // An account's nick is its token's claim.
        if self.members.at(t).account().is_some() {
            return self.error(sessions, t, ErrorCode::NotAllowed, code::NICK, "");
        }
        let shown = self.guest_nick(new);
        let new = &*shown;
        let Some(key) = NameKey::new(new) else {
            return self.error(sessions, t, ErrorCode::BadNick, code::NICK, "");
        };
        if self.nicks.get(&key).is_some_and(|&owner| owner != t) {
            return self.error(sessions, t, ErrorCode::NickInUse, code::NICK, "");
        }
        if self.cluster.is_some() {
            return self.cluster_nick(sessions, t, new);
        }
        let old = self.members.at_mut(t).replace_nick(new);
        if let Some(old_key) = NameKey::new(&old) {
            self.nicks.remove(&old_key);
        }
        self.nicks.insert(key, t);
        if let Some(k) = self.members.at(t).key() {
            self.identity.keys.set_owner(&k, KeyOwner::guest(new));
        }
        encode_into(
            &mut self.frame,
            &ServerMessage::NickChanged { old: &old, new },
        );
        // Once to the sender and once to each session sharing any room
        // with it, however many rooms they share: a fresh stamp marks who
        // already has it.
        self.stamp += 1;
        let stamp = self.stamp;
        self.members.at_mut(t).stamp(stamp);
        sessions.reply(t, &self.frame);
        let rooms: Vec<RoomId> = self.members.at(t).rooms().iter().map(|m| m.room).collect();
        for id in rooms {
            for &member in &self.rooms.get(id).members {
                if self.members.at_mut(member).stamp(stamp) {
                    sessions.deliver(member, &self.frame);
                }
            }
        }
    }
}
