//! Protocol version 3 identity and exactly-once sending over the real
//! daemon: the modes, guests shown with `~`, versions 1 and 2 as guests,
//! the nick claim, several sessions of one account (join, leave, attach,
//! whisper, limit), session takeover and kept keys, SAY_RESULT for each
//! outcome with deduplication after a reconnect, REFRESH and expiry,
//! and the key reloaded on SIGHUP (version 3 in a cluster:
//! tests/cluster_identity.rs).
//!
//! Tokens are minted with the library's `mint` from an HS256 secret file
//! each test writes.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::v3::{expect_fatal, hello3, login, send3, welcome};
use common::{assert_error, Client, Daemon, Reply};
use muxchat::codec::v3::{code as v3code, ClientV3, Secret, ServerV3};
use muxchat::codec::{code, ClientMessage, ErrorCode, ServerMessage};
use muxchat::server::identity::mint::{sign_with, MintClaims, SigningKey};
use muxchat::server::identity::now_unix_ms;

const QUIET: Duration = Duration::from_millis(300);

/// An HS256 secret file in a fresh directory, its path.
fn secret(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muxchat-identity-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("hs.key");
    std::fs::write(&f, text).unwrap();
    f
}

const SECRET: &str = "the identity tests share this secret with the daemon\n";

struct Auth {
    key: PathBuf,
}

impl Auth {
    fn new(name: &str) -> Auth {
        Auth {
            key: secret(name, SECRET),
        }
    }
    fn arg(&self) -> &str {
        self.key.to_str().unwrap()
    }
    /// A token for `sub`, valid an hour, with `edit` applied to its claims.
    fn token_with(&self, sub: &str, edit: impl FnOnce(&mut MintClaims)) -> String {
        let mut c = MintClaims {
            sub: sub.into(),
            exp: now_unix_ms() / 1000 + 3600,
            ..MintClaims::default()
        };
        edit(&mut c);
        sign_with(&SigningKey::load(&self.key).unwrap(), &c).unwrap()
    }
    fn token(&self, sub: &str) -> String {
        self.token_with(sub, |_| {})
    }
}

/// SAY_RESULT: (msg_id, room, epoch, seq, error).
#[track_caller]
fn say_result(c: &mut Client) -> (u64, String, u64, u64, u16) {
    let r = c.recv_code(v3code::SAY_RESULT);
    match ServerV3::decode(r.code, &r.payload).unwrap() {
        ServerV3::SayResult {
            msg_id,
            room,
            epoch,
            seq,
            error,
        } => (msg_id, room.into(), epoch, seq, error),
        other => panic!("{other:?}"),
    }
}

fn say3(c: &mut Client, room: &str, text: &str, msg_id: u64) {
    send3(c, &ClientV3::Say { room, text, msg_id });
}

#[track_caller]
fn joined(r: &Reply) -> (String, String) {
    match r.msg() {
        ServerMessage::Joined { room, nick } => (room.into(), nick.into()),
        other => panic!("expected JOINED, got {other:?}"),
    }
}

#[track_caller]
fn left(r: &Reply) -> (String, String, String) {
    match r.msg() {
        ServerMessage::Left { room, nick, reason } => (room.into(), nick.into(), reason.into()),
        other => panic!("expected LEFT, got {other:?}"),
    }
}

/// JOINED then ROOM_STATE for `room` (a version-2 or -3 session).
#[track_caller]
fn expect_joined_state(c: &mut Client, room: &str, nick: &str) {
    assert_eq!(joined(&c.recv()), (room.into(), nick.into()));
    assert_eq!(c.recv().code, code::ROOM_STATE);
    assert_eq!(
        c.recv().code,
        v3code::ROOM_INFO,
        "ROOM_INFO follows ROOM_STATE"
    );
}

/// Skips to the ROOM_STATE of a version-3 session's JOIN and takes the
/// ROOM_INFO that follows it.
#[track_caller]
fn room_state(c: &mut Client) {
    c.recv_code(code::ROOM_STATE);
    assert_eq!(
        c.recv().code,
        v3code::ROOM_INFO,
        "ROOM_INFO follows ROOM_STATE"
    );
}

