//! muxchat: a chat server on one thread and one `mio` event loop.
#![deny(missing_docs)]

pub mod config;
pub mod protocol;
