//! The client's event loop: one thread, one `mio::Poll`, two sources.
//!
//! ```text
//!   stdin (fd 0) ──readable──▶ line queue ──▶ Chat::command ──▶ out buffer ─┐
//!                                                                           │ one write
//!   socket ──readable──▶ FrameReader ──▶ Chat::server ──▶ screen lines      ▼
//!                                           └──▶ PONG etc. ──▶ out buffer ──▶ socket
//! ```
//!
//! Each iteration: (1) act on queued input lines, if registration allows;
//! (2) write the out buffer until empty or `WouldBlock`; (3) print the lines
//! produced; (4) poll; (5) drain every ready source until `WouldBlock`.
//!
//! Stdin is registered with the same `Poll` when it can be (a terminal or a
//! pipe). A regular file (or `/dev/null`) cannot be registered with epoll:
//! then it is read a line at a time between polls, with a zero poll timeout
//! while lines remain, so the socket is still served throughout.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::command::parse;
use super::format::clock_prefix;
use super::state::{Chat, Flow};
use super::Config;
use crate::protocol::{FrameReader, ServerMessage};

const SOCKET: Token = Token(0);
const STDIN: Token = Token(1);

/// How long to wait for BYE after sending QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(5);
/// How long a TCP connect may take per resolved address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame accepted from the server (room and user lists can be
/// long); anything larger is a broken server and ends the session.
const MAX_SERVER_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Unprocessed typed input held at most before reading stdin pauses.
const MAX_PENDING_INPUT: usize = 1024 * 1024;

/// One line of input, or its end.
enum Line {
    Text(String),
    End,
}

/// Where typed lines come from.
enum Input {
    /// A pollable fd 0 (terminal, pipe): bytes read on readiness, cut into
    /// lines here. `more` means readiness was not drained (budget or cap), so
    /// the loop must look again without waiting for a new edge.
    Polled { buf: Vec<u8>, eof: bool, more: bool },
    /// A regular file (a script, or stdin redirected from a file): read a
    /// line at a time, never blocks for long.
    Lines(Box<dyn BufRead>),
    /// Input has ended and the end was reported.
    Done,
}

impl Input {
    /// Opens `--script FILE`, or stdin (polled if epoll accepts it).
    fn open(script: Option<&std::path::Path>, poll: &Poll) -> Result<Input, String> {
        if let Some(path) = script {
            let f = File::open(path)
                .map_err(|e| format!("cannot open script {}: {e}", path.display()))?;
            return Ok(Input::Lines(Box::new(BufReader::new(f))));
        }
        let fd = io::stdin().as_raw_fd();
        match poll
            .registry()
            .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)
        {
            Ok(()) => Ok(Input::Polled {
                buf: Vec::new(),
                eof: false,
                more: true,
            }),
            // EPERM: a regular file or /dev/null; epoll has no readiness
            // for them (they are always "ready"), so read them directly.
            Err(_) => Ok(Input::Lines(Box::new(BufReader::new(io::stdin())))),
        }
    }

    /// Reads what fd 0 has now, without blocking: poll(2) with a zero
    /// timeout before every read, so fd 0 never needs O_NONBLOCK (which
    /// would also change a terminal shared with the shell and stdout).
    fn drain_stdin(&mut self) {
        let Input::Polled { buf, eof, more } = self else {
            return;
        };
        *more = false;
        for _ in 0..64 {
            if *eof {
                return;
            }
            if buf.len() >= MAX_PENDING_INPUT {
                *more = true;
                return;
            }
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own, zero timeout.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n <= 0 {
                return;
            }
            let mut chunk = [0u8; 16 * 1024];
            match io::stdin().lock().read(&mut chunk) {
                Ok(0) => *eof = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => *eof = true,
            }
        }
        *more = true;
    }

    /// Whether a line can be had without waiting for readiness.
    fn has_ready_line(&self) -> bool {
        match self {
            Input::Polled { buf, eof, .. } => buf.contains(&b'\n') || *eof,
            Input::Lines(_) => true,
            Input::Done => false,
        }
    }

    /// The next whole line, if one is available now.
    fn next_line(&mut self) -> Option<Line> {
        let line = match self {
            Input::Polled { buf, eof, .. } => {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let rest = buf.split_off(i + 1);
                    let line = std::mem::replace(buf, rest);
                    Line::Text(String::from_utf8_lossy(&line).into_owned())
                } else if *eof && !buf.is_empty() {
                    Line::Text(String::from_utf8_lossy(&std::mem::take(buf)).into_owned())
                } else if *eof {
                    Line::End
                } else {
                    return None;
                }
            }
            Input::Lines(r) => {
                let mut s = String::new();
                match r.read_line(&mut s) {
                    Ok(0) | Err(_) => Line::End,
                    Ok(_) => Line::Text(s),
                }
            }
            Input::Done => return None,
        };
        if matches!(line, Line::End) {
            *self = Input::Done;
        }
        Some(line)
    }
}

/// Lines waiting to be printed, written to stdout once per iteration.
struct Screen {
    timestamps: bool,
    lines: Vec<String>,
    text: String,
}

impl Screen {
    fn flush(&mut self) -> Result<(), String> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let stamp = if self.timestamps {
            clock_prefix()
        } else {
            String::new()
        };
        self.text.clear();
        for line in self.lines.drain(..) {
            self.text.push_str(&stamp);
            self.text.push_str(&line);
            self.text.push('\n');
        }
        let mut out = io::stdout().lock();
        out.write_all(self.text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))
    }
}