#[test]
fn mode_off_takes_no_tokens_and_shows_no_tilde() {
    let d = Daemon::start(&[]);
    let (_c, w) = login(&d, "bob", "", "");
    assert_eq!(
        (w.nick.as_str(), w.account.as_str(), w.role),
        ("bob", "", 0)
    );
    assert_eq!(w.key.len(), 32);
    assert!(w
        .key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(w.exp_ms, 0);
    let mut c = d.connect();
    hello3(&mut c, "carol", "a.b.c", "");
    expect_fatal(&mut c, ErrorCode::AuthFailed, code::HELLO);
    // Version 2 unchanged.
    let _v2 = d.register("dave");
}

#[test]
fn optional_mode_guests_carry_a_tilde_and_bad_tokens_are_fatal() {
    let auth = Auth::new("optional");
    let d = Daemon::start(&["--auth-key", auth.arg()]);
    let (_g, w) = login(&d, "bob", "", "");
    assert_eq!((w.nick.as_str(), w.role), ("~bob", 0));
    // Versions 1 and 2 are guests.
    let mut v2 = d.connect();
    v2.send(&ClientMessage::Hello {
        version: 2,
        nick: "carol",
    });
    match v2.recv().msg() {
        ServerMessage::Welcome { nick, .. } => assert_eq!(nick, "~carol"),
        other => panic!("{other:?}"),
    }
    // `~` is not a nick a client may ask for.
    let mut c = d.connect();
    hello3(&mut c, "~eve", "", "");
    c.expect_error(ErrorCode::BadNick, code::HELLO);
    // An account: its sub, role 1, its exp.
    let tok = auth.token("alice");
    let (_a, w) = login(&d, "", &tok, "");
    assert_eq!(
        (w.nick.as_str(), w.account.as_str(), w.role),
        ("alice", "alice", 1)
    );
    assert!(w.exp_ms > now_unix_ms());
    let (_root, w) = login(&d, "", &auth.token_with("root", |c| c.admin = true), "");
    assert_eq!(w.role, 2);
    // Another secret's token, and an expired one: fatal, never a guest.
    let other = secret(
        "optional-other",
        "a secret the daemon does not know at all\n",
    );
    let bad = sign_with(
        &SigningKey::load(&other).unwrap(),
        &MintClaims {
            sub: "mallory".into(),
            exp: now_unix_ms() / 1000 + 3600,
            ..MintClaims::default()
        },
    )
    .unwrap();
    let mut c = d.connect();
    hello3(&mut c, "", &bad, "");
    expect_fatal(&mut c, ErrorCode::AuthFailed, code::HELLO);
    let huge = "x".repeat(9000);
    let mut c = d.connect();
    hello3(&mut c, "", &huge, "");
    expect_fatal(&mut c, ErrorCode::AuthFailed, code::HELLO);
    let old = auth.token_with("olga", |c| c.exp = now_unix_ms() / 1000 - 3600);
    let mut c = d.connect();
    hello3(&mut c, "", &old, "");
    expect_fatal(&mut c, ErrorCode::AuthFailed, code::HELLO);
    // A guest whispers a guest by its shown nick.
    let (mut g1, _) = login(&d, "gina", "", "");
    let (mut g2, _) = login(&d, "hal", "", "");
    g1.send(&ClientMessage::Whisper {
        nick: "~hal",
        text: "hi",
    });
    match g2.recv().msg() {
        ServerMessage::WhisperFrom { from, text } => assert_eq!((from, text), ("~gina", "hi")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn required_mode_refuses_every_hello_without_a_token() {
    let auth = Auth::new("required");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--auth", "required"]);
    for version in [1u8, 2] {
        let mut c = d.connect();
        c.send(&ClientMessage::Hello { version, nick: "v" });
        expect_fatal(&mut c, ErrorCode::AuthRequired, code::HELLO);
    }
    let mut c = d.connect();
    hello3(&mut c, "v", "", "");
    expect_fatal(&mut c, ErrorCode::AuthRequired, code::HELLO);
    let (_a, w) = login(&d, "alice", &auth.token("alice"), "");
    assert_eq!(w.account, "alice");
}

#[test]
fn an_accounts_nick_is_its_claim() {
    let auth = Auth::new("claim");
    let d = Daemon::start(&["--auth-key", auth.arg()]);
    let tok = auth.token_with("a-1", |c| c.nick = Some("Alice".into()));
    let mut c = d.connect();
    hello3(&mut c, "bob", &tok, "");
    c.expect_error(ErrorCode::BadNick, code::HELLO);
    hello3(&mut c, "alice", &tok, "");
    let w = welcome(&mut c);
    assert_eq!((w.nick.as_str(), w.account.as_str()), ("Alice", "a-1"));
    c.send(&ClientMessage::Nick { nick: "other" });
    c.expect_error(ErrorCode::NotAllowed, code::NICK);
    // Another account claiming the nick held now.
    let tok2 = auth.token_with("a-2", |c| c.nick = Some("alice".into()));
    let mut c2 = d.connect();
    hello3(&mut c2, "", &tok2, "");
    expect_fatal(&mut c2, ErrorCode::NickInUse, code::HELLO);
}

#[test]
fn an_accounts_sessions_share_its_rooms() {
    let auth = Auth::new("several");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--max-sessions-per-account", "3"]);
    let tok = auth.token("alice");
    let (mut a1, _) = login(&d, "", &tok, "");
    let (mut a2, _) = login(&d, "", &tok, "");
    let (mut bob, _) = login(&d, "", &auth.token("bob"), "");
    bob.join("#r");
    room_state(&mut bob);
    // JOIN from one: each session gets JOINED and ROOM_STATE, bob one JOINED.
    a1.send(&ClientMessage::Join { room: "#r" });
    expect_joined_state(&mut a1, "#r", "alice");
    expect_joined_state(&mut a2, "#r", "alice");
    assert_eq!(joined(&bob.recv()), ("#r".into(), "alice".into()));
    bob.expect_silence(QUIET);
    // The room's traffic reaches each session.
    say3(&mut bob, "#r", "hello", 1);
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.recv_code(code::MESSAGE).code, code::MESSAGE);
    }
    // The account is listed once.
    bob.send(&ClientMessage::ListUsers { room: "#r" });
    match bob.recv_code(code::USER_LIST).msg() {
        ServerMessage::UserList { mut nicks, .. } => {
            nicks.sort();
            // bob made the room, so he is its operator (`@` in version 3).
            assert_eq!(nicks, ["@bob", "alice"]);
        }
        other => panic!("{other:?}"),
    }
    // A third session is attached: JOINED and ROOM_STATE right after
    // WELCOME, nobody else told.
    let (mut a3, _) = login(&d, "", &tok, "");
    expect_joined_state(&mut a3, "#r", "alice");
    // The limit: a fourth is fatal SESSION_LIMIT.
    let mut a4 = d.connect();
    hello3(&mut a4, "", &tok, "");
    expect_fatal(&mut a4, ErrorCode::SessionLimit, code::HELLO);
    // Whispers reach each session; the sender's others see WHISPER_SENT.
    bob.send(&ClientMessage::Whisper {
        nick: "alice",
        text: "psst",
    });
    for c in [&mut a1, &mut a2, &mut a3] {
        assert_eq!(c.recv_code(code::WHISPER_FROM).code, code::WHISPER_FROM);
    }
    a1.send(&ClientMessage::Whisper {
        nick: "bob",
        text: "back",
    });
    bob.recv_code(code::WHISPER_FROM);
    for c in [&mut a2, &mut a3] {
        let r = c.recv_code(v3code::WHISPER_SENT);
        match ServerV3::decode(r.code, &r.payload).unwrap() {
            ServerV3::WhisperSent { to, text } => assert_eq!((to, text), ("bob", "back")),
            other => panic!("{other:?}"),
        }
    }
    // A session that is not the last ends: nobody is told.
    a3.send(&ClientMessage::Quit { reason: "bye" });
    a3.expect_closed();
    bob.expect_silence(QUIET);
    a1.expect_silence(Duration::ZERO);
    // LEAVE from one: the account leaves, LEFT to each session and bob.
    a2.send(&ClientMessage::Leave { room: "#r" });
    for c in [&mut a1, &mut a2, &mut bob] {
        assert_eq!(left(&c.recv()).1, "alice");
    }
    // The last session ends: the account leaves with its reason.
    a1.send(&ClientMessage::Join { room: "#r" });
    expect_joined_state(&mut a1, "#r", "alice");
    expect_joined_state(&mut a2, "#r", "alice");
    bob.recv();
    a1.send(&ClientMessage::Quit { reason: "one" });
    a1.expect_closed();
    bob.expect_silence(QUIET);
    a2.send(&ClientMessage::Quit { reason: "last" });
    assert_eq!(
        left(&bob.recv()),
        ("#r".into(), "alice".into(), "last".into())
    );
}

#[test]
fn the_tokens_rooms_decide_which_rooms_it_may_join() {
    let auth = Auth::new("rooms");
    let d = Daemon::start(&["--auth-key", auth.arg()]);
    let tok = auth.token_with("alice", |c| c.rooms = Some(vec!["#team*".into()]));
    let (mut a, _) = login(&d, "", &tok, "");
    a.send(&ClientMessage::Join { room: "#other" });
    a.expect_error(ErrorCode::NotAllowed, code::JOIN);
    a.send(&ClientMessage::Join { room: "#Team-a" });
    expect_joined_state(&mut a, "#Team-a", "alice");
}

#[test]
fn a_session_key_takes_a_session_over_or_is_kept_a_while() {
    let auth = Auth::new("takeover");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--session-key-ttl-ms", "1500"]);
    let tok = auth.token("alice");
    let (mut old, w) = login(&d, "", &tok, "");
    old.join("#r");
    room_state(&mut old);
    let (mut bob, _) = login(&d, "", &auth.token("bob"), "");
    bob.join("#r");
    room_state(&mut bob);
    old.recv_code(code::JOINED);
    // A new connection with the key: the old one gets BYE and closes, the
    // new one keeps nick, rooms and key; bob sees nothing.
    let (mut new, w2) = login(&d, "", &tok, &w.key);
    assert_eq!(
        (w2.key.as_str(), w2.nick.as_str()),
        (w.key.as_str(), "alice")
    );
    expect_joined_state(&mut new, "#r", "alice");
    match old.recv().msg() {
        ServerMessage::Bye { reason } => assert_eq!(reason, "replaced by a new connection"),
        other => panic!("expected BYE, got {other:?}"),
    }
    old.expect_closed();
    bob.expect_silence(QUIET);
    say3(&mut bob, "#r", "still there?", 1);
    new.recv_code(code::MESSAGE);
    // A guest's key works the same way.
    let (_g, gw) = login(&d, "gus", "", "");
    let (_g2, gw2) = login(&d, "gus", "", &gw.key);
    assert_eq!((gw2.key, gw2.nick), (gw.key.clone(), "~gus".into()));
    // After NICK, the key follows the guest's new nick.
    let (mut n, nw) = login(&d, "nell", "", "");
    n.send(&ClientMessage::Nick { nick: "nora" });
    n.recv_code(code::NICK_CHANGED);
    let (_n2, nw2) = login(&d, "nora", "", &nw.key);
    assert_eq!((nw2.key, nw2.nick), (nw.key.clone(), "~nora".into()));
    // Another account's key is ignored: a new key.
    let (_c, cw) = login(&d, "", &auth.token("carol"), &w.key);
    assert_ne!(cw.key, w.key);
    // Ended (the client closed): the key is kept for the TTL.
    drop(new);
    std::thread::sleep(Duration::from_millis(200));
    let (again, aw) = login(&d, "", &tok, &w.key);
    assert_eq!(aw.key, w.key);
    drop(again);
    // Past the TTL: a new key.
    let d = Daemon::start(&["--auth-key", auth.arg(), "--session-key-ttl-ms", "200"]);
    let (first, fw) = login(&d, "", &tok, "");
    drop(first);
    std::thread::sleep(Duration::from_millis(800));
    let (_late, lw) = login(&d, "", &tok, &fw.key);
    assert_ne!(lw.key, fw.key);
}

#[test]
fn max_kept_session_keys_forgets_the_key_that_ended_first() {
    let auth = Auth::new("kept");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--max-kept-session-keys", "1"]);
    let (a, aw) = login(&d, "", &auth.token("alice"), "");
    let (b, bw) = login(&d, "", &auth.token("bob"), "");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    // Only one ended key is kept: bob's, the newer; alice's went with it.
    let (_a2, aw2) = login(&d, "", &auth.token("alice"), &aw.key);
    assert_ne!(aw2.key, aw.key);
    let (_b2, bw2) = login(&d, "", &auth.token("bob"), &bw.key);
    assert_eq!(bw2.key, bw.key);
}

#[test]
fn say_result_for_every_outcome_and_a_resend_is_not_delivered_twice() {
    let auth = Auth::new("dedup");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--max-text", "10"]);
    let tok = auth.token("alice");
    let (mut a, w) = login(&d, "", &tok, "");
    let (mut bob, _) = login(&d, "", &auth.token("bob"), "");
    bob.join("#r");
    room_state(&mut bob);
    // Refusals: the room as sent, epoch = seq = 0, no ERROR.
    let nr = ErrorCode::NotInRoom as u16;
    say3(&mut a, "#r", "hi", 1);
    assert_eq!(say_result(&mut a), (1, "#r".into(), 0, 0, nr));
    say3(&mut a, "nope", "hi", 2);
    assert_eq!(say_result(&mut a).4, ErrorCode::BadRoom as u16);
    a.join("#r");
    room_state(&mut a);
    bob.recv_code(code::JOINED);
    say3(&mut a, "#r", "", 3);
    assert_eq!(say_result(&mut a).4, ErrorCode::Malformed as u16);
    say3(&mut a, "#r", "far too long a text", 4);
    assert_eq!(say_result(&mut a).4, ErrorCode::TextTooLong as u16);
    say3(&mut a, "#r", "zero", 0);
    assert_eq!(
        say_result(&mut a),
        (0, "#r".into(), 0, 0, ErrorCode::Malformed as u16)
    );
    // Trailing bytes: SAY_RESULT(MALFORMED); no readable msg_id: ERROR.
    let mut f = Vec::new();
    ClientV3::Say {
        room: "#r",
        text: "x",
        msg_id: 5,
    }
    .encode(&mut f);
    let mut payload = f[8..].to_vec();
    payload.push(0);
    a.send_raw(&common::raw_frame(code::SAY, 0, &payload));
    assert_eq!(
        say_result(&mut a),
        (5, "#r".into(), 0, 0, ErrorCode::Malformed as u16)
    );
    a.send_raw(&common::raw_frame(code::SAY, 0, &payload[..6]));
    a.expect_error(ErrorCode::Malformed, code::SAY);
    a.expect_silence(QUIET);
    // A refused msg_id is not remembered: sent again, it is taken.
    say3(&mut a, "#r", "hi", 1);
    let (id, room, epoch, seq, err) = say_result(&mut a);
    assert_eq!((id, room.as_str(), err), (1, "#r", 0));
    assert!(epoch != 0 && seq != 0);
    bob.recv_code(code::MESSAGE);
    // The connection drops; the client comes back with its key and sends
    // it again: the original outcome, delivered once.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let (mut a, w2) = login(&d, "", &tok, &w.key);
    assert_eq!(w2.key, w.key);
    a.join("#r");
    room_state(&mut a);
    say3(&mut a, "#r", "hi again", 1);
    assert_eq!(say_result(&mut a), (1, "#r".into(), epoch, seq, 0));
    let stats = a.stats();
    assert_eq!(stats.get("deduplicated_says"), Some(&1), "{stats:?}");
    // bob saw the JOINED of the return only, no second MESSAGE.
    assert_eq!(bob.recv().code, code::LEFT);
    assert_eq!(bob.recv().code, code::JOINED);
    bob.expect_silence(QUIET);
}

#[test]
fn rate_limited_say_gets_its_say_result() {
    let auth = Auth::new("rate");
    let d = Daemon::start(&["--auth-key", auth.arg(), "--rate", "1", "--burst", "3"]);
    let (mut a, _) = login(&d, "alice", "", "");
    a.join("#r");
    room_state(&mut a);
    for id in 1..=6 {
        say3(&mut a, "#r", "x", id);
    }
    let mut limited = 0;
    for _ in 1..=6 {
        let (_, room, _, _, err) = say_result(&mut a);
        assert_eq!(room, "#r");
        if err == ErrorCode::RateLimited as u16 {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited}");
}

#[test]
fn refresh_renews_narrows_and_expiry_ends_the_session() {
    let auth = Auth::new("refresh");
    let d = Daemon::start(&["--auth-key", auth.arg()]);
    let (mut a, _) = login(&d, "", &auth.token("alice"), "");
    let (mut bob, _) = login(&d, "", &auth.token("bob"), "");
    for room in ["#keep", "#drop"] {
        a.join(room);
        room_state(&mut a);
    }
    bob.join("#drop");
    room_state(&mut bob);
    let narrower = auth.token_with("alice", |c| {
        c.rooms = Some(vec!["#keep".into()]);
        c.exp += 60;
    });
    send3(
        &mut a,
        &ClientV3::Refresh {
            token: Secret(&narrower),
        },
    );
    let r = a.recv_code(code::LEFT);
    assert_eq!(
        left(&r),
        ("#drop".into(), "alice".into(), "not allowed".into())
    );
    assert_eq!(left(&bob.recv()).2, "not allowed");
    let r = a.recv();
    match ServerV3::decode(r.code, &r.payload).unwrap() {
        ServerV3::Refreshed { token_exp_ms } => assert!(token_exp_ms > now_unix_ms()),
        other => panic!("{other:?}"),
    }
    a.send(&ClientMessage::Join { room: "#drop" });
    a.expect_error(ErrorCode::NotAllowed, code::JOIN);
    // A guest has nothing to refresh; versions 1 and 2 do not have 113.
    let (mut g, _) = login(&d, "gus", "", "");
    send3(
        &mut g,
        &ClientV3::Refresh {
            token: Secret(&narrower),
        },
    );
    g.expect_error(ErrorCode::NotAllowed, v3code::REFRESH);
    let mut v2 = d.connect();
    v2.send(&ClientMessage::Hello {
        version: 2,
        nick: "vic",
    });
    v2.recv_code(code::WELCOME);
    send3(
        &mut v2,
        &ClientV3::Refresh {
            token: Secret(&narrower),
        },
    );
    v2.expect_error(ErrorCode::UnknownCode, v3code::REFRESH);
    // Another account's token: fatal.
    send3(
        &mut a,
        &ClientV3::Refresh {
            token: Secret(&auth.token("bob")),
        },
    );
    expect_fatal(&mut a, ErrorCode::AuthFailed, v3code::REFRESH);
    // A token that ran out 59 s ago is still good for a second (the 60 s
    // leeway), then the session ends with TOKEN_EXPIRED.
    let short = auth.token_with("sam", |c| c.exp = now_unix_ms() / 1000 - 58);
    let (mut s, w) = login(&d, "", &short, "");
    assert_eq!(w.account, "sam");
    let r = s.recv();
    assert_error(&r, ErrorCode::TokenExpired, 0);
    s.expect_closed();
}

#[test]
fn sighup_reloads_the_key_and_keeps_it_when_the_file_fails() {
    let auth = Auth::new("reload");
    let d = Daemon::start(&["--auth-key", auth.arg()]);
    let first = auth.token("alice");
    let _a = login(&d, "", &first, "");
    std::fs::write(
        &auth.key,
        "a second secret, after the rotation, for the daemon\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let fresh = auth.token("bob");
    common::wait_until("the new key", Duration::from_secs(10), || {
        let mut c = d.connect();
        hello3(&mut c, "", &fresh, "");
        c.recv().code == code::WELCOME
    });
    // A file that does not load keeps the running key.
    std::fs::write(&auth.key, "").unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let (_c, w) = login(&d, "", &fresh, "");
    assert_eq!(w.account, "bob");
}
