//! The `ban_mask` fuzz target.

/// The ban mask parser (`account:`, `nick:` globs, `ip:` CIDRs): a mask
/// that parses displays in a canonical form that parses back to itself,
/// and its glob matcher ends. The check lives beside the parser, whose
/// unit tests run it too: `muxchat::server::moderation::masks::fuzz_check`.
pub fn check(data: &[u8]) {
    muxchat::server::moderation::masks::fuzz_check(data)
}
