//! Rung 2 of the ladder: a chat server with one thread per client.
//!
//! ```text
//! cargo run --example chat_threads -- --bind 127.0.0.1:7001
//! nc 127.0.0.1 7001          # in two terminals; type lines in either
//! ```
//!
//! Protocol (for `nc`): the server greets each client with
//! `welcome guestN`, and every line a client sends goes to every client,
//! the sender included, as `guestN: line`.
//!
//! Rung 1 served one client at a time because `read()` blocked the only
//! thread. The classic fix is to give each client its own thread, which may
//! block as much as it likes. The clients must now *share* something, the
//! list of who is connected, so the list lives behind a `Mutex`.
//!
//! It works, and it shows three costs (see `tests/ladder.rs`):
//! - one thread, with its own stack, per client (`rung2_one_thread_per_client`);
//! - every line takes the lock, so all clients contend for it;
//! - `broadcast` writes to every client *while holding the lock*, with a
//!   blocking `write_all`. A client that never reads fills its socket's send
//!   buffer; the write to it then blocks, the lock stays held, and nobody
//!   else hears anything (`rung2_never_reading_client_stalls_broadcast`).
//!   Rung 3 (`chat_poll.rs`) fixes that with one thread and non-blocking
//!   sockets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use clap::Parser;

/// Longest line a client may send; a longer one is cut there.
const MAX_LINE: u64 = 4096;

#[derive(Parser)]
#[command(about = "Rung 2: chat with one thread per client and a shared list")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7001")]
    bind: SocketAddr,
    /// Clients beyond this get `server full` and are closed.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
}

/// One connected client, as the other threads see it: a name and a handle
/// to write to.
struct Client {
    id: u64,
    stream: TcpStream,
}

/// The shared state: everyone who is connected. Every thread that wants to
/// read or change it must take the lock first.
type Clients = Arc<Mutex<Vec<Client>>>;

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let clients: Clients = Arc::new(Mutex::new(Vec::new()));
    let mut next_id = 0u64;
    // The main thread only accepts; each client gets a thread of its own.
    loop {
        let (mut stream, _peer) = match listener.accept() {
            Ok(conn) => conn,
            // e.g. EMFILE (out of file descriptors): log and go on.
            Err(e) => {
                eprintln!("accept: {e}");
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if lock(&clients).len() >= args.max_clients {
            let _ = stream.write_all(b"server full\n");
            continue; // dropping `stream` closes it
        }
        next_id += 1;
        let id = next_id;
        let clients = Arc::clone(&clients);
        // Each thread costs a stack (2 MiB of address space by default, of
        // which the pages it touches become real memory) and a kernel task.
        let spawned = thread::Builder::new()
            .name(format!("guest{id}"))
            .spawn(move || client_thread(id, stream, clients));
        if let Err(e) = spawned {
            eprintln!("cannot start a thread for guest{id}: {e}");
        }
    }
}

/// Takes the lock. A thread that panicked while holding it "poisons" it;
/// the list is still usable, so we carry on with it.
fn lock(clients: &Clients) -> std::sync::MutexGuard<'_, Vec<Client>> {
    clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The life of one client, on its own thread: join, then read lines and
/// broadcast them until the client leaves.
fn client_thread(id: u64, stream: TcpStream, clients: Clients) {
    let name = format!("guest{id}");
    {
        // Greet and join under the lock, so no broadcast can slip in
        // between the greeting and the join.
        let mut list = lock(&clients);
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        if writer
            .write_all(format!("welcome {name}\n").as_bytes())
            .is_err()
        {
            return;
        }
        list.push(Client { id, stream: writer });
    }

    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Blocking read: this thread sleeps until its client says something.
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break, // closed or reset
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            broadcast(&clients, format!("{name}: {text}\n").as_bytes());
        }
    }
    // Leave: take ourselves out of the list (if a broadcast has not already
    // removed us because writing to us failed).
    lock(&clients).retain(|c| c.id != id);
}

/// Sends `msg` to every client, **holding the lock the whole time**.
///
/// This is the flaw of this rung. `write_all` on a blocking socket returns
/// only when the kernel has taken every byte. If a client never reads, its
/// receive buffer and our send buffer fill up, and `write_all` waits for
/// it, possibly forever, with the lock held. Every other thread then waits
/// for the lock, and the whole room goes silent.
fn broadcast(clients: &Clients, msg: &[u8]) {
    let mut list = lock(clients);
    list.retain_mut(|c| match c.stream.write_all(msg) {
        Ok(()) => true,
        Err(_) => {
            // The client is gone (reset, EPIPE): drop it from the list and
            // wake its thread, which is blocked reading, so it can exit.
            let _ = c.stream.shutdown(Shutdown::Both);
            false
        }
    });
}
