//! Rung 1 of the ladder: a blocking echo server (and its client).
//!
//! ```text
//! cargo run --example echo_blocking -- --bind 127.0.0.1:7000
//! nc 127.0.0.1 7000          # type a line, get it back
//! cargo run --example echo_blocking -- --connect 127.0.0.1:7000
//! ```
//!
//! This is the program every network course starts with: `socket`, `bind`,
//! `listen`, `accept`, then `read` and `write` until the peer closes. Rust's
//! `TcpListener::bind` does the first three system calls in one go.
//!
//! Every call here *blocks*: the thread sleeps inside the kernel until the
//! call can complete. That is simple and correct for one client, and it is
//! exactly the flaw the next rung fixes: while `serve_one` is busy with the
//! first client, nobody calls `accept` again, so a second client connects
//! (the kernel finishes its handshake and parks it in the listen backlog)
//! and then waits, with no answer, until the first one leaves.
//! `tests/ladder.rs` (`rung1_second_client_waits`) shows it.
//!
//! Compare it with `chat_threads.rs` (rung 2): the same blocking calls,
//! one thread per client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use clap::Parser;

/// Longest line we echo; a longer one is cut there. Every buffer has a limit.
const MAX_LINE: u64 = 4096;

#[derive(Parser)]
#[command(about = "Rung 1: a blocking echo server, one client at a time")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    bind: SocketAddr,
    /// Serve this many clients, then exit (0 = forever).
    #[arg(long, default_value_t = 0)]
    max_conns: u64,
    /// Client mode: connect here, send each stdin line, print the echo.
    #[arg(long)]
    connect: Option<SocketAddr>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    match args.connect {
        Some(addr) => client(addr),
        None => server(args.bind, args.max_conns),
    }
}

/// The server: one loop around `accept`, one client at a time.
fn server(bind: SocketAddr, max_conns: u64) -> io::Result<()> {
    // socket() + bind() + listen(). The listening socket is a file
    // descriptor like any other; it never carries data, it only hands out
    // new connected sockets.
    let listener = TcpListener::bind(bind)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut served = 0;
    while max_conns == 0 || served < max_conns {
        // accept() blocks until a connection is waiting in the backlog.
        let (stream, peer) = listener.accept()?;
        eprintln!("client {peer} connected");
        // While this call runs, nobody is calling accept(): the next client
        // waits. One client's error must not kill the server, so we log it.
        if let Err(e) = serve_one(stream) {
            eprintln!("client {peer}: {e}");
        }
        eprintln!("client {peer} gone");
        served += 1;
    }
    Ok(())
}

/// Echoes lines back to one client until it closes its side.
fn serve_one(stream: TcpStream) -> io::Result<()> {
    // Two handles on one socket: a buffered reader and a writer.
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // read() blocks until *some* bytes arrive. TCP has no message
        // boundaries: one read may return half a line or three lines, so
        // the BufReader keeps the leftovers and cuts at '\n' for us.
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(()); // read() returned 0: the peer closed (FIN).
        }
        // write_all() blocks until the kernel has taken every byte into the
        // socket's send buffer (not until the peer has read them).
        writer.write_all(&line)?;
    }
}

/// The client: send each stdin line, wait for its echo, print it.
fn client(addr: SocketAddr) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?; // socket() + connect()
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    for line in io::stdin().lock().lines() {
        // One write per line. Two small writes ("text", then "\n") would
        // meet Nagle's algorithm: the second waits for the ACK of the first,
        // which the server delays, and every line costs ~40 ms.
        writer.write_all(format!("{}\n", line?).as_bytes())?;
        reply.clear();
        if reader.read_line(&mut reply)? == 0 {
            eprintln!("server closed the connection");
            break;
        }
        print!("{reply}");
    }
    // Dropping the socket closes it. The client closes first, so the
    // TIME_WAIT state lands here and not on the server.
    Ok(())
}
