//! Version 3 for [`Chat`]: the session's [`Identity`] (token, session
//! key, unanswered SAYs), the version-3 frames, the PING barrier after
//! WELCOME that says which rooms still need a JOIN, and the timers that
//! resend SAYs and look for a fresher token.

use std::time::Instant;

use super::{same, Chat, Flow, Registration};
use crate::client::format::{error_line, render_v3};
use crate::client::identity::{self, push_refresh, refresh_at, Outbox, Outcome, Secret};
use crate::codec::v3::ServerV3;
use crate::codec::{code, ClientMessage, ErrorCode};
use crate::net::OutBuf;

/// The PING token of the barrier after WELCOME (v3): the server sends its
/// own JOINED and ROOM_STATE for the account's rooms (or a taken-over
/// session's) right after WELCOME, before it reads anything we send, so
/// its PONG says they have all come and which rooms still need a JOIN.
pub const SYNC_TOKEN: u64 = u64::MAX;

/// A version-3 session's identity and its unanswered SAYs.
#[derive(Debug)]
pub struct Identity {
    pub(super) token: Secret,
    pub(super) session_key: Secret,
    /// WELCOME's `account` (empty for a guest).
    pub account: String,
    /// WELCOME's `role`.
    pub role: u8,
    /// The token's `exp` in ms (0: a guest).
    pub token_exp_ms: u64,
    /// SAYs waiting for their SAY_RESULT.
    pub outbox: Outbox,
    /// When to look for a fresher token.
    pub(super) refresh_at: Option<Instant>,
    /// Whether the token can be read again (`--token-file`).
    pub(super) from_file: bool,
    /// Said once: the file still holds the token in use.
    pub(super) warned_stale: bool,
    /// The barrier PING is out: rooms JOINED by the server meanwhile.
    pub(super) syncing: bool,
    pub(super) synced: Vec<String>,
}

impl Identity {
    /// The session key WELCOME gave (for tests; never printed).
    pub fn session_key(&self) -> &Secret {
        &self.session_key
    }
}

impl Chat {
    /// Acts on one version-3 frame from the server (WELCOME v3 and codes
    /// 216-222).
    pub fn server_v3(
        &mut self,
        msg: &ServerV3<'_>,
        out: &mut OutBuf,
        show: &mut Vec<String>,
    ) -> Flow {
        let now = Instant::now();
        match *msg {
            ServerV3::Welcome {
                version,
                nick,
                server,
                heartbeat_ms,
                account,
                role,
                session_key,
                token_exp_ms,
                ..
            } => {
                show.push(format!(
                    "* connected to {server} as {nick} ({})",
                    identity::who(account, role)
                ));
                self.welcome(version, nick, heartbeat_ms, show);
                let Some(id) = &mut self.identity else {
                    return Flow::Continue;
                };
                let kept = id.session_key.expose() == session_key.0;
                if !kept && !id.session_key.expose().is_empty() && !id.outbox.is_empty() {
                    show.push(format!(
                        "! the server did not keep this session: {} unanswered messages are \
                         sent again and may show twice",
                        id.outbox.len()
                    ));
                }
                id.session_key = Secret::new(session_key.0.to_string());
                id.account = account.to_string();
                id.role = role;
                id.token_exp_ms = token_exp_ms;
                id.refresh_at = refresh_at(token_exp_ms, crate::client::format::now_ms(), now);
                id.syncing = true;
                id.synced.clear();
                out.push_client(&ClientMessage::Ping { token: SYNC_TOKEN });
            }
            ServerV3::SayResult { msg_id, error, .. } => {
                let Some(id) = &mut self.identity else {
                    return Flow::Continue;
                };
                let first_retry = id.outbox.retry_at.is_none();
                match id.outbox.result(msg_id, error, now) {
                    Outcome::Refused(u, e) => show.push(format!(
                        "{} [{}] {}",
                        error_line(e, code::SAY, ""),
                        u.room,
                        preview(&u.text)
                    )),
                    Outcome::Later if first_retry => show.push(format!(
                        "! the server could not take a message for now; sending it again in {} s",
                        identity::RESEND_DELAY.as_secs()
                    )),
                    _ => {}
                }
            }
            ServerV3::Refreshed { token_exp_ms } => {
                if let Some(id) = &mut self.identity {
                    id.token_exp_ms = token_exp_ms;
                    id.warned_stale = false;
                    id.refresh_at = refresh_at(token_exp_ms, crate::client::format::now_ms(), now);
                }
                show.push(format!(
                    "* token refreshed (valid until {})",
                    crate::client::format::history_time(
                        token_exp_ms,
                        crate::client::format::now_ms()
                    )
                ));
            }
            _ => show.extend(render_v3(msg, &self.nick)),
        }
        Flow::Continue
    }

