//! Protocol version 3 identity, everything of it that does not need the
//! chat: tokens in, accounts and session keys out.
//!
//! What the module owns:
//! - [`key`]: the `--auth-key` file (a PEM public key or an HS256 secret),
//!   the algorithm it fixes, its reload on SIGHUP.
//! - [`verify`]: one compact JWT checked against that key and the
//!   contract's claim rules, into [`Claims`] or a [`Reject`] reason.
//! - [`pattern`]: the `rooms` / `ops` claim patterns (`*`, case-insensitive).
//! - [`queue`]: the logins waiting for verification, a bounded number per
//!   loop iteration (signature checks are CPU work on the one thread).
//! - [`keys`]: session keys (32 hex digits from the OS), kept for
//!   `--session-key-ttl-ms` after their session ends, expired by a queue.
//! - [`dedup`]: the accepted msg_ids of each session key, bounded per key
//!   and in total, with their memory counted.
//! - [`accounts`]: each account's open sessions and its latest claims.
//! - [`mint`]: `muxchatd token`, signing tokens from a private key or a
//!   secret (for operators, tests and benchmarks).
//!
//! Nothing here touches a socket or the `Poll`: the chat drives these
//! structures with `mio::Token`s and session ids. Nothing here logs or
//! prints a token, a secret or a session key: none of their types has a
//! `Debug` that shows them.

pub mod accounts;
pub mod dedup;
pub mod key;
pub mod keys;
pub mod mint;
pub mod pattern;
pub mod queue;
pub mod verify;

pub use accounts::{Account, AccountError, Accounts};
pub use dedup::{Dedup, DEDUP_PER_KEY};
pub use key::{Alg, AuthKey, KeyError};
pub use keys::{KeyClaim, KeyOwner, SessionKey, SessionKeys};
pub use pattern::{Pattern, Patterns};
pub use queue::{LoginQueue, Pending};
pub use verify::{now_unix_ms, Claims, Reject, Verifier, LEEWAY_MS, MAX_TOKEN};
