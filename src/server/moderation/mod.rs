//! Moderation (protocol version 3, issue 21): the parts that need no
//! session or socket, ready for the chat to call.
//!
//! - [`masks`]: ban masks (`account:`, `nick:` globs, `ip:` CIDRs), their
//!   canonical form, the glob matcher.
//! - [`bans`]: a set of bans with hash-map, prefix-trie and bucketed-glob
//!   indexes for the JOIN and HELLO checks, and timed expiry.
//! - [`room_state`]: a room's topic, modes, bans, operator grants and
//!   invitations; the store of them that outlives room incarnations and
//!   drops a state `--room-state-ttl-ms` after its room emptied; who is an
//!   operator.
//! - [`state_file`]: `--state-file`, loaded at start and written
//!   atomically, in bounded steps, at most once per second.
//!
//! The chat owns one [`room_state::RoomStates`] and one server-wide
//! [`bans::BanSet`]; the loop's timers drive their expiry and the
//! [`state_file::StateWriter`].

pub mod bans;
pub mod masks;
pub mod room_state;
pub mod state_file;
