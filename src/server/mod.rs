//! The daemon: one thread, one `mio::Poll`, many sessions.
//!
//! ```text
//!            +------------------ event_loop/ (owns Poll) --------------------+
//!  kernel -> | poll -> accept / read -> timers -> reap -> flush -> remove       |
//!            |          |  reading.rs: Transport::read (the doors), budgets  |
//!            |          v                                                      |
//!            |   chat/: on_input -> dispatch -> handlers/ -> rooms, members    |
//!            |          |  encode once, append bytes to each member's OutBuf    |
//!            |          v  (sessions/registry.rs: deliver, slow-consumer cut)   |
//!            |   sessions/session.rs: flush -> doors/ (wrap once per batch) -> fd |
//!            +------------------------------------------------------------------+
//! ```
//!
//! - [`event_loop`]: the loop's numbered stages, accept, interest, reading
//!   a session. The only module that touches `Poll`.
//! - [`sessions`]: the connections, below the loop and the chat: the
//!   registry (slab keyed by token), each session's buffers and lifecycle,
//!   their deadlines.
//! - [`trace`]: the loop trace (`--trace-file`) the loop and the chat write.
//! - [`limits`]: the per-session token bucket.
//! - [`chat`]: the chat state and its handlers by concern; it gets bytes
//!   and door events, never a socket.
//! - [`doors`]: the seam between a session and its socket, and one file
//!   per door behind it (first-byte sniff, plain TCP, TLS, WebSocket,
//!   HTTP, the PROXY header, refusals at accept).
//! - [`config`]: the options, validated, with dependent defaults adapted.
//! - [`web`]: HTTP routing (page, upgrade, `/metrics`, `/healthz`,
//!   refusals) and the responses, the page among them: pure, no socket.
//! - [`metrics`]: the Prometheus exposition of the counters.
//! - [`reload`]: what SIGHUP changes live and what waits for a restart.
//! - [`logfmt`]: `--log-format json`'s lines.
//! - [`moderation`]: ban masks and sets, room states, `--state-file`
//!   (protocol version 3; not wired to the chat yet).
//! - [`identity`]: token verification, session keys, msg_id deduplication,
//!   accounts and the login queue (protocol version 3; not wired yet).
//! - [`cluster`] (`--redis`): the node's two Redis links (more sources in
//!   the same `Poll`), the per-room event order and hole filling, the
//!   heartbeat and the rebuild after a drop. Standalone, it is `None`.

pub mod chat;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod doors;
pub mod event_loop;
pub mod identity;
pub mod limits;
pub mod logfmt;
pub mod metrics;
pub mod moderation;
pub mod reload;
pub mod sessions;
pub mod trace;
pub mod web;

pub use event_loop::Server;
