//! The moderation rules at the chat's level, with a fake identity (the
//! chat's `FakeWho`, test builds only): sessions over socket pairs,
//! registered as version 2 and then marked version 3 (HELLO v3 is
//! identity's), their output flushed and decoded as a client would.
//!
//! The harness is here; the tests are by the request families of
//! `handlers/moderation/`: [`rooms`] for the rights, TOPIC, MODE, OP,
//! KICK, INVITE and the room states' life; [`bans`] for BAN, UNBAN,
//! LIST_BANS, KILL, the bans' timers and the metrics.

mod bans;
mod rooms;

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, IntoRawFd as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::Token;

use crate::codec::v3::{ClientV3, ServerV3, VERSION_3};
use crate::codec::{ClientMessage, ErrorCode, FrameReader, ServerMessage};
use crate::server::chat::Chat;
use crate::server::config::Config;
use crate::server::doors::Transport;
use crate::server::sessions::registry::Sessions;
use crate::server::sessions::session::Marks;

use crate::codec::v3::code as c3;

struct Client {
    t: Token,
    peer: UnixStream,
    reader: FrameReader,
}

struct World {
    chat: Chat,
    sessions: Sessions,
    clients: Vec<Client>,
    iteration: u64,
}

impl World {
    fn new(extra: &[&str]) -> World {
        let mut argv = vec!["muxchatd", "--bind", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        let config = Config::from_argv(argv).expect("test config");
        World {
            sessions: Sessions::new(Marks::new(&config)),
            chat: Chat::new(config, Instant::now()),
            clients: Vec::new(),
            iteration: 0,
        }
    }

    /// A registered session from `addr` named `nick`, of `version`.
    fn connect(&mut self, nick: &str, addr: &str, version: u8) -> usize {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs.set_nonblocking(true).expect("nonblocking");
        // SAFETY: a connected stream socket we own; TcpStream only reads,
        // writes and shuts it down, which a Unix stream socket supports.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) };
        let peer: SocketAddr = addr.parse().expect("address");
        let rate = self.chat.rate();
        let t = self
            .sessions
            .open(Transport::plain(stream), peer, rate, Instant::now());
        self.chat.on_open(&mut self.sessions, t);
        self.clients.push(Client {
            t,
            peer: theirs,
            reader: FrameReader::new(1 << 20),
        });
        let i = self.clients.len() - 1;
        let hello_version = version.min(2);
        self.send(
            i,
            &ClientMessage::Hello {
                version: hello_version,
                nick,
            },
        );
        if version >= VERSION_3 {
            self.chat.members.at_mut(t).set_version(VERSION_3);
        }
        let got = self.take(i);
        assert!(got.iter().any(|f| f.starts_with("Welcome")), "{got:?}");
        i
    }

    fn account(&mut self, i: usize, account: &str) {
        let t = self.clients[i].t;
        self.chat
            .moderation
            .fake
            .accounts
            .insert(t, account.to_string());
    }

    fn admin(&mut self, i: usize) {
        let t = self.clients[i].t;
        self.chat.moderation.fake.admins.insert(t);
    }

    fn send(&mut self, i: usize, msg: &ClientMessage<'_>) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.input(i, &buf);
    }

    fn send3(&mut self, i: usize, msg: &ClientV3<'_>) {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        self.input(i, &buf);
    }

    fn input(&mut self, i: usize, bytes: &[u8]) {
        let now = Instant::now();
        let t = self.clients[i].t;
        self.chat.on_input(&mut self.sessions, t, bytes, now);
        self.settle();
    }

    /// Stages 3-6 of an iteration: timers, reap, flush, remove.
    fn settle(&mut self) {
        let now = Instant::now();
        self.iteration += 1;
        self.chat.run_timers(&mut self.sessions, now);
        self.chat.reap(&mut self.sessions, now);
        let list = self.sessions.begin_flush();
        for &t in &list {
            let _ = self.sessions.flush(t, self.iteration, now);
        }
        self.sessions.end_flush(list);
        while let Some(t) = self.sessions.pop_finished() {
            let _ = self.chat.remove(&mut self.sessions, t);
        }
    }

    /// Every frame `i` got since the last call, as readable lines.
    fn take(&mut self, i: usize) -> Vec<String> {
        let c = &mut self.clients[i];
        let mut buf = [0u8; 65536];
        loop {
            match c.peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c.reader.extend(&buf[..n]),
            }
        }
        let mut out = Vec::new();
        while let Ok(Some(f)) = c.reader.next_frame() {
            out.push(show(f.code, f.payload));
        }
        out
    }

    fn nick_of(&self, i: usize) -> String {
        self.chat.members.at(self.clients[i].t).nick().to_string()
    }
}

fn show(code: u16, payload: &[u8]) -> String {
    if let Ok(m) = ServerV3::decode(code, payload) {
        if code != crate::codec::code::WELCOME {
            return format!("{m:?}");
        }
    }
    match ServerMessage::decode(code, payload) {
        Ok(ServerMessage::Error {
            error,
            request,
            detail,
        }) => format!("ERROR {error} {request} {detail}"),
        Ok(m) => format!("{m:?}"),
        Err(_) => format!("undecodable {code}"),
    }
}

fn err(e: ErrorCode, request: u16) -> String {
    format!("ERROR {} {request}", e as u16)
}

#[track_caller]
fn has(got: &[String], needle: &str) {
    assert!(
        got.iter().any(|f| f.contains(needle)),
        "no frame with {needle:?} in {got:#?}"
    );
}

#[track_caller]
fn lacks(got: &[String], needle: &str) {
    assert!(
        !got.iter().any(|f| f.contains(needle)),
        "a frame with {needle:?} in {got:#?}"
    );
}

fn join(w: &mut World, i: usize, room: &str) -> Vec<String> {
    w.send(i, &ClientMessage::Join { room });
    w.take(i)
}

/// alice (an account) creates #r; bob (a version-3 guest) joins it.
fn room_with_alice_and_bob(extra: &[&str]) -> (World, usize, usize) {
    let mut w = World::new(extra);
    let a = w.connect("alice", "127.0.0.1:1000", 3);
    w.account(a, "alice");
    let b = w.connect("bob", "127.0.0.2:1000", 3);
    has(&join(&mut w, a, "#r"), "RoomInfo");
    has(&join(&mut w, b, "#r"), "RoomInfo");
    w.take(a);
    (w, a, b)
}
