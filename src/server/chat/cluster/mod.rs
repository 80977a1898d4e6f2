//! The chat's side of the cluster (`--redis`): what the chat does when its
//! rooms live in the cluster's store (`crate::server::cluster`, which owns
//! the Redis links, the function library and the per-room bookkeeping and
//! never sees the chat).
//!
//! - [`requests`]: what a session's command sends to the store;
//! - [`answers`]: the command link's answers, in order;
//! - [`events`]: the subscriber link's events, delivered in seq order
//!   (jumps filled from the room's stream);
//! - [`recovery`]: links coming and going, the cluster's timer, fencing,
//!   nick claims and renames, rebuilding what Redis lost;
//! - [`lists`]: LIST_ROOMS and LIST_USERS from the node's cache;
//! - [`moderation`]: moderation requests, their answers and events;
//!   [`replica`]: loading this node's replica of the store's room states
//!   and server-wide bans;
//! - [`accounts`]: protocol version 3 (logins, session keys, SAY_RESULT
//!   and deduplication); [`account_rooms`]: an account's rooms and
//!   sessions across nodes, takeover.

pub mod account_rooms;
pub mod accounts;
pub mod answers;
pub mod events;
pub mod lists;
pub mod moderation;
pub mod recovery;
pub mod replica;
pub mod requests;