/// Resolves `target` (a missing port means 25000) and connects to the first
/// address that answers.
pub fn connect(target: &str) -> Result<TcpStream, String> {
    let with_port;
    let target = if target.contains(':') {
        target
    } else {
        with_port = format!("{target}:25000");
        &with_port
    };
    let addrs = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?;
    let mut last = format!("cannot resolve {target}: no addresses");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_nodelay(true)
                    .and_then(|()| s.set_nonblocking(true))
                    .map_err(|e| format!("cannot set up the socket to {addr}: {e}"))?;
                return Ok(TcpStream::from_std(s));
            }
            Err(e) => last = format!("cannot connect to {target} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// Writes `out[*sent..]` until done or `WouldBlock`.
fn flush(stream: &mut TcpStream, out: &mut Vec<u8>, sent: &mut usize) -> io::Result<()> {
    while *sent < out.len() {
        match stream.write(&out[*sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.clear();
    *sent = 0;
    Ok(())
}

/// Runs the session until `/quit`, the end of input, BYE or SHUTDOWN.
/// `Ok` carries the exit status; `Err` is a one-line reason to exit 1.
pub fn run(cfg: &Config) -> Result<i32, String> {
    let mut stream = connect(&cfg.connect)?;
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
    poll.registry()
        .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| format!("cannot poll the socket: {e}"))?;
    let mut input = Input::open(cfg.script.as_deref(), &poll)?;
    let mut screen = Screen {
        timestamps: cfg.timestamps,
        lines: Vec::new(),
        text: String::new(),
    };
    let result = serve(&mut poll, &mut stream, &mut input, &mut screen, cfg);
    // Whatever happened, show what was received before it.
    let printed = screen.flush();
    let code = result?;
    printed?;
    Ok(code)
}

fn serve(
    poll: &mut Poll,
    stream: &mut TcpStream,
    input: &mut Input,
    screen: &mut Screen,
    cfg: &Config,
) -> Result<i32, String> {
    let mut chat = Chat::new(&cfg.nick, cfg.joins.clone());
    let mut out = Vec::new();
    let mut sent = 0;
    chat.hello(&mut out);
    let mut reader = FrameReader::new(MAX_SERVER_PAYLOAD);
    let mut events = Events::with_capacity(16);
    let mut sleep_until: Option<Instant> = None;
    let mut quit_deadline: Option<Instant> = None;

    loop {
        // 1. Act on typed lines, unless HELLO is unanswered, we are
        //    quitting, or a /sleep is running.
        if sleep_until.is_some_and(|t| Instant::now() >= t) {
            sleep_until = None;
        }
        while chat.ready_for_input() && quit_deadline.is_none() && sleep_until.is_none() {
            let Some(line) = input.next_line() else {
                break;
            };
            let flow = match line {
                Line::End => chat.command(
                    super::command::Command::Quit(""),
                    &mut out,
                    &mut screen.lines,
                ),
                Line::Text(text) => match parse(&text) {
                    Ok(cmd) => chat.command(cmd, &mut out, &mut screen.lines),
                    Err(e) => {
                        screen.lines.push(format!("! {}", e.0));
                        Flow::Continue
                    }
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Sleep(d) => sleep_until = Some(Instant::now() + d),
                Flow::Quitting => quit_deadline = Some(Instant::now() + QUIT_WAIT),
                Flow::Exit(code) => return Ok(code),
            }
        }
        // Lines that arrive meanwhile wait in the input buffer (polled
        // stdin, capped) or unread in their file.

        // 2. Write everything queued, in as few writes as the kernel allows.
        flush(stream, &mut out, &mut sent).map_err(|e| format!("connection lost: {e}"))?;
        // 3. Show what happened.
        screen.flush()?;

        // 4. Wait for the next event, the end of a /sleep, or the QUIT wait.
        let now = Instant::now();
        if quit_deadline.is_some_and(|t| now >= t) {
            screen
                .lines
                .push("* no BYE from the server; closing".into());
            return Ok(0);
        }
        let can_act = chat.ready_for_input() && quit_deadline.is_none() && sleep_until.is_none();
        let stdin_more = matches!(input, Input::Polled { more: true, .. });
        let timeout = if stdin_more || (can_act && input.has_ready_line()) {
            Some(Duration::ZERO)
        } else {
            [sleep_until, quit_deadline]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }

        // 5. Drain whatever is ready.
        if stdin_more {
            input.drain_stdin();
        }
        for event in events.iter() {
            match event.token() {
                STDIN => input.drain_stdin(),
                SOCKET => {
                    if let Some(code) = read_socket(
                        stream,
                        &mut reader,
                        &mut chat,
                        &mut out,
                        screen,
                        quit_deadline,
                    )? {
                        return Ok(code);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Reads the socket until `WouldBlock`, handing each frame to `chat`.
/// `Some(code)` ends the session.
fn read_socket(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    chat: &mut Chat,
    out: &mut Vec<u8>,
    screen: &mut Screen,
    quit_deadline: Option<Instant>,
) -> Result<Option<i32>, String> {
    loop {
        let closed = match reader.read_from(stream) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if quit_deadline.is_some() => {
                screen.lines.push(format!("* connection ended ({e})"));
                return Ok(Some(0));
            }
            Err(e) => return Err(format!("connection lost: {e}")),
        };
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Err("the server sent a frame larger than 16 MiB".into()),
            };
            let msg = match ServerMessage::decode(frame.code, frame.payload) {
                Ok(m) => m,
                Err(e) => {
                    screen.lines.push(format!(
                        "! ignored a frame the client cannot read (code {}, {e:?})",
                        frame.code
                    ));
                    continue;
                }
            };
            if let Flow::Exit(code) = chat.server(&msg, out, &mut screen.lines) {
                return Ok(Some(code));
            }
        }
        if closed {
            return if quit_deadline.is_some() {
                Ok(Some(0))
            } else if chat.fatal {
                Err("disconnected by the server".into())
            } else {
                Err("connection closed by the server".into())
            };
        }
    }
}
