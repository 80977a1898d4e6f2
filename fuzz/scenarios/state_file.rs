//! The `state_file` fuzz target.

/// The `--state-file` loader: any bytes either fail with a message or
/// load into a state that writes back to bytes loading to the same state.
/// The check lives beside the loader, whose unit tests run it too:
/// `muxchat::server::moderation::state_file::fuzz_check`.
pub fn check(data: &[u8]) {
    muxchat::server::moderation::state_file::fuzz_check(data)
}
