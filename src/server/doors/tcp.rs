//! The socket under every door: plain TCP, and the TLS layer over it once
//! the first byte asked for TLS. The binary door is this file alone: its
//! frames go straight through, read into the chat's buffer and written
//! from the session's `OutBuf` (the seam's fast path,
//! [`Transport::read`](super::Transport::read) and
//! [`Transport::flush`](super::Transport::flush), does not even come
//! here).

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use super::meter::Meter;
use super::tls::Tls;

/// The socket, and the TLS connection over it once the first byte asked
/// for TLS.
pub(super) struct Io {
    pub(super) stream: TcpStream,
    pub(super) tls: Option<Box<Tls>>,
    /// In the loop's handshake FIFO.
    pub(super) queued: bool,
}

impl Io {
    pub(super) fn new(stream: TcpStream) -> Io {
        Io {
            stream,
            tls: None,
            queued: false,
        }
    }

    /// Reads stream bytes: plaintext out of rustls when TLS, feeding it
    /// ciphertext from the socket as needed (see [`Tls::read`]). `Ok(0)`
    /// is the end. Plain TCP charges `m` the bytes read.
    pub(super) fn read(&mut self, buf: &mut [u8], m: &mut Meter<'_>) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                let n = (&self.stream).read(buf)?;
                m.cost.work += n;
                Ok(n)
            }
            Some(tls) => tls.read(&self.stream, buf, m),
        }
    }

    /// Bytes the kernel holds in this socket's send queue and has not sent
    /// yet (see [`Transport::kernel_queued`](super::Transport::kernel_queued)).
    pub(super) fn kernel_queued(&self) -> usize {
        kernel_queued(self.stream.as_raw_fd())
    }

    /// SO_LINGER 0: closing sends RST.
    pub(super) fn set_abortive(&self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(std::time::Duration::ZERO));
    }
}

/// SIOCOUTQNSD for `fd`.
#[cfg(target_os = "linux")]
fn kernel_queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer we pass,
    // which points to a live local.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD as _, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_queued(_fd: RawFd) -> usize {
    0
}
