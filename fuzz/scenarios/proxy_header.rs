//! The `proxy_header` fuzz target.

/// The PROXY protocol header parser (`--proxy-from`), every prefix as the
/// bytes of a connection would arrive. The check lives beside the parser,
/// whose unit tests run it too: `muxchat::server::doors::proxy::fuzz_check`.
pub fn check(data: &[u8]) {
    muxchat::server::doors::proxy::fuzz_check(data)
}
