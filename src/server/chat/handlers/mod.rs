//! The request handlers, one file per concern (mini-redis's `cmd/`): each
//! is a function over the chat's state that answers by appending encoded
//! frames to sessions' output (through
//! [`Sessions::deliver`](super::super::sessions::registry::Sessions::deliver));
//! none writes to a socket. `Chat::dispatch` (chat/mod.rs) picks the
//! handler for each decoded request.
//!
//! - [`registration`] answers HELLO and NICK;
//! - [`rooms`] answers JOIN and LEAVE, with presence and lingering rooms;
//! - [`messages`] answers SAY (the fan-out) and WHISPER;
//! - [`history`] answers HISTORY;
//! - [`queries`] answers LIST_ROOMS, LIST_USERS and STATS;
//! - [`moderation`] answers version 3's moderation requests and the
//!   checks JOIN, SAY and HELLO make against room states and bans.

pub mod history;
pub mod messages;
pub mod moderation;
pub mod queries;
pub mod registration;
pub mod rooms;
