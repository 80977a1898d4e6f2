//! The client's terminal side: typed lines in (a polled stdin, a script
//! or a redirected file, read without ever blocking the loop for long)
//! and the screen's lines out, written once per loop iteration. The loop
//! ([`super::session`]) decides what the lines mean.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use super::format::clock_prefix;

/// Unprocessed typed input held at most before reading stdin pauses.
const MAX_PENDING_INPUT: usize = 1024 * 1024;

/// One line of input, or its end.
pub(super) enum Line {
    Text(String),
    End,
}

/// Where typed lines come from.
pub(super) enum Input {
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
    /// Opens `--script FILE`, or stdin (polled if epoll accepts it, as
    /// `token`).
    pub(super) fn open(
        script: Option<&std::path::Path>,
        poll: &Poll,
        token: Token,
    ) -> Result<Input, String> {
        if let Some(path) = script {
            let f = File::open(path)
                .map_err(|e| format!("cannot open script {}: {e}", path.display()))?;
            return Ok(Input::Lines(Box::new(BufReader::new(f))));
        }
        let fd = io::stdin().as_raw_fd();
        match poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
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
    pub(super) fn drain_stdin(&mut self) {
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
    pub(super) fn has_ready_line(&self) -> bool {
        match self {
            Input::Polled { buf, eof, .. } => buf.contains(&b'\n') || *eof,
            Input::Lines(_) => true,
            Input::Done => false,
        }
    }

    /// The next whole line, if one is available now.
    pub(super) fn next_line(&mut self) -> Option<Line> {
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
pub(super) struct Screen {
    timestamps: bool,
    /// The lines produced this iteration, for [`Screen::flush`].
    pub(super) lines: Vec<String>,
    text: String,
}

impl Screen {
    /// An empty screen; `timestamps` puts the clock before every line.
    pub(super) fn new(timestamps: bool) -> Screen {
        Screen {
            timestamps,
            lines: Vec::new(),
            text: String::new(),
        }
    }

    /// Prints the lines produced, in one write.
    pub(super) fn flush(&mut self) -> Result<(), String> {
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
