//! `muxload --token-key`: accounts, protocol version 3 and the
//! exactly-once check for senders, against the real daemon.
//!
//! The runs against the daemon need its version-3 wiring (accounts,
//! session keys, SAY_RESULT and deduplication); the fake server checks
//! muxload's own bookkeeping.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::muxload::{field, muxload};
use common::Daemon;

/// An HS256 secret file in a fresh directory.
fn secret(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxload-v3-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("hs.key");
    std::fs::write(&f, "muxload and muxchatd share this secret\n").unwrap();
    f
}

#[test]
fn every_accepted_msg_id_reaches_every_member_once_across_drops() {
    let key = secret("exactly");
    let key = key.to_str().unwrap();
    // Accounts required: a guest (a v2 HELLO) could not get through.
    let d = Daemon::start(&["--auth-key", key, "--auth", "required", "--history", "5000"]);
    let args = [
        "--token-key",
        key,
        "--clients",
        "40",
        "--rooms",
        "2",
        "--publishers",
        "4",
        // Fast enough that a drop catches SAYs in flight (to resend).
        "--rate",
        "1000",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--reconnect-every",
        "0.5",
        "--drain-timeout",
        "20",
    ];
    let out = muxload(d.addr, &args);
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = "\"exactly_once\":";
    assert!(!json.contains("\"exactly_once\":null"), "{json}");
    let accepted = field(&json, x, "accepted");
    let published = field(&json, "", "published");
    // 4 publishers x 1000/s x 2 s, every one answered and taken.
    assert!(accepted >= 4000.0, "{json}");
    assert_eq!(accepted, published, "every SAY answered: {json}");
    // Each room: 20 members, all still connected at the end.
    assert_eq!(field(&json, x, "expected"), accepted * 20.0, "{json}");
    assert_eq!(field(&json, x, "missing"), 0.0, "{json}");
    assert_eq!(field(&json, x, "duplicates"), 0.0, "{json}");
    // Publishers dropped with SAYs in flight and sent them again; some of
    // those the server had taken already.
    let drops = field(&json, "\"resume\":", "reconnects");
    assert!(drops >= 80.0, "{json}");
    let resent = field(&json, x, "resent");
    let dedup = field(&json, x, "deduplicated");
    assert!(resent > 0.0, "{json}");
    assert!(dedup <= resent, "{json}");
    assert_eq!(field(&json, "\"loss\":", "lost"), 0.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "duplicates"), 0.0, "{json}");
    // The human summary says the same in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .arg("--connect")
        .arg(d.addr.to_string())
        .args(["--quiet"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  exactly    ok: "), "{text}");
    assert!(text.contains(" 0 missing, 0 duplicates; "), "{text}");
}

#[test]
fn tokens_minted_before_setup_are_one_per_connection_and_valid() {
    let key = secret("minted");
    let key = key.to_str().unwrap();
    // Accounts optional: the watcher below asks STATS as a guest.
    let d = Daemon::start(&["--auth-key", key]);
    let args = [
        "--token-key",
        key,
        "--clients",
        "30",
        "--rooms",
        "30",
        "--publishers",
        "0",
        "--threads",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0",
    ];
    let out = muxload(d.addr, &args);
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&json, "", "ready"), 30.0, "{json}");
    // Minting is reported apart from setup.
    assert!(json.contains("\"mint_s\":"), "{json}");
    assert!(field(&json, "", "mint_s") >= 0.0, "{json}");
    // Every connection signed in with a token of its own: 30 verified,
    // no takeovers (a token shared would sign one account in twice).
    let mut watcher = d.connect();
    watcher.send(&muxchat::codec::ClientMessage::Hello {
        version: 1,
        nick: "watcher",
    });
    watcher.recv_code(muxchat::codec::code::WELCOME);
    let stats = watcher.stats();
    assert_eq!(stats["logins_account"], 30, "{stats:?}");
    assert_eq!(stats["takeovers"], 0, "{stats:?}");
    assert_eq!(stats["token_verifications"], 30, "{stats:?}");
    assert_eq!(stats["logins_failed"], 0, "{stats:?}");
}

