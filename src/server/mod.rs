//! The daemon: one thread, one `mio::Poll`, many sessions.
//!
//! ```text
//!            +------------------ event_loop/ (owns Poll) --------------------+
//!  kernel -> | poll -> accept / read -> timers -> reap -> flush -> remove       |
//!            |          |  reading.rs: Transport::read (the doors), budgets  |
//!            |          v                                                      |
//!            |   chat/: on_input -> dispatch -> handlers/ -> rooms, members    |
//!            |          |  encode once, append bytes to each member's OutBuf    |
//!            |          v  (event_loop/registry.rs: deliver, slow-consumer cut) |
//!            |   session.rs: flush -> transport (wrap once per batch) -> fd    |
//!            +------------------------------------------------------------------+
//! ```
//!
//! - [`event_loop`]: the loop's numbered stages, accept, interest, reading
//!   a session, and the connections: the registry (slab keyed by token),
//!   each session's buffers and lifecycle, timers, the loop trace. The
//!   only module that touches `Poll`.
//! - [`chat`]: the chat state and its handlers by concern; it gets bytes
//!   and door events, never a socket.
//! - [`transport`]: the seam between a session and its socket (plain TCP,
//!   TLS, WebSocket, HTTP doors).
//! - [`refusing`]: connections turned away at accept, answered by the
//!   door their first byte picks (binary ERROR or HTTP 503).
//! - [`config`]: the options, validated, with dependent defaults adapted.
//! - [`http`], [`ws`], [`tls`]: the doors' pure codecs and configuration,
//!   which the transport's Http, Ws and Tls variants will drive.
//! - [`metrics`]: the Prometheus exposition of the counters.
//! - [`reload`]: what SIGHUP changes live and what waits for a restart.
//! - [`proxy`]: the PROXY protocol header (`--proxy-from`).
//! - [`logfmt`]: `--log-format json`'s lines.
//! - [`cluster`] (`--redis`): the node's two Redis links (more sources in
//!   the same `Poll`), the per-room event order and hole filling, the
//!   heartbeat and the rebuild after a drop. Standalone, it is `None`.

pub mod chat;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod event_loop;
pub mod http;
pub mod logfmt;
pub mod metrics;
pub mod proxy;
pub mod refusing;
pub mod reload;
pub mod tls;
pub mod transport;

pub use event_loop::Server;
