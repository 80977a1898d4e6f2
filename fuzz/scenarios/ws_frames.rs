//! The `ws_frames` fuzz target.

/// WebSocket framing: the client-frame decoder chunked against in place,
/// and the per-flush writer through a trickling writer. The check lives
/// beside the codec, whose unit tests run it too:
/// `muxchat::codec::ws::fuzz_check`.
pub fn check(data: &[u8]) {
    muxchat::codec::ws::fuzz_check(data)
}