#[test]
fn a_token_the_daemon_does_not_trust_fails_the_setup_clearly() {
    let d = Daemon::start(&["--auth-key", secret("trusted").to_str().unwrap()]);
    let other = std::env::temp_dir().join(format!("muxload-v3-{}-other", std::process::id()));
    std::fs::write(&other, "another secret altogether, not the daemon's\n").unwrap();
    let out = muxload(
        d.addr,
        &[
            "--token-key",
            other.to_str().unwrap(),
            "--clients",
            "2",
            "--rate",
            "10",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("AUTH_FAILED"), "{all}");
}

#[test]
fn a_bad_token_key_is_one_line_and_redis_has_no_accounts() {
    let missing = std::env::temp_dir().join("muxload-v3-no-such-key");
    let out = muxload(
        "127.0.0.1:1",
        &[
            "--token-key",
            missing.to_str().unwrap(),
            "--clients",
            "1",
            "--rate",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_muxload"))
        .args(["--target", "redis://127.0.0.1:1", "--token-key"])
        .arg(secret("redis"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-key"));
}

// ----- the exactly-once bookkeeping against a fake version-3 server ------

/// A small version-3 server in the test (threads, one lock): enough of the
/// contract for muxload (HELLO v3 with session keys kept across
/// connections and the takeover of a session still open, JOIN,
/// ROOM_STATE, SAY v3 with deduplication, HISTORY up to the session's
/// ROOM_STATE last_seq, PING). It withholds the SAY_RESULT of every 5th
/// new SAY (the message itself is delivered), as if the answer were lost
/// in a drop: the publisher must keep it, send it again after its next
/// reconnect, and count the server's deduplication, which this server
/// counts too.
mod fake {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::thread;

    use muxchat::codec::v3::{ClientV3, Secret, ServerV3};
    use muxchat::codec::{code, ClientMessage, FrameReader, ServerMessage};

    const EPOCH: u64 = 1;

    #[derive(Default)]
    struct Room {
        seq: u64,
        log: Vec<(u64, String, String)>,
        members: Vec<usize>,
    }

    #[derive(Default)]
    pub struct State {
        rooms: HashMap<String, Room>,
        conns: HashMap<usize, TcpStream>,
        /// (session key, msg_id) -> seq of the accepted SAY.
        taken: HashMap<(String, u64), u64>,
        keys: u64,
        /// SAYs answered with a remembered msg_id.
        pub deduplicated: u64,
        /// The distinct (session key, msg_id)s deduplicated.
        pub dedup_ids: std::collections::HashSet<(String, u64)>,
        /// SAY_RESULTs withheld.
        pub withheld: u64,
        /// Session key -> the connection holding it.
        holder: HashMap<String, usize>,
        /// Connections taken over by a HELLO with their key: nothing more
        /// of theirs is handled.
        replaced: std::collections::HashSet<usize>,
    }

    impl State {
        fn send(&mut self, conn: usize, frame: &[u8]) {
            if let Some(s) = self.conns.get_mut(&conn) {
                // A member whose connection died: its thread removes it.
                let _ = s.write_all(frame);
            }
        }
    }

    pub fn start() -> (String, Arc<Mutex<State>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        thread::spawn(move || {
            for (id, s) in l.incoming().enumerate() {
                let Ok(s) = s else { continue };
                let st = st.clone();
                thread::spawn(move || serve(id, s, st));
            }
        });
        (addr, state)
    }

    /// The `sub` claim of a compact JWT (base64url JSON, no padding).
    fn sub_of(token: &str) -> String {
        let part = token.split('.').nth(1).unwrap_or("");
        let mut bits = 0u32;
        let mut n = 0;
        let mut bytes = Vec::new();
        for c in part.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => continue,
            };
            bits = (bits << 6) | u32::from(v);
            n += 6;
            if n >= 8 {
                n -= 8;
                bytes.push((bits >> n) as u8);
            }
        }
        let json = String::from_utf8_lossy(&bytes);
        let from = json.find("\"sub\":\"").expect("sub claim") + 7;
        json[from..].split('"').next().unwrap().to_string()
    }

    fn frame3(m: &ServerV3<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v);
        v
    }

    fn frame(m: &ServerMessage<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v);
        v
    }

    fn serve(id: usize, mut s: TcpStream, state: Arc<Mutex<State>>) {
        let _ = s.set_nodelay(true);
        state
            .lock()
            .unwrap()
            .conns
            .insert(id, s.try_clone().unwrap());
        let mut r = FrameReader::new(1 << 20);
        let (mut nick, mut key) = (String::new(), String::new());
        // Each room's last_seq in this session's ROOM_STATE: HISTORY never
        // goes past it (what came after reached the session live).
        let mut joined_at: HashMap<String, u64> = HashMap::new();
        let mut buf = vec![0u8; 64 * 1024];
        'conn: loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            r.extend(&buf[..n]);
            while let Ok(Some(f)) = r.next_frame() {
                let mut st = state.lock().unwrap();
                if st.replaced.contains(&id) {
                    break 'conn;
                }
                match f.code {
                    code::HELLO => {
                        let Ok(ClientV3::Hello {
                            token, session_key, ..
                        }) = ClientV3::decode(f.code, f.payload)
                        else {
                            break 'conn;
                        };
                        nick = sub_of(token.0);
                        key = if session_key.0.is_empty() {
                            st.keys += 1;
                            format!("{:032x}", st.keys)
                        } else {
                            session_key.0.to_string()
                        };
                        // The contract's takeover: the old connection is
                        // closed, so what it sent that was not read yet is
                        // never taken. Without it, this thread-per-connection
                        // server could take an old SAY after the new
                        // session's ROOM_STATE, and muxload could not tell
                        // the resend's deduplication from a new seq.
                        if let Some(old) = st.holder.insert(key.clone(), id) {
                            if old != id && st.conns.contains_key(&old) {
                                st.replaced.insert(old);
                                st.send(old, &frame(&ServerMessage::Bye { reason: "replaced" }));
                                if let Some(o) = st.conns.get(&old) {
                                    let _ = o.shutdown(std::net::Shutdown::Both);
                                }
                                for r in st.rooms.values_mut() {
                                    r.members.retain(|&m| m != old);
                                }
                            }
                        }
                        let w = frame3(&ServerV3::Welcome {
                            version: 3,
                            nick: &nick,
                            server: "fake v3",
                            heartbeat_ms: 60_000,
                            max_payload: 65_536,
                            account: &nick,
                            role: 1,
                            session_key: Secret(&key),
                            token_exp_ms: u64::MAX / 2,
                        });
                        st.send(id, &w);
                    }
                    code::JOIN => {
                        let Ok(ClientMessage::Join { room }) =
                            ClientMessage::decode(f.code, f.payload)
                        else {
                            break 'conn;
                        };
                        let room = room.to_string();
                        let j = frame(&ServerMessage::Joined {
                            room: &room,
                            nick: &nick,
                        });
                        let r = st.rooms.entry(room.clone()).or_default();
                        r.members.push(id);
                        let (members, seq) = (r.members.clone(), r.seq);
                        joined_at.insert(room.clone(), seq);
                        for m in members {
                            st.send(m, &j);
                        }
                        let rs = frame(&ServerMessage::RoomState {
                            room: &room,
                            epoch: EPOCH,
                            last_seq: seq,
                            first_held: seq.min(1),
                        });
                        st.send(id, &rs);
                    }
                    code::SAY => {
                        let Ok(ClientV3::Say { room, text, msg_id }) =
                            ClientV3::decode(f.code, f.payload)
                        else {
                            break 'conn;
                        };
                        let result = |seq| {
                            frame3(&ServerV3::SayResult {
                                msg_id,
                                room,
                                epoch: EPOCH,
                                seq,
                                error: 0,
                            })
                        };
                        if let Some(&seq) = st.taken.get(&(key.clone(), msg_id)) {
                            st.deduplicated += 1;
                            st.dedup_ids.insert((key.clone(), msg_id));
                            st.send(id, &result(seq));
                            continue;
                        }
                        let r = st.rooms.get_mut(room).expect("SAY in a joined room");
                        r.seq += 1;
                        let seq = r.seq;
                        r.log.push((seq, nick.clone(), text.to_string()));
                        let members = r.members.clone();
                        st.taken.insert((key.clone(), msg_id), seq);
                        let m = frame(&ServerMessage::Message {
                            room,
                            seq,
                            from: &nick,
                            text,
                        });
                        for member in members {
                            st.send(member, &m);
                        }
                        if seq % 5 == 0 {
                            st.withheld += 1;
                        } else {
                            st.send(id, &result(seq));
                        }
                    }
                    code::HISTORY => {
                        let Ok(ClientMessage::History {
                            room, after_seq, ..
                        }) = ClientMessage::decode(f.code, f.payload)
                        else {
                            break 'conn;
                        };
                        let mut out = Vec::new();
                        let r = &st.rooms[room];
                        let newest = joined_at[room];
                        let wanted = |e: &&(u64, String, String)| e.0 > after_seq && e.0 <= newest;
                        for (seq, from, text) in r.log.iter().filter(wanted) {
                            out.extend(frame(&ServerMessage::HistoryMessage {
                                room,
                                seq: *seq,
                                time_ms: 1,
                                from,
                                text,
                            }));
                        }
                        out.extend(frame(&ServerMessage::HistoryEnd {
                            room,
                            epoch: EPOCH,
                            newest,
                            status: 0,
                        }));
                        st.send(id, &out);
                    }
                    code::PING => {
                        if let Ok(ClientMessage::Ping { token }) =
                            ClientMessage::decode(f.code, f.payload)
                        {
                            st.send(id, &frame(&ServerMessage::Pong { token }));
                        }
                    }
                    code::QUIT => st.send(id, &frame(&ServerMessage::Bye { reason: "" })),
                    _ => {}
                }
            }
        }
        let mut st = state.lock().unwrap();
        st.conns.remove(&id);
        st.replaced.remove(&id);
        for r in st.rooms.values_mut() {
            r.members.retain(|&m| m != id);
        }
    }
}

