//! The client's event loop: one thread, one `mio::Poll`, two sources.
//!
//! ```text
//!   stdin (fd 0) ──readable──▶ line queue ──▶ Chat::command ──▶ out buffer ─┐
//!                                                                           │ one write
//!   socket ──readable──▶ FrameReader ──▶ Chat::server ──▶ screen lines      ▼
//!                                           └──▶ PONG etc. ──▶ out buffer ──▶ socket
//! ```
//!
//! Each iteration: (0) reconnect if the link is down and its backoff is
//! over; (1) act on queued input lines, if registration allows; (2) write
//! the out buffer until empty or `WouldBlock`; (3) print the lines
//! produced; (4) poll, until an event or the next timer (a `/sleep`, the
//! QUIT wait, the reconnect, the heartbeat); (5) drain every ready source
//! until `WouldBlock`.
//!
//! The link to the server comes and goes: when the connection drops, or
//! the server shuts down (a restart usually follows), the client connects
//! again after an exponential backoff with jitter, says HELLO, rejoins its
//! rooms and resumes each one from the last seq it showed
//! ([`super::state`] decides what to ask and show). It does not come back
//! after `/quit` or a fatal ERROR. Lines typed while the link is down wait
//! (bounded) and are sent once it is back; `/quit` and the end of input
//! exit at once. The client has its own heartbeat too: silence from the
//! server for the server's `heartbeat_ms` gets a PING, and silence for two
//! of them is a dead connection (a silent drop sends no FIN).
//!
//! Stdin is registered with the same `Poll` when it can be (a terminal or a
//! pipe). A regular file (or `/dev/null`) cannot be registered with epoll:
//! then it is read a line at a time between polls, with a zero poll timeout
//! while lines remain, so the socket is still served throughout.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::command::{parse, Command};
use super::identity::read_token_file;
use super::input::{Input, Line, Screen};
use super::link::{Conn, Link, Stream, SOCKET};
use super::state::{Chat, Flow, Registration, Retry};
use super::tls::ClientTls;
use super::Config;
use crate::codec::v3::{self, ServerV3};
use crate::codec::{code, ClientMessage, ServerMessage};

pub use super::link::{connect, connect_within, Backoff};

/// Stdin's token; the socket's is the link's [`SOCKET`].
const STDIN: Token = Token(1);

/// How long to wait for BYE after sending QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(5);
/// The same, when reconnecting (the loop is blocked meanwhile).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// On top of two heartbeats of silence before the connection is declared
/// dead (the server's PING and our PONG may cross a busy moment).
const HEARTBEAT_SLACK: Duration = Duration::from_secs(2);
/// How long a reconnect waits for the answer to its HELLO before trying
/// again (a server that accepted but never answers must not hang us).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines typed while disconnected, held at most (then stdin waits).
const MAX_HELD_LINES: usize = 1000;

/// Runs the session until `/quit`, the end of input, BYE or a fatal error.
/// `Ok` carries the exit status; `Err` is a one-line reason to exit 1.
pub fn run(cfg: &Config) -> Result<i32, String> {
    let stream = Stream::open(connect(&cfg.connect)?, cfg.tls.as_ref())?;
    let poll = Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
    let conn = Conn::open(stream, &poll)?;
    let input = Input::open(cfg.script.as_deref(), &poll, STDIN)?;
    let mut s = Session {
        poll,
        link: Link::Up(conn),
        chat: {
            let mut chat = Chat::new(&cfg.nick, cfg.joins.clone());
            if let Some(t) = &cfg.token {
                chat = chat.with_token(t.token.clone(), t.file.is_some());
            }
            chat.unavailable_retry = cfg.unavailable_retry;
            chat
        },
        input,
        screen: Screen::new(cfg.timestamps),
        backoff: Backoff::new(),
        held: VecDeque::new(),
        sleep_until: None,
        quit_deadline: None,
        target: cfg.connect.clone(),
        tls: cfg.tls.clone(),
        ping_token: 0,
        token_file: cfg.token.as_ref().and_then(|t| t.file.clone()),
    };
    if let Link::Up(conn) = &mut s.link {
        s.chat.hello(&mut conn.out);
    }
    let result = s.serve();
    // Whatever happened, show what was received before it.
    let printed = s.screen.flush();
    let code = result?;
    printed?;
    Ok(code)
}