    /// The barrier's PONG: every room the server put us back in has said
    /// JOINED. JOIN the others, then send every unanswered SAY again.
    pub(super) fn finish_sync(&mut self, out: &mut OutBuf, show: &mut Vec<String>) {
        let Some(id) = &mut self.identity else {
            return;
        };
        id.syncing = false;
        let synced = std::mem::take(&mut id.synced);
        self.rejoin(out, &synced);
        let rooms = &self.rooms;
        let pending = &self.pending_joins;
        let Some(id) = &mut self.identity else {
            return;
        };
        let (_, dropped) = id.outbox.resend_all(out, |room| {
            rooms.iter().any(|r| same(r, room)) || pending.iter().any(|(r, ..)| same(r, room))
        });
        for u in dropped {
            show.push(format!(
                "! not sent: you are no longer in {} ({})",
                u.room,
                preview(&u.text)
            ));
        }
    }

    /// A refused version-3 HELLO: nothing a retry would fix ends the
    /// client (no reconnect loop); `None` leaves the rest to the usual path.
    pub(super) fn hello_refused_v3(
        &mut self,
        error: ErrorCode,
        show: &mut Vec<String>,
    ) -> Option<Flow> {
        let hint = match error {
            ErrorCode::BadVersion => {
                "this server does not speak protocol version 3, so it cannot take a token \
                 (run without --token-file / MUXCHAT_TOKEN to chat as before)"
            }
            ErrorCode::AuthFailed => "check the token (its signature, expiry, issuer, audience)",
            ErrorCode::AuthRequired | ErrorCode::TokenExpired => "get a fresh token",
            ErrorCode::SessionLimit => "close another session of this account first",
            ErrorCode::NickInUse => "another account holds this nick now",
            ErrorCode::Banned | ErrorCode::Killed => "",
            _ => return None,
        };
        let mut line = error_line(error as u16, code::HELLO, "");
        if !hint.is_empty() {
            line.push_str(": ");
            line.push_str(hint);
        }
        show.push(line);
        self.fatal = true;
        Some(Flow::Exit(1))
    }

    /// The next version-3 timer: a resend after UNAVAILABLE, or a look
    /// for a fresher token.
    pub fn next_timer(&self) -> Option<Instant> {
        let id = self.identity.as_ref()?;
        if self.registration != Registration::Done {
            return None;
        }
        [id.outbox.retry_at, id.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on a due version-3 timer. `reread` reads the token file again
    /// (`None` without one).
    pub fn on_timer(
        &mut self,
        now: Instant,
        out: &mut OutBuf,
        show: &mut Vec<String>,
        reread: &mut dyn FnMut() -> Option<Result<Secret, String>>,
    ) {
        if self.registration != Registration::Done {
            return;
        }
        let Some(id) = &mut self.identity else {
            return;
        };
        // While syncing after a reconnect, the resend of everything
        // unanswered is about to happen anyway.
        if !id.syncing && id.outbox.retry_at.is_some_and(|t| now >= t) {
            id.outbox.resend_unavailable(out);
        }
        if id.refresh_at.is_none_or(|t| now < t) {
            return;
        }
        id.refresh_at = None;
        let until =
            crate::client::format::history_time(id.token_exp_ms, crate::client::format::now_ms());
        if !id.from_file {
            show.push(format!(
                "! your token expires at {until} and came from MUXCHAT_TOKEN, which cannot \
                 be read again: use --token-file to stay signed in"
            ));
            return;
        }
        match reread() {
            Some(Ok(token)) if token != id.token => {
                id.token = token;
                push_refresh(out, &id.token);
            }
            Some(Ok(_)) => {
                if !std::mem::replace(&mut id.warned_stale, true) {
                    show.push(format!(
                        "! your token expires at {until}: put a fresh one in the token file"
                    ));
                }
                id.refresh_at = Some(now + identity::REFRESH_RETRY);
            }
            Some(Err(e)) => {
                if !std::mem::replace(&mut id.warned_stale, true) {
                    show.push(format!("! {e}"));
                }
                id.refresh_at = Some(now + identity::REFRESH_RETRY);
            }
            None => {}
        }
    }
}

/// The start of a text, for a one-line refusal.
fn preview(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}
