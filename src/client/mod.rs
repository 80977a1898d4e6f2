//! The interactive chat client (`muxchat`): one thread, one `mio::Poll` over
//! stdin and the socket.
//!
//! The client is the daemon's chapter in miniature: a single thread waits on
//! one poller for two sources, and never blocks on either.
//!
//! - [`command`]: a typed line into a [`command::Command`] (pure).
//! - [`format`](mod@format): a server message into readable lines (pure).
//! - [`state`]: the session's state: rooms, the current room, registration,
//!   and per room what resume needs (epoch, last seq shown); commands and
//!   server messages in, frames and lines out (pure).
//! - [`discover`]: `--discover`, the daemons on the LAN (UDP).
//! - [`session`]: the event loop that moves bytes between the terminal, the
//!   socket and [`state::Chat`], and reconnects (backoff with jitter) when
//!   the connection drops or the server shuts down;
//! - `link`: connecting, the stream (plain or TLS), one connection's
//!   buffers, the backoff; `input`: typed lines in, the screen's lines out.
//!
//! The binary `src/bin/muxchat.rs` only turns flags into a [`Config`] and
//! [`session::run`]'s result into an exit status.

pub mod command;
pub mod discover;
pub mod format;
pub mod identity;
mod input;
mod link;
pub mod session;
pub mod state;
pub mod tls;

use std::path::PathBuf;

use clap::Parser;

pub use session::run;

/// Chat on a muxchatd server from a terminal, a pipe or a script.
#[derive(Parser, Debug)]
#[command(
    name = "muxchat",
    version,
    about = "muxchat: the terminal chat client for muxchatd. Joins rooms, talks, whispers; \
             reconnects and resumes by itself.",
    long_about = None
)]
pub struct Args {
    /// Server address, HOST:PORT (a name is resolved; `[::1]:PORT` for IPv6).
    #[arg(long, default_value = "127.0.0.1:25000", env = "MUXCHAT_CONNECT")]
    pub connect: String,
    /// Nick to register (default: $USER, or "guest").
    #[arg(long)]
    pub nick: Option<String>,
    /// Room to join after registering; repeatable. The last one is where
    /// plain text goes.
    #[arg(long = "join", value_name = "#ROOM")]
    pub joins: Vec<String>,
    /// Do not prefix lines with the time.
    #[arg(long)]
    pub no_time: bool,
    /// List the daemons that answer a discovery probe (UDP), then exit.
    #[arg(long)]
    pub discover: bool,
    /// Where --discover sends its probe (a broadcast address by default).
    #[arg(long, value_name = "ADDR", default_value = discover::DEFAULT_TARGET)]
    pub discover_to: String,
    /// How long --discover waits for answers, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub discover_ms: u64,
    /// Read commands from FILE instead of stdin, then quit.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// `--tls`, `--ca`, `--insecure`.
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// How long to keep retrying (with backoff) while the server answers
    /// HELLO with UNAVAILABLE (a cluster node without its Redis) before
    /// giving up with exit status 1; 0 retries for ever.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub unavailable_retry_s: u64,
    /// Sign in with the token (a JWT) in FILE: speaks protocol version 3,
    /// shows the account, sends unanswered messages again after a
    /// reconnect, and reads FILE again to refresh the token before it
    /// expires. Wins over MUXCHAT_TOKEN. The token is never printed.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The environment variable that may hold the token itself (used when
/// `--token-file` is not given; it cannot be re-read, so no REFRESH).
pub const TOKEN_ENV: &str = "MUXCHAT_TOKEN";

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
    /// TLS to the server (`--tls`), or plaintext.
    pub tls: Option<tls::ClientTls>,
    /// How long registration is retried while the server says UNAVAILABLE
    /// (`None`: for ever).
    pub unavailable_retry: Option<std::time::Duration>,
    /// A token (`--token-file` or `MUXCHAT_TOKEN`): protocol version 3.
    pub token: Option<identity::ClientToken>,
}

/// The token to sign in with: `--token-file` wins over `MUXCHAT_TOKEN`
/// (an explicit flag beats the environment; an empty variable is unset).
pub fn token_from(
    file: Option<&std::path::Path>,
    env: Option<String>,
) -> Result<Option<identity::ClientToken>, String> {
    if let Some(path) = file {
        return Ok(Some(identity::ClientToken {
            token: identity::read_token_file(path)?,
            file: Some(path.to_path_buf()),
        }));
    }
    match env.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Ok(Some(identity::ClientToken {
            token: identity::token_text(text).map_err(|why| format!("{TOKEN_ENV} {why}"))?,
            file: None,
        })),
    }
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