/// The bookkeeping over a fake version-3 server that withholds some
/// SAY_RESULTs: each withheld SAY is resent after a drop and deduplicated,
/// muxload's `deduplicated` matches the server's own count, and every
/// msg_id reaches every member once.
#[test]
fn resends_after_drops_are_counted_and_deduplicated_exactly_once() {
    let (addr, state) = fake::start();
    let key = secret("fake");
    let out = muxload(
        &addr,
        &[
            "--token-key",
            key.to_str().unwrap(),
            "--clients",
            "12",
            "--rooms",
            "2",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--reconnect-every",
            "0.4",
            "--drain-timeout",
            "20",
        ],
    );
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = "\"exactly_once\":";
    let (dedup_server, dedup_ids, withheld) = {
        let st = state.lock().unwrap();
        (
            st.deduplicated as f64,
            st.dedup_ids.len() as f64,
            st.withheld as f64,
        )
    };
    assert!(withheld > 0.0 && dedup_ids > 0.0, "{json}");
    // muxload counts a msg_id once; the server counts every answer, and
    // one lost in a drop is answered again after the next resend. So the
    // msg_ids the server deduplicated are what muxload must count.
    let dedup = field(&json, x, "deduplicated");
    assert_eq!(
        dedup, dedup_ids,
        "muxload {dedup}, server {dedup_ids} msg_ids in {dedup_server} answers: {json}"
    );
    let resent = field(&json, x, "resent");
    assert!(resent >= dedup_server, "{json}");
    assert_eq!(field(&json, x, "missing"), 0.0, "{json}");
    assert_eq!(field(&json, x, "duplicates"), 0.0, "{json}");
    // What was withheld after a publisher's last drop is delivered but
    // never confirmed: the rest is accepted.
    let accepted = field(&json, x, "accepted");
    let unconfirmed_ids = field(&json, "", "published") - accepted;
    assert!(
        unconfirmed_ids >= 0.0 && unconfirmed_ids <= withheld,
        "{json}"
    );
    assert_eq!(field(&json, x, "expected"), accepted * 6.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "lost"), 0.0, "{json}");
    assert_eq!(field(&json, "\"loss\":", "duplicates"), 0.0, "{json}");
}
