//! The muxchat wire protocol: frames, messages, names.
//!
//! One codec serves the daemon, the chat client, the load generator and the
//! tests. It is pure: bytes in, frames and messages out, and the reverse.
//! Nothing here knows about sockets or `mio`.
//!
//! - [`discovery`]: the UDP probe and reply of LAN discovery.
//! - [`frame`]: the 8-byte header and cutting frames out of a stream.
//! - [`message`]: each code's payload layout, decode and encode.
//! - [`names`]: nick and room rules, and case-folded lookup keys.

pub mod discovery;
pub mod frame;
pub mod message;
pub mod names;

pub use frame::{decode, Decoded, Frame, FrameError, FrameReader, Header, HEADER_LEN};
pub use message::{
    code, history_status, is_supported_version, is_version_2_code, peek_message, ClientMessage,
    DecodeError, ErrorCode, ServerMessage, LATEST_VERSION, PROTOCOL_VERSION, VERSION_1, VERSION_2,
};
pub use names::{valid_nick, valid_room, NameKey};
