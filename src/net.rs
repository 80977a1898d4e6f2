//! Socket-side helpers shared by the daemon, the chat client and the load
//! generator: the write buffer every non-blocking writer needs, and the
//! open-file limit every program with many sockets raises.
//!
//! Nothing here knows about `mio`: a writer is anything `Write`, and
//! "would block" is a reason to stop, not an error.

use std::io::{self, Write};

use crate::codec::{resp, ClientMessage, ServerMessage};

/// Pending output: whole frames queued but not yet taken by the kernel.
/// The daemon keeps one per session and one per Redis link, the client
/// and the load generator one per connection.
///
/// Invariants: `buf[pos..]` is unsent, `buf[..pos]` was sent and is dead.
/// Appends go to the end; writes take from `pos`. The dead prefix is
/// reclaimed when everything is sent (`clear`) or when it is at least as
/// large as what is left (one move, amortised O(1) per byte), never by a
/// `drain` per write. A drained buffer keeps its allocation while its
/// session receives output every loop iteration (regrowing it each time
/// cost a realloc copy per doubling); the event loop releases it one
/// iteration after the session goes quiet, so idle sessions hold none.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Queues encoded frames (the fan-out path: one memcpy).
    pub fn append(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Encodes one server message straight into the buffer.
    pub fn push(&mut self, msg: &ServerMessage<'_>) {
        msg.encode(&mut self.buf);
    }

    /// Encodes one client message straight into the buffer.
    pub fn push_client(&mut self, msg: &ClientMessage<'_>) {
        msg.encode(&mut self.buf);
    }

    /// Encodes one RESP command straight into the buffer (a Redis link).
    pub fn push_command(&mut self, args: &[&[u8]]) {
        resp::encode(&mut self.buf, args);
    }

    /// Writes until the buffer is empty or the socket would block. Returns
    /// the bytes written; `WouldBlock` is not an error here, only a reason
    /// to stop (the bytes left over wait for WRITABLE readiness).
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let start = self.pos;
        write_some(&self.buf, &mut self.pos, w)?;
        let written = self.pos - start;
        self.reclaim();
        Ok(written)
    }

    /// The bytes queued and not yet written, for a writer that wraps them
    /// (a WebSocket message) before they reach the socket.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks the first `n` pending bytes as written (after a wrapping
    /// writer took them).
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.pending());
        self.pos += n.min(self.pending());
        self.reclaim();
    }

    fn reclaim(&mut self) {
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        } else if self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Frees the buffer's memory if nothing is pending (idle sessions).
    pub fn release_if_empty(&mut self) {
        if self.pending() == 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Drops everything pending, keeping the allocation. Benchmarks use
    /// this, and a Redis link that went down (its requests are lost with
    /// the connection); a live session never loses queued output.
    pub fn discard(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Bytes of heap held (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Writes `bytes[*sent..]` until done or `WouldBlock`, advancing `sent`.
/// Returns whether all of it is out. The one write loop for a contiguous
/// buffer: `OutBuf` (so sessions and Redis links) and the WebSocket door's
/// held-back bytes write through here; the vectored writers (an HTTP
/// answer's head and body, a WebSocket header before its payload) keep
/// their own `writev` loops.
#[inline]
pub fn write_some<W: Write>(bytes: &[u8], sent: &mut usize, sink: &mut W) -> io::Result<bool> {
    while *sent < bytes.len() {
        match sink.write(&bytes[*sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (every connection is a
/// descriptor, and the usual soft limit of 1024 is far below what a server
/// or a load generator needs). Returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim = wanted;
            }
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `chunk` bytes per call, then blocks.
    struct Trickle {
        taken: Vec<u8>,
        chunk: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = b.len().min(self.chunk);
            self.taken.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_compact() {
        let mut out = OutBuf::default();
        let data: Vec<u8> = (0..100u8).collect();
        out.append(&data);
        let mut w = Trickle {
            taken: Vec::new(),
            chunk: 30,
            calls_left: 2,
        };
        assert_eq!(out.write_to(&mut w).unwrap(), 60);
        assert_eq!(out.pending(), 40);
        // 60 sent >= 40 left: the dead prefix was reclaimed.
        assert_eq!(out.pos, 0);
        out.append(&[200, 201]);
        w.calls_left = 10;
        assert_eq!(out.write_to(&mut w).unwrap(), 42);
        assert_eq!(out.pending(), 0);
        let mut want = data.clone();
        want.extend_from_slice(&[200, 201]);
        assert_eq!(w.taken, want);
    }

    #[test]
    fn drained_buffer_keeps_its_allocation_until_released() {
        let mut out = OutBuf::default();
        out.append(&vec![7u8; 10_000]);
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        assert_eq!(out.pending(), 0);
        assert!(out.capacity() >= 10_000);
        out.release_if_empty();
        assert_eq!(out.capacity(), 0);
        // Pending bytes are never released.
        out.append(&[1, 2, 3]);
        out.release_if_empty();
        assert_eq!(out.pending(), 3);
    }
}
