//! The daemon: one thread, one `mio::Poll`, many sessions.
//!
//! ```text
//!            +-------------------- event_loop.rs (owns Poll) -------------------+
//!  kernel -> | poll -> accept / read -> timers -> reap -> flush -> remove       |
//!            |          |  chat.rs: Transport::read, cut whole frames          |
//!            |          v                                                      |
//!            |   chat.rs dispatch -> commands.rs -> rooms.rs (who is in #room)  |
//!            |          |  encode once, append bytes to each member's OutBuf    |
//!            |          v  (registry.rs: deliver, slow-consumer cut)            |
//!            |   session.rs: flush -> doors/ (wrap once per batch) -> fd      |
//!            +------------------------------------------------------------------+
//! ```
//!
//! - [`event_loop`]: the loop's numbered stages, accept, interest. The only
//!   module (with its children: admission, housekeeping) that touches `Poll`.
//! - [`chat`]: the chat state, reading a session into whole frames, and
//!   checking each frame before its command runs.
//! - [`commands`]: one handler per command; fan-out.
//! - [`closing`]: the reap stage, timers, the shutdown drain.
//! - [`registry`]: the sessions, delivery, the work lists, the counters.
//! - [`session`]: one connection's buffers (with their invariants), its
//!   backpressure and FIN policy, its I/O outcomes.
//! - [`lifecycle`]: a session's states and the only transitions between them.
//! - [`doors`]: the seam between a session and its socket, and one file
//!   per door behind it (first-byte sniff, plain TCP, TLS, WebSocket,
//!   HTTP, the PROXY header, refusals at accept).
//! - [`history`]: the held messages of every room (encoded frames, one
//!   byte budget) and room epochs.
//! - [`rooms`]: room membership indexes, epochs, empty rooms that linger.
//! - [`timers`]: the deadline heap behind heartbeats and timeouts.
//! - [`limits`]: the per-session token bucket.
//! - [`peers`]: the address prefix a connection counts against for
//!   `--max-per-ip`.
//! - [`trace`]: the loop trace (`--trace-file`), one JSON line per stage's
//!   action, bounded, flushed once per iteration.
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
pub mod closing;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod doors;
pub mod event_loop;
pub mod history;
pub mod identity;
pub mod lifecycle;
pub mod limits;
pub mod logfmt;
pub mod metrics;
pub mod moderation;
pub mod peers;
pub mod registry;
pub mod reload;
pub mod rooms;
pub mod session;
pub mod timers;
pub mod trace;
pub mod web;

pub use event_loop::Server;
