//! The `http_head` fuzz target.

/// The HTTP door's request-head parser under small limits, every prefix of
/// the input as the transport would see it after each read. The check
/// lives beside the parser, whose unit tests run it too:
/// `muxchat::server::web::fuzz_check`.
pub fn check(data: &[u8]) {
    muxchat::server::web::fuzz_check(data)
}
