//! The interactive chat client (`muxchat`): one thread, one `mio::Poll` over
//! stdin and the socket.
//!
//! The client is the daemon's chapter in miniature: a single thread waits on
//! one poller for two sources, and never blocks on either.
//!
//! - [`command`]: a typed line into a [`command::Command`] (pure).
//! - [`format`](mod@format): a server message into readable lines (pure).
//! - [`state`]: the session's state: rooms, the current room, registration;
//!   commands and server messages in, frames and lines out (pure).
//! - [`session`]: the event loop that moves bytes between the terminal, the
//!   socket and [`state::Chat`].
//!
//! The binary `src/bin/muxchat.rs` only turns flags into a [`Config`] and
//! [`session::run`]'s result into an exit status.

pub mod command;
pub mod format;
pub mod session;
pub mod state;

use std::path::PathBuf;

pub use session::run;

/// A validated client configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT` to connect to (a name is resolved; IPv4 or IPv6).
    pub connect: String,
    /// The nick to register.
    pub nick: String,
    /// Rooms to join once registered; the last becomes the current room.
    pub joins: Vec<String>,
    /// Prefix each printed line with `HH:MM:SS`.
    pub timestamps: bool,
    /// Read commands from this file instead of stdin.
    pub script: Option<PathBuf>,
}

/// A default nick from `$USER`, cut to the nick rules, or `guest`.
pub fn default_nick() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let nick: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(32)
        .collect();
    if nick.is_empty() {
        "guest".into()
    } else {
        nick
    }
}
