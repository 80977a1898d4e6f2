//! The last rung of the course: UDP. A sender and a receiver of datagrams,
//! to see what TCP was doing for us.
//!
//! ```text
//! cargo run --example udp_broadcast -- --recv 127.0.0.1:7006
//! cargo run --example udp_broadcast -- --send 127.0.0.1:7006 --msg hello --msg "two words"
//! # a broadcast that never leaves this machine: the loopback's own
//! # broadcast address (Linux routes 127.255.255.255 to `lo`)
//! cargo run --example udp_broadcast -- --recv 127.255.255.255:7006
//! cargo run --example udp_broadcast -- --send 127.255.255.255:7006 --broadcast --msg all
//! ```
//!
//! What it shows:
//!
//! - **Boundaries are kept.** One `send_to` is one datagram is one
//!   `recv_from`: three sends of 1, 1,000 and 60,000 bytes are three
//!   receives of exactly those sizes, never merged, never split. (A receive
//!   buffer smaller than the datagram *truncates* it: the rest is lost.)
//!   Compare section 5, where TCP moved the boundaries freely.
//! - **No connection.** No handshake, no accept: the sender just sends. A
//!   datagram to a port where nobody listens vanishes; the sender's
//!   `send_to` succeeds all the same (the ICMP "port unreachable" that comes
//!   back is reported only on a *connected* UDP socket, as ECONNREFUSED on a
//!   later call).
//! - **Nobody waits for a slow reader.** A receiver that does not read
//!   lets datagrams pile up in its receive buffer (SO_RCVBUF); when it is
//!   full, the kernel drops the new ones, silently: no error to anyone, no
//!   backpressure (`--pause-ms` shows it).
//! - **Broadcast needs permission.** Sending to a broadcast address fails
//!   with EACCES unless the socket has SO_BROADCAST (`--broadcast`): one
//!   datagram to every host of a network is too easy to do by mistake. A
//!   receiver gets broadcasts if it is bound to the wildcard address or to
//!   the broadcast address itself; this example binds the latter, so the
//!   demo stays on `lo`. Never aim a broadcast at a real network from a
//!   test: a test may only use loopback or a network namespace it made.

use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Parser;

/// The largest UDP payload over IPv4: 65,535 minus the IP and UDP headers.
const MAX_DATAGRAM: usize = 65_507;

#[derive(Parser)]
#[command(about = "UDP: datagrams keep boundaries, need no connection, and may be dropped")]
struct Args {
    /// Receiver: bind here and print every datagram.
    #[arg(long, conflicts_with = "send")]
    recv: Option<SocketAddr>,
    /// Receiver: the socket's receive buffer (SO_RCVBUF) in bytes.
    #[arg(long)]
    rcvbuf: Option<usize>,
    /// Receiver: wait this long before the first read, like a busy program.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Receiver: read into a buffer of this size (a smaller datagram fits,
    /// a larger one is truncated).
    #[arg(long, default_value_t = MAX_DATAGRAM)]
    buffer: usize,
    /// Receiver: exit after this long without a datagram.
    #[arg(long, default_value_t = 1000)]
    idle_ms: u64,
    /// Sender: send to this address.
    #[arg(long)]
    send: Option<SocketAddr>,
    /// Sender: a datagram's text (repeat for several).
    #[arg(long)]
    msg: Vec<String>,
    /// Sender: also send datagrams of these sizes, in bytes (repeatable).
    #[arg(long)]
    size: Vec<usize>,
    /// Sender: send every datagram this many times.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Sender: set SO_BROADCAST, needed to send to a broadcast address.
    #[arg(long)]
    broadcast: bool,
}

fn main() {
    let args = Args::parse();
    let result = match (args.recv, args.send) {
        (Some(addr), _) => receiver(addr, &args),
        (None, Some(to)) => sender(to, &args),
        (None, None) => Err(io::Error::other("give --recv ADDR or --send ADDR")),
    };
    if let Err(e) = result {
        eprintln!("udp_broadcast: {e}");
        std::process::exit(1);
    }
}

fn receiver(addr: SocketAddr, args: &Args) -> io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    if let Some(bytes) = args.rcvbuf {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    println!("listening on {}", socket.local_addr()?);
    io::stdout().flush()?;
    // Datagrams that arrive now queue in the receive buffer, or are dropped
    // once it is full.
    std::thread::sleep(Duration::from_millis(args.pause_ms));

    socket.set_read_timeout(Some(Duration::from_millis(args.idle_ms.max(1))))?;
    let mut buf = vec![0u8; args.buffer.clamp(1, MAX_DATAGRAM)];
    let (mut count, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        // One recv_from, one whole datagram (or its first buf.len() bytes).
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                count += 1;
                bytes += n as u64;
                let text = String::from_utf8_lossy(&buf[..n.min(40)]);
                println!("datagram {n} B from {from}: {text}");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    println!(
        "received {count} datagrams, {bytes} B, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn sender(to: SocketAddr, args: &Args) -> io::Result<()> {
    // Port 0: any local port. No connect, no handshake.
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local)?;
    if args.broadcast {
        socket.set_broadcast(true)?;
    }
    let mut datagrams: Vec<Vec<u8>> = args.msg.iter().map(|m| m.clone().into_bytes()).collect();
    for &size in &args.size {
        let size = size.min(MAX_DATAGRAM);
        datagrams.push((0..size).map(|i| b'a' + (i % 26) as u8).collect());
    }
    let mut sent = 0;
    for _ in 0..args.repeat {
        for d in &datagrams {
            match socket.send_to(d, to) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("send to {to}: {e}: a broadcast address needs SO_BROADCAST (--broadcast)"),
                    ));
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("send to {to}: {e}"))),
            }
        }
    }
    // Success means "handed to the kernel", not "received".
    println!(
        "sent {} datagrams, {sent} B, to {to}",
        datagrams.len() * args.repeat
    );
    Ok(())
}
