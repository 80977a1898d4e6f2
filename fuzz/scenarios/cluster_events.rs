//! The `cluster_events` fuzz target: a cluster node's side of Redis, on a
//! detached node with real sessions.

use muxchat::codec::{ClientMessage, ServerMessage};

use super::sessions::{read, request, socket_clients, Client};
use super::Bytes;

/// A cluster node's side of Redis driven by arbitrary bytes: a chat with a
/// detached cluster (`Cluster::detached`: no socket, calls recorded as in
/// flight) and four real sessions over socket pairs, registered and, for
/// two of them, members of a positioned room through the very pushes and
/// answers Redis would send. Then the input plays Redis and the clients:
/// room events (MESSAGE, JOINED, LEFT) with seqs in order, jumping,
/// repeating or going back and fields mostly well formed; NICK and WHISPER
/// events; subscribe confirmations (a resubscription fills from the
/// stream); garbage pushes and raw payloads; answers to whatever call is
/// oldest in flight, shaped for it (a fill gets stream entries around the
/// seqs it asked for) or not; client requests; time passing (heartbeats,
/// stalls that take a link down for good); clients leaving. After every
/// step: [`Chat::check_invariants`], the cluster's own bookkeeping
/// (`Chat::check_cluster_invariants`), and every MESSAGE a client
/// receives for a room has a higher seq than the last it got there since
/// it joined.
///
/// Input: a settings byte, then steps of (operation, arguments...).
///
/// [`Chat::check_invariants`]: muxchat::server::chat::Chat::check_invariants
pub fn check(data: &[u8]) {
    use std::collections::HashMap;
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    use muxchat::codec::resp::Value;
    use muxchat::server::chat::Chat;
    use muxchat::server::cluster::Cluster;
    use muxchat::server::config::Config;
    use muxchat::server::sessions::registry::Sessions;
    use muxchat::server::sessions::session::Marks;

    const NODE: &str = "n1";
    const PREFIX: &str = "muxchat:0:";
    const STEPS: usize = 64;
    const NICKS: &[&str] = &["ann", "bob", "cy", "dee"];
    // Room names as local sessions type them; their keys are the folded
    // names. "#c" is a room nobody here is in.
    const ROOMS: &[&str] = &["#a", "#b", "#c"];
    const EPOCH: u64 = 7;
    const TEXTS: &[&str] = &["hi", "", "é ✓", "two\nlines", "x y z"];
    const OTHERS: &[&str] = &["zed", "ann", "", "bad nick!"];

    let mut input = Bytes { rest: data };
    let settings = input.u8();
    let config = Config {
        max_outbuf: [4096, 65536, 1 << 20, 1 << 20][(settings & 3) as usize],
        max_payload: 1024,
        max_text: 256,
        max_rooms: 2,
        presence_limit: if settings & 4 != 0 { 1 } else { 1000 },
        heartbeat: Duration::from_secs(30),
        login_timeout: Duration::from_secs(30),
        history: 16,
        ..Config::default()
    };
    let version = if settings & 8 != 0 { 2 } else { 1 };
    let max_pending = if settings & 16 != 0 { 600 } else { 1 << 20 };
    let mut now = Instant::now();
    let sessions = &mut Sessions::new(Marks::new(&config));
    let mut chat = Chat::new(config, now);
    let poll = mio::Poll::new().expect("a poll instance");
    let registry = poll.registry().try_clone().expect("a registry");
    chat.set_cluster(Cluster::detached(NODE, max_pending, registry));

    let mut clients = socket_clients(&mut chat, sessions, NICKS.len(), now);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut iteration = 0u64;
    // The highest seq "Redis" published per room key: the fuzzed seqs
    // are chosen around it.
    let mut top: HashMap<&str, u64> = HashMap::new();

    fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(b.as_ref().to_vec())
    }
    fn message(channel: &str, payload: &[u8]) -> Value {
        Value::Array(vec![bulk("message"), bulk(channel), bulk(payload)])
    }
    fn room_channel(room: &str) -> String {
        format!("{PREFIX}c:{}", room.to_ascii_lowercase())
    }
    fn live(sessions: &Sessions, c: &Client) -> bool {
        c.id != 0
            && sessions
                .get(c.token)
                .is_some_and(|s| s.id() == c.id && !s.life().is_finished())
    }

    // The client reads what reached it (up to `limit` bytes) and checks
    // the MESSAGE seqs: per room, strictly increasing since the client's
    // own JOINED there.
    fn client_reads(chat: &Chat, sessions: &Sessions, c: &mut Client, limit: usize) {
        let mut buf = [0u8; 4096];
        let mut left = limit;
        while left > 0 {
            let n = buf.len().min(left);
            match c.peer.read(&mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(got) => {
                    left -= got;
                    c.reader.extend(&buf[..got]);
                }
            }
        }
        let own = chat
            .live_member(sessions, c.token, c.id)
            .map(|m| m.nick().to_owned());
        while let Ok(Some(f)) = c.reader.next_frame() {
            let msg = ServerMessage::decode(f.code, f.payload).expect("the server's frames decode");
            match msg {
                // A nick shared with another node's session makes this
                // lenient, never wrong.
                ServerMessage::Joined { room, nick } if own.as_deref() == Some(nick) => {
                    c.seqs.remove(&room.to_ascii_lowercase());
                }
                ServerMessage::Message { room, seq, .. } => {
                    let last = c.seqs.entry(room.to_ascii_lowercase()).or_insert(0);
                    assert!(seq > *last, "seq went from {last} to {seq} in {room}");
                    *last = seq;
                }
                _ => {}
            }
        }
    }

    // A client's bytes reach the daemon, which reads them.
    fn send(
        chat: &mut Chat,
        sessions: &mut Sessions,
        c: &Client,
        bytes: &[u8],
        scratch: &mut [u8],
        it: u64,
        now: Instant,
    ) {
        let _ = (&c.peer).write(bytes);
        if live(sessions, c) {
            read(chat, sessions, c.token, scratch, 64 * 1024, it, now);
        }
    }

    // The end of a loop iteration: reap, flush sessions and links, remove
    // the finished, and read again whoever the store's answers woke.
    fn end_iteration(
        chat: &mut Chat,
        sessions: &mut Sessions,
        clients: &mut [Client],
        scratch: &mut [u8],
        now: Instant,
        iteration: &mut u64,
    ) {
        chat.reap(sessions, now);
        let list = sessions.begin_flush();
        for &t in &list {
            let _ = sessions.flush(t, *iteration, now);
        }
        sessions.end_flush(list);
        chat.flush_links(sessions, now);
        while let Some(t) = sessions.pop_finished() {
            let (s, _) = chat.remove(sessions, t);
            for c in clients.iter_mut() {
                if c.token == t && c.id == s.id() {
                    c.id = 0;
                }
            }
        }
        // The loop reads them in its next iteration.
        *iteration += 1;
        for (t, id) in chat.take_woken() {
            if sessions.get_live(t, id).is_some() {
                read(chat, sessions, t, scratch, 64 * 1024, *iteration, now);
            }
        }
        chat.check_invariants(sessions);
        chat.check_cluster_invariants();
    }

    // Set-up, as Redis would answer: everyone registers; ann and bob join
    // #a (subscribed, then their JOINED events position the room); cy's
    // JOIN of #b waits for its JOINED, which the input may send.
    for (i, nick) in NICKS.iter().enumerate() {
        let mut hello = Vec::new();
        ClientMessage::Hello { version, nick }.encode(&mut hello);
        iteration += 1;
        send(
            &mut chat,
            sessions,
            &clients[i],
            &hello,
            &mut scratch,
            iteration,
            now,
        );
        // A claim's time in the store.
        chat.feed_answer(sessions, bulk("1764547200000000"));
        end_iteration(
            &mut chat,
            sessions,
            &mut clients,
            &mut scratch,
            now,
            &mut iteration,
        );
    }
    for (i, room) in [(0, "#a"), (1, "#a"), (2, "#b")] {
        let mut join = Vec::new();
        ClientMessage::Join { room }.encode(&mut join);
        iteration += 1;
        send(
            &mut chat,
            sessions,
            &clients[i],
            &join,
            &mut scratch,
            iteration,
            now,
        );
    }
    for room in ["#a", "#b"] {
        chat.feed_push(
            sessions,
            Value::Array(vec![
                bulk("subscribe"),
                bulk(room_channel(room)),
                Value::Int(1),
            ]),
        );
    }
    for _ in 0..3 {
        chat.feed_answer(sessions, Value::Int(1));
    }
    for (i, count) in [(0usize, 1), (1, 2)] {
        let p = format!(
            "J\n{EPOCH}\n0\n0\n{count}\n{NODE}\n{}\n{}",
            clients[i].id, NICKS[i]
        );
        chat.feed_push(sessions, message(&room_channel("#a"), p.as_bytes()));
    }
    iteration += 1;
    end_iteration(
        &mut chat,
        sessions,
        &mut clients,
        &mut scratch,
        now,
        &mut iteration,
    );
    for c in clients.iter_mut() {
        client_reads(&chat, sessions, c, usize::MAX);
    }

    for _ in 0..STEPS {
        if input.rest.is_empty() {
            break;
        }
        let op = input.u8();
        iteration += 1;
        let room = ROOMS[input.u8() as usize % ROOMS.len()];
        let channel = room_channel(room);
        // A session id: mostly a local session's, else any.
        let sid = |input: &mut Bytes<'_>| {
            let b = input.u8();
            match b % 8 {
                i @ 0..=3 => clients[i as usize].id,
                4 => 0,
                _ => u64::from(b),
            }
        };
        let text = |input: &mut Bytes<'_>, pool: &[&str]| -> Vec<u8> {
            let b = input.u8();
            if b < 0xf0 {
                pool[b as usize % pool.len()].as_bytes().to_vec()
            } else {
                let n = (b & 0x0f) as usize;
                input.take(n).to_vec()
            }
        };
        // A seq around what the room reached: mostly the next one.
        let next_seq = |input: &mut Bytes<'_>, top: &mut HashMap<&str, u64>| {
            let t = top.entry(room).or_insert(0);
            let b = input.u8();
            let seq = match b % 8 {
                0..=3 => *t + 1,
                4 => *t + 2 + u64::from(b >> 3) % 6,
                5 => *t,
                6 => t.saturating_sub(1 + u64::from(b >> 3) % 4),
                _ => u64::from_be_bytes(input.take(8).try_into().unwrap_or([0xff; 8])),
            };
            *t = (*t).max(seq).min(u64::MAX / 2);
            seq
        };
        match op % 12 {
            // MESSAGE.
            0 | 1 => {
                let seq = next_seq(&mut input, &mut top);
                let from = text(&mut input, OTHERS);
                let body = text(&mut input, TEXTS);
                let mut p = format!("M\n{EPOCH}\n{seq}\n1764547200000\n").into_bytes();
                p.extend_from_slice(&from);
                p.push(b'\n');
                p.extend_from_slice(&body);
                chat.feed_push(sessions, message(&channel, &p));
            }
            // JOINED: of a local waiter or member, or of someone elsewhere.
            2 => {
                let b = input.u8();
                let epoch = if b & 1 == 0 { EPOCH } else { u64::from(b) };
                let seq = if b & 2 == 0 {
                    *top.entry(room).or_insert(0)
                } else {
                    next_seq(&mut input, &mut top)
                };
                let node = if b & 4 == 0 { NODE } else { "n2" };
                let first = u64::from(input.u8() % 4);
                let count = u64::from(input.u8() % 4);
                let sid = sid(&mut input);
                let who = text(&mut input, NICKS);
                let mut p =
                    format!("J\n{epoch}\n{seq}\n{first}\n{count}\n{node}\n{sid}\n").into_bytes();
                p.extend_from_slice(&who);
                chat.feed_push(sessions, message(&channel, &p));
            }
            // LEFT: of a local member or waiter, or of someone elsewhere.
            3 => {
                let b = input.u8();
                let seq = if b & 2 == 0 {
                    *top.entry(room).or_insert(0)
                } else {
                    next_seq(&mut input, &mut top)
                };
                let before = u64::from(input.u8() % 4);
                let node = if b & 4 == 0 { NODE } else { "n2" };
                let sid = sid(&mut input);
                let who = text(&mut input, NICKS);
                let mut p = format!("L\n{seq}\n{before}\n{node}\n{sid}\n").into_bytes();
                p.extend_from_slice(&who);
                p.extend_from_slice(b"\nbye");
                chat.feed_push(sessions, message(&channel, &p));
            }
            // NICK_CHANGED, naming some rooms.
            4 => {
                let b = input.u8();
                let node = if b & 1 == 0 { NODE } else { "n2" };
                let sid = sid(&mut input);
                let rooms = ["#a", "#a #b", "", "#c #a", "#zz"][b as usize % 5];
                let old = text(&mut input, NICKS);
                let new = text(&mut input, OTHERS);
                let mut p = format!("N\n{node}\n{sid}\n{rooms}\n").into_bytes();
                p.extend_from_slice(&old);
                p.push(b'\n');
                p.extend_from_slice(&new);
                chat.feed_push(sessions, message(&format!("{PREFIX}nickch"), &p));
            }
            // WHISPER to a session here.
            5 => {
                let sid = sid(&mut input);
                let from = text(&mut input, OTHERS);
                let body = text(&mut input, TEXTS);
                let mut p = format!("W\n{sid}\n").into_bytes();
                p.extend_from_slice(&from);
                p.push(b'\n');
                p.extend_from_slice(&body);
                chat.feed_push(sessions, message(&format!("{PREFIX}n:{NODE}"), &p));
            }
            // A subscription confirmed (again: the link came back).
            6 => chat.feed_push(
                sessions,
                Value::Array(vec![bulk("subscribe"), bulk(&channel), Value::Int(1)]),
            ),
            // Any push: raw fields, a raw payload on some channel.
            7 => {
                let b = input.u8();
                let v = match b % 6 {
                    0 => Value::Simple(b"PONG".to_vec()),
                    1 => Value::Array(vec![bulk("pong"), bulk("")]),
                    2 => Value::Array(vec![bulk("message"), bulk(&channel)]),
                    3 => {
                        let n = input.u8() as usize % 4;
                        Value::Array((0..n).map(|_| bulk(text(&mut input, ROOMS))).collect())
                    }
                    _ => {
                        let ch = [
                            channel.clone(),
                            format!("{PREFIX}nickch"),
                            format!("{PREFIX}n:{NODE}"),
                            "other".to_owned(),
                        ][input.u8() as usize % 4]
                            .clone();
                        let n = input.u8() as usize % 64;
                        let mut p = vec![b"MJLNWR"[b as usize % 6]];
                        p.extend_from_slice(input.take(n));
                        message(&ch, &p)
                    }
                };
                chat.feed_push(sessions, v);
            }
            // The answer to the oldest call in flight.
            8 | 9 => {
                let b = input.u8();
                let shaped = b & 1 == 0;
                let v = match chat.oldest_call() {
                    // An answer nobody asked for.
                    None => Value::Int(1),
                    Some(("fill" | "history", from, _)) if shaped => {
                        let n = if b & 0x80 != 0 && b & 0x40 != 0 {
                            256
                        } else {
                            (b >> 1) as usize % 8
                        };
                        // A fill can start just below u64::MAX (a fuzzed
                        // seq): the answer's own seqs saturate.
                        let mut seq = match input.u8() % 4 {
                            0 => from.saturating_sub(2),
                            1 => from.saturating_add(1),
                            _ => from,
                        };
                        let mut entries = Vec::new();
                        for _ in 0..n {
                            let step = input.u8();
                            let id = if step % 16 == 15 {
                                bulk(text(&mut input, TEXTS))
                            } else {
                                bulk(format!("{seq}-0"))
                            };
                            let fields = if step % 16 == 14 {
                                vec![bulk("t"), bulk("x")]
                            } else {
                                vec![
                                    bulk("t"),
                                    bulk("1764547200000"),
                                    bulk("f"),
                                    bulk("zed"),
                                    bulk("x"),
                                    bulk(format!("m{seq}")),
                                ]
                            };
                            entries.push(Value::Array(vec![id, Value::Array(fields)]));
                            seq = match step % 8 {
                                0 => seq,
                                1 => seq.saturating_sub(1),
                                2 => seq.saturating_add(2),
                                _ => seq.saturating_add(1),
                            };
                        }
                        Value::Array(entries)
                    }
                    Some(("alive", ..)) if shaped => {
                        let mut v = vec![Value::Int(0), Value::Int(i64::from(b >> 7))];
                        if b & 2 != 0 {
                            v.push(bulk("ann")); // a nick the store lost
                        }
                        Value::Array(v)
                    }
                    Some(("restore", ..)) if shaped => bulk(EPOCH.to_string()),
                    // A claim's time, or 0: taken.
                    Some(("hello" | "nick", ..)) if shaped => {
                        if b & 2 != 0 {
                            bulk("1764547200000001")
                        } else {
                            Value::Int(0)
                        }
                    }
                    // Sessions that lost a clash; leaves nobody heard.
                    Some(("claim", ..)) if shaped => {
                        Value::Array(vec![bulk(((b >> 2) % 5).to_string())])
                    }
                    Some(("gone", ..)) if shaped => {
                        Value::Array(vec![Value::Int(i64::from((b >> 2) % 3))])
                    }
                    Some(("rooms", ..)) if shaped => {
                        // A page: the next cursor, then name, members, ...
                        let cursor = if b & 2 != 0 { "0" } else { "17" };
                        Value::Array(vec![
                            bulk(cursor),
                            bulk("#a"),
                            Value::Int(2),
                            bulk("#b"),
                            bulk("x"),
                        ])
                    }
                    Some(("users", ..)) if shaped => {
                        Value::Array(vec![bulk("#a"), bulk("ann"), bulk("zed")])
                    }
                    Some(_) if shaped => Value::Int(i64::from(b >> 1) % 3),
                    Some(_) => match (b >> 1) % 6 {
                        0 => Value::Error(b"ERR no".to_vec()),
                        1 => Value::Error(b"NOROOM gone".to_vec()),
                        5 => Value::Error(b"NOTMEMBER no".to_vec()),
                        2 => Value::Nil,
                        3 => Value::Simple(b"OK".to_vec()),
                        _ => bulk(text(&mut input, TEXTS)),
                    },
                };
                chat.feed_answer(sessions, v);
            }
            // A client's request.
            10 => {
                let who = input.u8() as usize % clients.len();
                let mut bytes = request(&mut input, NICKS, ROOMS);
                if input.u8() % 4 == 0 {
                    let mut h = Vec::new();
                    ClientMessage::History {
                        room,
                        epoch: [0, EPOCH, 9][op as usize % 3],
                        after_seq: u64::from(input.u8() % 8),
                        limit: u16::from(input.u8() % 4),
                    }
                    .encode(&mut h);
                    bytes = h;
                }
                send(
                    &mut chat,
                    sessions,
                    &clients[who],
                    &bytes,
                    &mut scratch,
                    iteration,
                    now,
                );
            }
            // Clients read, time passes, or one goes away.
            _ => {
                let b = input.u8();
                let who = b as usize % clients.len();
                match (b >> 2) % 4 {
                    0 | 1 => {
                        let limit = [0, 100, usize::MAX][input.u8() as usize % 3];
                        client_reads(&chat, sessions, &mut clients[who], limit);
                    }
                    2 => {
                        now += Duration::from_millis(u64::from(input.u8()) * 50);
                        chat.run_timers(sessions, now);
                    }
                    _ => {
                        let _ = clients[who].peer.shutdown(std::net::Shutdown::Write);
                        if live(sessions, &clients[who]) {
                            read(
                                &mut chat,
                                sessions,
                                clients[who].token,
                                &mut scratch,
                                4096,
                                iteration,
                                now,
                            );
                        }
                    }
                }
            }
        }
        end_iteration(
            &mut chat,
            sessions,
            &mut clients,
            &mut scratch,
            now,
            &mut iteration,
        );
    }
    for c in clients.iter_mut() {
        client_reads(&chat, sessions, c, usize::MAX);
    }
}
