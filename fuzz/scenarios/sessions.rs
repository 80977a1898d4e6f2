//! What the chat scenarios share: sessions over socket pairs, whose
//! client ends the scenario reads, and requests chosen by the input.

use muxchat::codec::{ClientMessage, FrameReader};
use muxchat::server::sessions::registry::Sessions;

use super::Bytes;

/// One fuzzed session's client end: the chat's session is one end of a
/// Unix socket pair, this is the other, reassembling what the chat wrote.
pub(super) struct Client {
    pub(super) token: mio::Token,
    pub(super) id: u64,
    pub(super) peer: std::os::unix::net::UnixStream,
    pub(super) reader: FrameReader,
    pub(super) seqs: std::collections::HashMap<String, u64>,
}

/// `n` sessions added to `chat`, each over a socket pair (no network).
pub(super) fn socket_clients(
    chat: &mut muxchat::server::chat::Chat,
    sessions: &mut Sessions,
    n: usize,
    now: std::time::Instant,
) -> Vec<Client> {
    use std::os::fd::{FromRawFd as _, IntoRawFd as _};
    (0..n)
        .map(|_| {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            ours.set_nonblocking(true).expect("nonblocking");
            theirs.set_nonblocking(true).expect("nonblocking");
            // SAFETY: the descriptor is a connected stream socket we own;
            // TcpStream only reads, writes and shuts it down (a Unix
            // stream socket supports all three), and closes it once.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) };
            let peer_addr = "127.0.0.1:1".parse().expect("address");
            let transport = muxchat::server::doors::Transport::plain(stream);
            let token = sessions.open(transport, peer_addr, chat.rate(), now);
            chat.on_open(sessions, token);
            let id = sessions.at(token).id();
            Client {
                token,
                id,
                peer: theirs,
                reader: FrameReader::new(1 << 20),
                seqs: std::collections::HashMap::new(),
            }
        })
        .collect()
}

/// One well-formed (or nearly) client request chosen by the input.
pub(super) fn request(input: &mut Bytes<'_>, nicks: &[&str], rooms: &[&str]) -> Vec<u8> {
    let nick = nicks[input.u8() as usize % nicks.len()];
    let room = rooms[input.u8() as usize % rooms.len()];
    let text = [
        "hi",
        "",
        "a much longer line of text to fill buffers faster",
    ][input.u8() as usize % 3];
    let msg = match input.u8() % 13 {
        0 => ClientMessage::Hello { version: 1, nick },
        1 => ClientMessage::Join { room },
        2 => ClientMessage::Leave { room },
        3 => ClientMessage::Say { room, text },
        4 => ClientMessage::Whisper { nick, text },
        5 => ClientMessage::Nick { nick },
        6 => ClientMessage::ListRooms,
        7 => ClientMessage::ListUsers { room },
        8 => ClientMessage::Ping { token: 7 },
        9 => ClientMessage::Pong { token: 7 },
        10 => ClientMessage::Quit { reason: text },
        11 => ClientMessage::Stats,
        _ => ClientMessage::Hello { version: 9, nick },
    };
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// The loop's read of one session ([`reading::read`]), with the TLS
/// handshake budget the loop would hold. These sessions are plain TCP, so
/// the budget is never spent: a fresh one per read changes nothing.
///
/// [`reading::read`]: muxchat::server::event_loop::reading::read
pub(super) fn read(
    chat: &mut muxchat::server::chat::Chat,
    sessions: &mut Sessions,
    t: mio::Token,
    scratch: &mut [u8],
    budget: usize,
    iteration: u64,
    now: std::time::Instant,
) -> muxchat::server::event_loop::reading::ReadOutcome {
    let config = chat.config();
    let mut gate = muxchat::server::doors::HandshakeGate::new(
        config.tls_handshakes_per_iteration,
        config.tls_handshakes_per_ip,
        config.limit_loopback,
    );
    muxchat::server::event_loop::reading::read(
        chat, sessions, &mut gate, t, scratch, budget, iteration, now,
    )
}
