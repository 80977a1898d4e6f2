//! Every wire format the binaries share: bytes in, values out, and the
//! reverse.
//!
//! What the module owns: the muxchat protocol (frames, messages, names,
//! the discovery datagram), RFC 6455 WebSocket framing, RESP (the Redis
//! protocol, one bounded parser for the cluster link and for muxload) and
//! the PEM/TLS helpers both ends build their rustls configurations from.
//! One codec serves the daemon, the chat client, the load generator and the
//! tests. It is pure: nothing here knows about sockets, sessions or `mio`,
//! and nothing here imports `server`, `client` or `load` (they import it).
//!
//! - [`discovery`]: the UDP probe and reply of LAN discovery.
//! - [`frame`]: the 8-byte header and cutting frames out of a stream.
//! - [`message`]: each code's payload layout, decode and encode.
//! - [`names`]: nick and room rules, and case-folded lookup keys.
//! - [`ws`]: WebSocket frame headers, masking, opcodes, close codes, the
//!   server's decoder and flush-time writer, and client frame encoding.
//! - [`resp`]: RESP commands out, replies and pushes in, every size
//!   checked against a limit before anything waits for it.
//! - [`pem`]: certificate chains and keys from PEM files, the crypto
//!   provider.
//! - [`v3`]: protocol version 3's HELLO, WELCOME and SAY layouts and its
//!   new codes (identity, exactly-once sending, moderation).

pub mod discovery;
pub mod frame;
pub mod message;
pub mod names;
pub mod pem;
pub mod resp;
pub mod v3;
pub mod ws;

pub use frame::{decode, Decoded, Frame, FrameError, FrameReader, Header, HEADER_LEN};
pub use message::{
    code, history_status, is_supported_version, is_version_2_code, peek_message, ClientMessage,
    DecodeError, ErrorCode, ServerMessage, LATEST_VERSION, PROTOCOL_VERSION, VERSION_1, VERSION_2,
};
pub use names::{valid_nick, valid_room, NameKey};
