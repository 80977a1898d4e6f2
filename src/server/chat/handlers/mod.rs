//! The request handlers, one file per concern (mini-redis's `cmd/`): each
//! is a function over the chat's state that answers by appending encoded
//! frames to sessions' output (through
//! [`Sessions::deliver`](super::super::event_loop::registry::Sessions::deliver));
//! none writes to a socket. `Chat::dispatch` (chat/mod.rs) picks the
//! handler for each decoded request.
//!
//! - [`registration`] answers HELLO and NICK;
//! - [`rooms`] answers JOIN and LEAVE, with presence and lingering rooms;
//! - [`messages`] answers SAY (the fan-out) and WHISPER;
//! - [`history`] answers HISTORY;
//! - [`queries`] answers LIST_ROOMS, LIST_USERS and STATS.

pub mod history;
pub mod messages;
pub mod queries;
pub mod registration;
pub mod rooms;
