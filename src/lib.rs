//! muxchat: a chat server on one thread and one `mio` event loop.
#![deny(missing_docs)]

pub mod client;
pub mod codec;
pub mod docgen;
pub mod gencert;
pub mod load;
pub mod net;
pub mod server;
