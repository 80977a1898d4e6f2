//! The `chat_state` fuzz target: the chat state machine over socket pairs.

use muxchat::codec::ServerMessage;

use super::sessions::{read, request, socket_clients, Client};
use super::Bytes;

/// The chat state machine driven by arbitrary bytes: up to four sessions,
/// each a real socket pair (the daemon's end in a `Transport`, the client's
/// end read by the check), take turns at the steps the event loop would
/// take: bytes from the client (raw garbage or well-formed requests, read
/// through [`Chat::read`] with its budget, backpressure and held input),
/// flushes with the client reading all, some or nothing, EOFs, resets,
/// time passing (timers), the reap stage and removal. After every step the
/// cross-index invariants hold ([`Chat::check_invariants`]); every MESSAGE
/// a client receives for a room has a higher seq than the last it saw
/// there (a JOINED for the room starts its count again, since a room that
/// emptied starts over); and at the end, once every client has gone and
/// time has passed, every session is removed, with no nick or room left.
///
/// Input: a settings byte, then steps of (operation, session, argument...).
pub fn check(data: &[u8]) {
    use std::io::Read as _;
    use std::time::{Duration, Instant};

    use muxchat::server::chat::Chat;
    use muxchat::server::config::Config;
    use muxchat::server::sessions::registry::Sessions;
    use muxchat::server::sessions::session::Marks;

    const SESSIONS: usize = 4;
    const STEPS: usize = 96;
    const NICKS: &[&str] = &["ann", "Ann", "bob", "cy", "bad nick!"];
    const ROOMS: &[&str] = &["#a", "#A", "#b", "#c", "nope"];

    let mut input = Bytes { rest: data };
    let settings = input.u8();
    let config = Config {
        max_outbuf: [2048, 8192, 65536, 1 << 20][(settings & 3) as usize],
        max_payload: 1024,
        max_text: 256,
        max_rooms: 2,
        rate: if settings & 4 != 0 { 5 } else { 0 },
        burst: 8,
        presence_limit: if settings & 8 != 0 { 1 } else { 1000 },
        heartbeat: Duration::from_millis(1000),
        login_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    let mut now = Instant::now();
    let sessions = &mut Sessions::new(Marks::new(&config));
    let mut chat = Chat::new(config, now);

    let mut clients = socket_clients(&mut chat, sessions, SESSIONS, now);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut iteration = 0u64;

    // The client side reads what arrived (up to `limit` bytes) and checks
    // the MESSAGE seqs.
    fn client_reads(c: &mut Client, limit: usize) {
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
        while let Ok(Some(f)) = c.reader.next_frame() {
            let msg = ServerMessage::decode(f.code, f.payload).expect("the server's frames decode");
            match msg {
                ServerMessage::Joined { room, .. } => {
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

    // Stages 4-6 of one iteration: reap, flush everyone queued, remove
    // the finished.
    fn end_iteration(
        chat: &mut Chat,
        sessions: &mut Sessions,
        clients: &mut [Client],
        now: Instant,
        iteration: u64,
    ) {
        chat.reap(sessions, now);
        let list = sessions.begin_flush();
        for &t in &list {
            let _ = sessions.flush(t, iteration, now);
        }
        sessions.end_flush(list);
        while let Some(t) = sessions.pop_finished() {
            let (s, _) = chat.remove(sessions, t);
            for c in clients.iter_mut() {
                if c.token == t && c.id == s.id() {
                    c.id = 0;
                }
            }
        }
    }

    for _ in 0..STEPS {
        if input.rest.is_empty() {
            break;
        }
        let op = input.u8();
        let who = (input.u8() as usize) % SESSIONS;
        iteration += 1;
        let live = clients[who].id != 0
            && sessions
                .get_live(clients[who].token, clients[who].id)
                .is_some_and(|s| !s.life().is_finished());
        match op % 9 {
            // Raw bytes from the client, then a read.
            0 | 1 => {
                let n = input.u8() as usize % 48;
                let bytes = if op % 9 == 0 {
                    input.take(n).to_vec()
                } else {
                    request(&mut input, NICKS, ROOMS)
                };
                let _ = std::io::Write::write(&mut &clients[who].peer, &bytes);
                if live {
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
            // Many copies of one request at once (pipelining).
            2 => {
                let one = request(&mut input, NICKS, ROOMS);
                let times = 1 + input.u8() as usize % 64;
                let _ = std::io::Write::write(&mut &clients[who].peer, &one.repeat(times));
                if live {
                    read(
                        &mut chat,
                        sessions,
                        clients[who].token,
                        &mut scratch,
                        64 * 1024,
                        iteration,
                        now,
                    );
                }
            }
            // The client reads some or all of what reached it.
            3 => {
                let limit = [0, 100, 4096, usize::MAX][input.u8() as usize % 4];
                client_reads(&mut clients[who], limit);
            }
            // The client half-closes.
            4 => {
                let _ = clients[who].peer.shutdown(std::net::Shutdown::Write);
                if live {
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
            // The socket fails.
            5 if live => sessions.on_broken(clients[who].token),
            // Time passes; timers run.
            6 => {
                now += Duration::from_millis(u64::from(input.u8()) * 20);
                chat.run_timers(sessions, now);
            }
            // A resumed or carried-over read without new bytes.
            7 if live => {
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
            // Nothing but the end of the iteration.
            _ => {}
        }
        end_iteration(&mut chat, sessions, &mut clients, now, iteration);
        chat.check_invariants(sessions);
    }

    // Every client goes away; within a few deadlines every session is gone.
    for c in clients.iter_mut() {
        client_reads(c, usize::MAX);
        let _ = c.peer.shutdown(std::net::Shutdown::Both);
    }
    for _ in 0..16 {
        iteration += 1;
        for c in clients.iter() {
            let live = c.id != 0
                && sessions
                    .get_live(c.token, c.id)
                    .is_some_and(|s| !s.life().is_finished());
            if live {
                read(
                    &mut chat,
                    sessions,
                    c.token,
                    &mut scratch,
                    64 * 1024,
                    iteration,
                    now,
                );
            }
        }
        now += Duration::from_secs(3);
        chat.run_timers(sessions, now);
        end_iteration(&mut chat, sessions, &mut clients, now, iteration);
        chat.check_invariants(sessions);
    }
    assert!(
        chat.is_empty(sessions),
        "sessions, nicks or rooms left after everyone went"
    );
}
