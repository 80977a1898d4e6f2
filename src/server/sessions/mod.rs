//! The connections: every session keyed by its token ([`registry`]: the
//! slab, the loop's work lists, delivery with the slow-consumer cut, the
//! first step of closing, the counters), each one's transport, buffers
//! and backpressure policy ([`session`]), its life as a state machine
//! ([`lifecycle`]), and the sessions' deadlines ([`timers`]).
//!
//! Below both the loop and the chat: the loop reads, writes and removes
//! sessions through this module, the chat appends its answers to them;
//! nothing here knows the chat, and nothing here touches `mio::Poll`.

pub mod lifecycle;
pub mod registry;
pub mod session;
pub mod timers;
