//! A muxchat client that sends about 1 MB of valid frames in one write and
//! waits for every one of them to come back: the load for watching the
//! daemon's read budget (chapter section 6, exercise 3).
//!
//! ```text
//! cargo run --bin muxchatd -- --bind 127.0.0.1:25000 --rate 0 --trace-events
//! cargo run --example frame_burst -- --connect 127.0.0.1:25000
//! ```
//!
//! It says HELLO and JOINs `#burst`, then writes `--bytes` worth of SAY frames (4,000-byte texts) with a single
//! `write_all`, while a second thread reads the echoes. The reading matters:
//! the daemon echoes every SAY to its sender, and a client that writes 1 MB
//! without reading fills its own receive buffer, then the daemon's send
//! buffer, and the daemon stops reading it (backpressure, section 7): a
//! client that only writes would wait forever in its own `write_all`.
//!
//! The daemon limits frames per second per session (`--rate`, default 20),
//! so run it with `--rate 0`, or most SAYs come back as RATE_LIMITED.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use muxchat::codec::{code, ClientMessage, FrameReader};

#[derive(Parser)]
#[command(about = "Send ~1 MB of SAY frames in one write and wait for their echoes")]
struct Args {
    /// The daemon's address.
    #[arg(long, default_value = "127.0.0.1:25000")]
    connect: SocketAddr,
    /// How many bytes of SAY frames to send at once.
    #[arg(long, default_value_t = 1_000_000)]
    bytes: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("frame_burst: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> io::Result<()> {
    let mut stream = TcpStream::connect(args.connect)?;
    stream.set_read_timeout(Some(Duration::from_secs(args.timeout_secs)))?;
    let mut reader = FrameReader::new(1 << 20);
    let mut out = Vec::new();
    ClientMessage::Hello {
        version: 1,
        nick: "burst",
    }
    .encode(&mut out);
    ClientMessage::Join { room: "#burst" }.encode(&mut out);
    stream.write_all(&out)?;
    wait_for(&mut stream, &mut reader, code::JOINED, 1)?;

    let text = "b".repeat(4000);
    let mut burst = Vec::with_capacity(args.bytes + 4096);
    let mut frames = 0;
    while burst.len() < args.bytes {
        ClientMessage::Say {
            room: "#burst",
            text: &text,
        }
        .encode(&mut burst);
        frames += 1;
    }
    let bytes = burst.len();
    let started = Instant::now();
    // One write_all from a second thread, while this one reads the echoes.
    let mut writer = stream.try_clone()?;
    let sending = std::thread::spawn(move || writer.write_all(&burst));
    wait_for(&mut stream, &mut reader, code::MESSAGE, frames)?;
    sending
        .join()
        .map_err(|_| io::Error::other("the writer thread panicked"))??;
    println!(
        "sent {frames} SAY frames ({bytes} B) in one write; all {frames} echoed in {} ms",
        started.elapsed().as_millis()
    );

    out.clear();
    ClientMessage::Quit { reason: "done" }.encode(&mut out);
    stream.write_all(&out)?;
    wait_for(&mut stream, &mut reader, code::BYE, 1)?;
    Ok(()) // we close after BYE: the client closes first
}

/// Reads until `count` frames of `want` have arrived; an ERROR is fatal.
fn wait_for(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    want: u16,
    count: usize,
) -> io::Result<()> {
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| io::Error::other(format!("bad frame from the daemon: {e:?}")))?
        {
            if frame.code == want {
                seen += 1;
            } else if frame.code == code::ERROR {
                return Err(io::Error::other(format!(
                    "the daemon sent ERROR after {seen} of {count} (is --rate 0 set?)"
                )));
            }
        }
        if seen >= count {
            return Ok(());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("the daemon closed the connection"));
        }
        reader.extend(&buf[..n]);
    }
}