/// Everything the loop owns.
struct Session {
    poll: Poll,
    link: Link,
    chat: Chat,
    input: Input,
    screen: Screen,
    backoff: Backoff,
    /// Lines typed while the link was down, sent once it is back.
    /// Ends with `Line::End` if input ended after them (a script): the
    /// quit then waits for them to be sent.
    held: VecDeque<Line>,
    sleep_until: Option<Instant>,
    quit_deadline: Option<Instant>,
    target: String,
    /// Present with `--tls`: every (re)connection starts a handshake.
    tls: Option<ClientTls>,
    ping_token: u64,
    /// `--token-file`: read again before the token expires.
    token_file: Option<std::path::PathBuf>,
}

/// What a step decided about the session as a whole.
type Step = Result<Option<i32>, String>;

impl Session {
    fn serve(&mut self) -> Result<i32, String> {
        let mut events = Events::with_capacity(16);
        loop {
            let now = Instant::now();
            if self.sleep_until.is_some_and(|t| now >= t) {
                self.sleep_until = None;
            }
            // 0. Reconnect when the backoff is over.
            if let Link::Down { retry_at } = self.link {
                if now >= retry_at {
                    self.reconnect()?;
                }
            }
            // 0b. Version 3: resend after UNAVAILABLE, refresh the token.
            if let Link::Up(conn) = &mut self.link {
                if self.chat.next_timer().is_some_and(|t| now >= t) {
                    let file = self.token_file.clone();
                    let mut reread = || file.as_deref().map(read_token_file);
                    self.chat
                        .on_timer(now, &mut conn.out, &mut self.screen.lines, &mut reread);
                }
            }
            // 1. Act on typed lines.
            if let Some(code) = self.take_lines()? {
                return Ok(code);
            }
            // 2. Write everything queued, and look after the heartbeat.
            if let Some(code) = self.flush_and_heartbeat()? {
                return Ok(code);
            }
            // 3. Show what happened.
            self.screen.flush()?;

            // 4. Wait for the next event or timer.
            let now = Instant::now();
            if self.quit_deadline.is_some_and(|t| now >= t) {
                self.screen
                    .lines
                    .push("* no BYE from the server; closing".into());
                return Ok(0);
            }
            let stdin_more = matches!(self.input, Input::Polled { more: true, .. });
            let timeout = if stdin_more || (self.can_take_lines() && self.line_ready()) {
                Some(Duration::ZERO)
            } else {
                self.next_timer().map(|t| t.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }

            // 5. Drain whatever is ready.
            if stdin_more {
                self.input.drain_stdin();
            }
            let mut socket_ready = false;
            for event in events.iter() {
                match event.token() {
                    STDIN => self.input.drain_stdin(),
                    SOCKET => socket_ready = true,
                    _ => {}
                }
            }
            if socket_ready {
                if let Some(code) = self.read_socket()? {
                    return Ok(code);
                }
            }
        }
    }

    /// The earliest timer: the end of a `/sleep`, the QUIT wait, the next
    /// reconnect, the heartbeat's PING or its deadline.
    fn next_timer(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry_at } => Some(*retry_at),
            Link::Up(c) if self.chat.registration == Registration::Done => {
                let hb = self.chat.heartbeat;
                Some(if c.pinged {
                    c.last_rx + 2 * hb + HEARTBEAT_SLACK
                } else {
                    c.last_rx + hb
                })
            }
            Link::Up(c) if self.awaiting_reconnect_welcome() => Some(c.last_rx + REGISTER_TIMEOUT),
            Link::Up(_) => None,
        };
        let v3 = match &self.link {
            Link::Up(_) => self.chat.next_timer(),
            Link::Down { .. } => None,
        };
        [self.sleep_until, self.quit_deadline, link, v3]
            .into_iter()
            .flatten()
            .min()
    }

    /// A reconnect's HELLO is unanswered (the first connection's HELLO is
    /// left to the server's login timeout, as before).
    fn awaiting_reconnect_welcome(&self) -> bool {
        self.chat.registered_once && self.chat.registration == Registration::Pending
    }

    /// Whether typed lines can be acted on (or, while down, held) now.
    fn can_take_lines(&self) -> bool {
        if self.quit_deadline.is_some() || self.sleep_until.is_some() {
            return false;
        }
        match self.link {
            Link::Up(_) => self.chat.ready_for_input(),
            Link::Down { .. } => {
                self.held.len() < MAX_HELD_LINES && !matches!(self.held.back(), Some(Line::End))
            }
        }
    }

    fn line_ready(&self) -> bool {
        (matches!(self.link, Link::Up(_)) && !self.held.is_empty()) || self.input.has_ready_line()
    }

    /// Acts on typed lines while the session can: held ones first.
    fn take_lines(&mut self) -> Step {
        while self.can_take_lines() {
            let up = matches!(self.link, Link::Up(_));
            let held = if up { self.held.pop_front() } else { None };
            let line = match held.or_else(|| self.input.next_line()) {
                Some(line) => line,
                None => break,
            };
            let Link::Up(conn) = &mut self.link else {
                if let Some(code) = self.line_while_down(line) {
                    return Ok(Some(code));
                }
                continue;
            };
            let flow = match line {
                Line::End => {
                    self.chat
                        .command(Command::Quit(""), &mut conn.out, &mut self.screen.lines)
                }
                Line::Text(text) => match parse(&text) {
                    Ok(cmd) => self
                        .chat
                        .command(cmd, &mut conn.out, &mut self.screen.lines),
                    Err(e) => {
                        self.screen.lines.push(format!("! {}", e.0));
                        Flow::Continue
                    }
                },
            };
            if let Some(code) = self.follow(flow, false)? {
                return Ok(Some(code));
            }
        }
        // Lines that arrive meanwhile wait in the input buffer (polled
        // stdin, capped) or unread in their file.
        Ok(None)
    }

    /// A typed line while there is no connection: `/quit` exits, `/help`
    /// and `/sleep` work, the rest waits for the link. The end of input
    /// exits at once, unless lines are waiting to be sent (a script): then
    /// the quit waits behind them.
    fn line_while_down(&mut self, line: Line) -> Option<i32> {
        let text = match line {
            Line::End if self.held.is_empty() => {
                self.screen
                    .lines
                    .push("* input ended while disconnected; exiting".into());
                return Some(0);
            }
            Line::End => {
                self.held.push_back(Line::End);
                return None;
            }
            Line::Text(text) => text,
        };
        match parse(&text) {
            Ok(Command::Quit(_)) => {
                self.screen.lines.push("* bye (not connected)".into());
                return Some(0);
            }
            Ok(Command::Empty) => {}
            Ok(Command::Help) => {
                let help = super::command::HELP.iter().map(|s| s.to_string());
                self.screen.lines.extend(help);
            }
            Ok(Command::Sleep(d)) => self.sleep_until = Some(Instant::now() + d),
            Ok(_) => self.held.push_back(Line::Text(text)),
            Err(e) => self.screen.lines.push(format!("! {}", e.0)),
        }
        None
    }

    /// Carries out what [`Chat`] decided. `from_shutdown` words the line
    /// for a reconnect the server's SHUTDOWN asked for.
    fn follow(&mut self, flow: Flow, from_shutdown: bool) -> Step {
        match flow {
            Flow::Continue => {}
            Flow::Sleep(d) => self.sleep_until = Some(Instant::now() + d),
            Flow::Quitting => self.quit_deadline = Some(Instant::now() + QUIT_WAIT),
            Flow::Exit(code) => return Ok(Some(code)),
            Flow::Reconnect(_) if self.quit_deadline.is_some() => return Ok(Some(0)),
            Flow::Reconnect(Retry::Now) => self.go_down(Duration::ZERO),
            Flow::Reconnect(Retry::Backoff) => {
                let delay = self.backoff.next_delay();
                if from_shutdown {
                    self.screen.lines.push(format!(
                        "* reconnecting in {:.1} s (/quit to stop)",
                        delay.as_secs_f64()
                    ));
                }
                self.go_down(delay);
            }
        }
        Ok(None)
    }

    /// Closes the connection (if any) and schedules the next attempt.
    fn go_down(&mut self, delay: Duration) {
        let retry_at = Instant::now() + delay;
        if let Link::Up(conn) = std::mem::replace(&mut self.link, Link::Down { retry_at }) {
            conn.close(&self.poll);
        }
        self.chat.connection_lost();
    }

    /// The connection ended without our asking: exit, or come back later.
    fn lost(&mut self, why: &str) -> Step {
        if self.quit_deadline.is_some() {
            self.screen
                .lines
                .push(format!("* connection ended ({why})"));
            return Ok(Some(0));
        }
        if self.chat.fatal {
            return Err("disconnected by the server".into());
        }
        if !self.chat.registered_once {
            return Err(format!("connection lost before registering: {why}"));
        }
        let delay = self.backoff.next_delay();
        self.screen.lines.push(format!(
            "! connection lost ({why}); reconnecting in {:.1} s",
            delay.as_secs_f64()
        ));
        self.go_down(delay);
        Ok(None)
    }

    fn reconnect(&mut self) -> Result<(), String> {
        let opened = connect_within(&self.target, RECONNECT_TIMEOUT)
            .and_then(|tcp| Stream::open(tcp, self.tls.as_ref()));
        match opened {
            Ok(stream) => {
                let mut conn = Conn::open(stream, &self.poll)?;
                self.chat.hello(&mut conn.out);
                self.link = Link::Up(conn);
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                self.screen
                    .lines
                    .push(format!("! {e}; next try in {:.1} s", delay.as_secs_f64()));
                self.link = Link::Down {
                    retry_at: Instant::now() + delay,
                };
            }
        }
        Ok(())
    }

    fn flush_and_heartbeat(&mut self) -> Step {
        let waiting = self.awaiting_reconnect_welcome();
        let Link::Up(conn) = &mut self.link else {
            return Ok(None);
        };
        if waiting && conn.last_rx.elapsed() >= REGISTER_TIMEOUT {
            return self.lost("no answer to HELLO");
        }
        if self.chat.registration == Registration::Done {
            let silence = conn.last_rx.elapsed();
            let hb = self.chat.heartbeat;
            if silence >= 2 * hb + HEARTBEAT_SLACK {
                let why = format!("no answer from the server in {} s", silence.as_secs());
                return self.lost(&why);
            }
            if silence >= hb && !conn.pinged {
                self.ping_token += 1;
                conn.out.push_client(&ClientMessage::Ping {
                    token: self.ping_token,
                });
                conn.pinged = true;
            }
        }
        match conn.flush(&self.poll) {
            Ok(()) => Ok(None),
            Err(e) => self.lost(&e.to_string()),
        }
    }

    /// Reads the socket until `WouldBlock`, handing each frame to the chat.
    fn read_socket(&mut self) -> Step {
        loop {
            let Link::Up(conn) = &mut self.link else {
                return Ok(None);
            };
            let closed = match conn.reader.read_from(&mut conn.stream) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.lost(&e.to_string()),
            };
            loop {
                let Link::Up(conn) = &mut self.link else {
                    return Ok(None);
                };
                let frame = match conn.reader.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return Err("the server sent a frame larger than 16 MiB".into()),
                };
                conn.last_rx = Instant::now();
                conn.pinged = false;
                if is_v3_frame(frame.code, frame.payload) {
                    let flow = match ServerV3::decode(frame.code, frame.payload) {
                        Ok(msg) => self
                            .chat
                            .server_v3(&msg, &mut conn.out, &mut self.screen.lines),
                        Err(e) => {
                            self.screen.lines.push(format!(
                                "! ignored a frame the client cannot read (code {}, {e:?})",
                                frame.code
                            ));
                            continue;
                        }
                    };
                    if self.chat.registration == Registration::Done {
                        self.backoff.reset();
                    }
                    if let Some(code) = self.follow(flow, false)? {
                        return Ok(Some(code));
                    }
                    continue;
                }
                let msg = match ServerMessage::decode(frame.code, frame.payload) {
                    Ok(m) => m,
                    Err(e) => {
                        self.screen.lines.push(format!(
                            "! ignored a frame the client cannot read (code {}, {e:?})",
                            frame.code
                        ));
                        continue;
                    }
                };
                let shutdown = frame.code == code::SHUTDOWN;
                let flow = self
                    .chat
                    .server(&msg, &mut conn.out, &mut self.screen.lines);
                if self.chat.registration == Registration::Done {
                    self.backoff.reset();
                }
                if let Some(code) = self.follow(flow, shutdown)? {
                    return Ok(Some(code));
                }
            }
            if closed {
                return self.lost("closed by the server");
            }
        }
    }
}

/// Whether a frame has a version-3 layout: WELCOME with version byte 3,
/// or one of the codes only version 3 has.
fn is_v3_frame(code: u16, payload: &[u8]) -> bool {
    match code {
        code::WELCOME => v3::hello_version(payload) == Some(v3::VERSION_3),
        c => v3::SERVER_CODES.contains(&c),
    }
}
