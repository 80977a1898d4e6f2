//! Protocol version 3 as a test client speaks it: the frames the version
//! 1/2 helpers cannot build or read (HELLO with a token and a session key,
//! WELCOME with its account), shared by tests/identity.rs and
//! tests/cluster_identity.rs.

use muxchat::codec::v3::{ClientV3, Secret, ServerV3};
use muxchat::codec::ErrorCode;

use super::{assert_error, Client, Daemon};

/// Sends one version-3 request.
pub fn send3(c: &mut Client, m: &ClientV3<'_>) {
    let mut out = Vec::new();
    m.encode(&mut out);
    c.send_raw(&out);
}

/// HELLO (v3) with `token` and session `key` (either may be empty).
pub fn hello3(c: &mut Client, nick: &str, token: &str, key: &str) {
    send3(
        c,
        &ClientV3::Hello {
            version: 3,
            nick,
            token: Secret(token),
            session_key: Secret(key),
        },
    );
}

/// WELCOME (v3): (nick, account, role, session key, token_exp_ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub nick: String,
    pub account: String,
    pub role: u8,
    pub key: String,
    pub exp_ms: u64,
}

/// The next frame, which must be a version-3 WELCOME.
#[track_caller]
pub fn welcome(c: &mut Client) -> Welcome {
    let r = c.recv();
    match ServerV3::decode(r.code, &r.payload) {
        Ok(ServerV3::Welcome {
            nick,
            account,
            role,
            session_key,
            token_exp_ms,
            ..
        }) => Welcome {
            nick: nick.into(),
            account: account.into(),
            role,
            key: session_key.0.into(),
            exp_ms: token_exp_ms,
        },
        other => panic!("expected WELCOME v3, got code {} {other:?}", r.code),
    }
}

/// Connects and registers with version 3.
#[track_caller]
pub fn login(d: &Daemon, nick: &str, token: &str, key: &str) -> (Client, Welcome) {
    let mut c = d.connect();
    hello3(&mut c, nick, token, key);
    let w = welcome(&mut c);
    (c, w)
}

/// A fatal error for `request`, then the server closes.
#[track_caller]
pub fn expect_fatal(c: &mut Client, error: ErrorCode, request: u16) {
    assert_error(&c.recv(), error, request);
    c.expect_closed();
}
