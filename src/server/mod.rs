//! The daemon: one thread, one `mio::Poll`, many sessions.
//!
//! ```text
//!            +-------------------- event_loop.rs (owns Poll) -------------------+
//!  kernel -> | poll -> accept / read into shared buffer -> timers -> reap       |
//!            |          |                                                 ^     |
//!            |          v  whole frames                                   |     |
//!            |   chat.rs: dispatch -> rooms.rs (who is in #room)           |     |
//!            |          |  encode once, append bytes to each member's OutBuf|     |
//!            |          v                                                 |     |
//!            |   session.rs: OutBuf per session  --- write before sleep ---+     |
//!            +------------------------------------------------------------------+
//! ```
//!
//! - [`event_loop`]: the loop's numbered stages, accept, read, flush,
//!   interest. The only module that touches `Poll`.
//! - [`chat`]: the protocol state machine, fan-out, two-step close.
//! - [`session`]: one connection's buffers (with their invariants) and phase.
//! - [`rooms`]: room membership indexes.
//! - [`timers`]: the deadline heap behind heartbeats and timeouts.
//! - [`limits`]: the per-session token bucket.

pub mod chat;
pub mod event_loop;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod rooms;
pub mod session;
pub mod timers;
pub mod tls;
pub mod ws;

pub use event_loop::Server;
