//! Measures the ladder: the same chat load against rung 2 (`chat_threads`),
//! rung 3 (`chat_poll`) and rung 4 (`muxchatd`), and prints one table row
//! per run: server threads, memory, throughput, CPU. The line rungs after
//! rung 3 take the same load: 3b (`chat_mio`), 3c (`chat_oneshot`) and 3d
//! (`chat_uring`), to compare readiness with completion (section 14).
//!
//! ```text
//! cargo build --release --examples --bins
//! for rung in 2 3 4; do
//!   target/release/examples/ladder_load --rung $rung --clients 1000
//! done
//! ```
//!
//! The load: `--clients` connections join one room (rungs 2 and 3 have a
//! single room; on rung 4 they HELLO and JOIN `#load`). Once all of them are
//! in, the talk goes in `--rounds` rounds: in each, `--senders` of them each
//! send `--messages` lines at once, and the round ends when every client,
//! the senders included, has received every line (senders x messages x
//! clients deliveries). Rounds keep the servers from batching the whole
//! load into a few huge writes, and their duration is the fan-out latency:
//! the time for a burst of lines to reach a room of `--clients`.
//!
//! The last three columns are the server's own counters, read through its
//! stats request (rung 3 `/stats`, rung 4 STATS): over the talk, how often
//! `poll` woke and how many events it returned (rung 3: how many entries it
//! scanned); then the events over the whole run, connections and logins
//! included. Rung 2 has no loop to count.
//!
//! It starts the server itself (so it knows its pid and can read
//! `/proc/PID/status`), on 127.0.0.1 port 0, and kills it at the end. The
//! clients all live on this one thread, in one `mio` loop, like the daemon.
//! Linux only (it reads /proc). Note that the load generator shares the
//! machine with the server: on a 2-core machine the two compete for CPU,
//! and the figures are a comparison between rungs, not a benchmark.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use muxchat::codec::{code, ClientMessage, FrameReader, ServerMessage};

#[derive(Parser)]
#[command(about = "Measure the ladder's rungs (2, 3, 3b, 3c, 3d, 4) under the same chat load")]
struct Args {
    /// 2 = chat_threads, 3 = chat_poll, 4 = muxchatd; the other line
    /// rungs: 3b = chat_mio, 3c = chat_oneshot, 3d = chat_uring.
    #[arg(long, value_parser = ["2", "3", "3b", "3c", "3d", "4"])]
    rung: String,
    /// Connected clients, all in one room.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// How many of them talk.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Lines each sender sends per round, all at once.
    #[arg(long, default_value_t = 1)]
    messages: usize,
    /// Rounds: a round ends when every client has every line of it.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// The server binary (default: found next to this one in target/).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = 64)]
    connect_batch: usize,
    /// Print the table header first.
    #[arg(long)]
    header: bool,
}

/// One client connection of the load.
struct Conn {
    stream: TcpStream,
    /// Output not yet taken by the kernel: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Rungs 2–3: a partial line. Rung 4: the frame reassembly buffer.
    line: Vec<u8>,
    frames: Option<FrameReader>,
    nick: String,
    /// In the room (greeting received).
    ready: bool,
    /// Chat lines received after the start.
    got: u64,
    closed: bool,
    /// The server's answer to a stats request: (wake-ups, events) on rung 4,
    /// (wake-ups, entries scanned) on rung 3.
    stats: Option<(u64, u64)>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ladder_load: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> io::Result<()> {
    raise_fd_limit();
    let frames = args.rung == "4";
    let mut server = start_server(&args)?;
    let result = load(&args, &server, frames);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let r = result?;
    let mib = |kb: u64| kb as f64 / 1024.0;
    if args.header {
        println!(
            "| rung | server | clients | server threads | RSS, all connected (MiB) | peak RSS (MiB) \
             | deliveries | seconds | deliveries/s | round p50 (ms) | round p99 (ms) | server CPU s \
             | server wake-ups | server events (rung 3: entries scanned; 3d: completions) | events, whole run |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let (wakeups, events) = match r.counts {
        Some((w, e)) => (w.to_string(), e.to_string()),
        None => ("-".into(), "-".into()),
    };
    let events_total = r.events_total.map_or("-".into(), |e| e.to_string());
    println!(
        "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        args.rung,
        server.name,
        args.clients,
        r.threads,
        mib(r.rss_idle_kb),
        mib(r.peak_kb),
        r.deliveries,
        r.seconds,
        r.deliveries as f64 / r.seconds,
        r.round_p50_ms,
        r.round_p99_ms,
        r.cpu_secs,
        wakeups,
        events,
        events_total
    );
    Ok(())
}

struct Server {
    child: Child,
    addr: SocketAddr,
    name: &'static str,
}

/// Starts the server of the rung and reads its `listening on ADDR` line.
fn start_server(args: &Args) -> io::Result<Server> {
    // This binary is target/<profile>/examples/ladder_load.
    let exe = std::env::current_exe()?;
    let examples = exe.parent().unwrap_or(Path::new("."));
    let profile = examples.parent().unwrap_or(Path::new("."));
    let (name, default_path, extra): (_, _, &[&str]) = match args.rung.as_str() {
        "2" => ("chat_threads", examples.join("chat_threads"), &[]),
        "3" => ("chat_poll", examples.join("chat_poll"), &[]),
        "3b" => ("chat_mio", examples.join("chat_mio"), &[]),
        "3c" => ("chat_oneshot", examples.join("chat_oneshot"), &[]),
        "3d" => ("chat_uring", examples.join("chat_uring"), &[]),
        // No rate limit (this is a throughput test), and no JOINED fan-out
        // to the whole room for each of the 1,000 joins.
        _ => (
            "muxchatd",
            profile.join("muxchatd"),
            &["--rate", "0", "--presence-limit", "1"],
        ),
    };
    let path = args.server.clone().unwrap_or(default_path);
    let mut child = Command::new(&path)
        .args(["--bind", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", path.display())))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{name}: unexpected first line {line:?}")))?;
    Ok(Server { child, addr, name })
}

struct Outcome {
    threads: u64,
    rss_idle_kb: u64,
    peak_kb: u64,
    deliveries: u64,
    seconds: f64,
    cpu_secs: f64,
    round_p50_ms: f64,
    round_p99_ms: f64,
    /// Server wake-ups and events (rung 3: entries scanned) during the talk.
    counts: Option<(u64, u64)>,
    /// Server events (rung 3: entries scanned) over the whole run, the
    /// connections and logins included.
    events_total: Option<u64>,
}

/// Asks the server for its counters through the first client: `/stats` on
/// rung 3, STATS on rung 4 (rung 2 has none). The query itself adds a
/// wake-up or two, the same for every run.
fn server_counts(
    args: &Args,
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    scratch: &mut [u8],
) -> io::Result<Option<(u64, u64)>> {
    let c = &mut conns[0];
    c.stats = None;
    match args.rung.as_str() {
        "2" => return Ok(None),
        "4" => ClientMessage::Stats.encode(&mut c.out),
        _ => c.out.extend_from_slice(b"/stats\n"),
    }
    flush(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while conns[0].stats.is_none() {
        if Instant::now() > deadline {
            return Err(io::Error::other("no answer to the stats request"));
        }
        poll.poll(events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            flush(c);
            service(c, scratch, false);
        }
    }
    Ok(conns[0].stats)
}

/// Connects everyone, starts the talk, waits for every delivery.
fn load(args: &Args, server: &Server, frames: bool) -> io::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = Vec::with_capacity(args.clients);
    let mut scratch = vec![0u8; 64 * 1024];
    // Lines each client receives per round.
    let want = (args.senders * args.messages) as u64;

    // 1. Connect, a batch at a time (the listen backlog is finite), until
    //    everyone is in the room.
    let mut ready = 0;
    while ready < args.clients {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("only {ready} clients got in")));
        }
        while conns.len() < args.clients && conns.len() - ready < args.connect_batch {
            let i = conns.len();
            let mut stream = TcpStream::connect(server.addr)?;
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let nick = format!("u{i}");
            let mut out = Vec::new();
            if frames {
                ClientMessage::Hello {
                    version: 1,
                    nick: &nick,
                }
                .encode(&mut out);
                ClientMessage::Join { room: "#load" }.encode(&mut out);
            }
            conns.push(Conn {
                stream,
                out,
                sent: 0,
                line: Vec::new(),
                frames: frames.then(|| FrameReader::new(1 << 20)),
                nick,
                ready: false,
                got: 0,
                closed: false,
                stats: None,
            });
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            flush(c);
            ready += service(c, &mut scratch, false);
        }
    }

    // 2. Everyone is in: the server's memory and threads at rest.
    let pid = server.child.id();
    let threads = proc_status(pid, "Threads:");
    let rss_idle_kb = proc_status(pid, "VmRSS:");
    let cpu_before = cpu_secs(pid);
    let counts_before = server_counts(args, &mut poll, &mut events, &mut conns, &mut scratch)?;

    // 3. The senders talk: in each round every sender sends `messages`
    //    lines at once; the round ends when every client has all of them.
    let start = Instant::now();
    let per_round = want * args.clients as u64;
    let total = per_round * args.rounds as u64;
    let mut rounds = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut delivered = 0u64;
    let mut round_start = start;
    let mut last = start;
    for round in 0..args.rounds {
        for (i, c) in conns.iter_mut().take(args.senders).enumerate() {
            for m in 0..args.messages {
                let text = format!("t {round} {i} {m}");
                if frames {
                    ClientMessage::Say {
                        room: "#load",
                        text: &text,
                    }
                    .encode(&mut c.out);
                } else {
                    c.out.extend_from_slice(text.as_bytes());
                    c.out.push(b'\n');
                }
            }
            flush(c);
        }
        let target = per_round * (round as u64 + 1);
        while delivered < target {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "timed out: {delivered} of {total} deliveries"
                )));
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                flush(c);
                let before = c.got;
                service(c, &mut scratch, true);
                delivered += c.got - before;
                if c.closed {
                    return Err(io::Error::other(format!("{} was disconnected", c.nick)));
                }
            }
        }
        last = Instant::now();
        let micros = last.duration_since(round_start).as_micros() as u64;
        rounds.record(micros.max(1)).expect("record");
        round_start = last;
    }
    let seconds = last.duration_since(start).as_secs_f64();
    let cpu_secs = cpu_secs(pid) - cpu_before;
    let counts_after = server_counts(args, &mut poll, &mut events, &mut conns, &mut scratch)?;
    let counts = counts_before
        .zip(counts_after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1));
    let events_total = counts_after.map(|(_, e)| e);
    Ok(Outcome {
        threads,
        rss_idle_kb,
        peak_kb: proc_status(pid, "VmHWM:"),
        deliveries: delivered,
        seconds,
        cpu_secs,
        counts,
        events_total,
        round_p50_ms: rounds.value_at_quantile(0.5) as f64 / 1000.0,
        round_p99_ms: rounds.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Writes pending output until done or WouldBlock.
fn flush(c: &mut Conn) {
    while c.sent < c.out.len() && !c.closed {
        match c.stream.write(&c.out[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Not connected yet: a WRITABLE event will come.
            Err(e) if e.kind() == ErrorKind::NotConnected => return,
            Err(_) => c.closed = true,
        }
    }
    c.out.clear();
    c.sent = 0;
}

/// Reads until WouldBlock (mio is edge-triggered) and handles what came.
/// Returns 1 if the client just became ready. `talking` counts chat lines.
fn service(c: &mut Conn, scratch: &mut [u8], talking: bool) -> usize {
    let was_ready = c.ready;
    loop {
        if let Some(reader) = c.frames.as_mut() {
            let stop = match reader.read_from(&mut c.stream) {
                Ok(0) => {
                    c.closed = true;
                    true
                }
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::Interrupted => false,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected) => {
                    true
                }
                Err(_) => {
                    c.closed = true;
                    true
                }
            };
            while let Ok(Some(f)) = reader.next_frame() {
                match (f.code, ServerMessage::decode(f.code, f.payload)) {
                    (code::JOINED, Ok(ServerMessage::Joined { nick, .. })) if nick == c.nick => {
                        c.ready = true;
                    }
                    (code::STATS_REPLY, Ok(ServerMessage::StatsReply(list))) => {
                        let get = |k: &str| list.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                        c.stats = get("poll_wakeups").zip(get("events"));
                    }
                    (code::MESSAGE, _) if talking => c.got += 1,
                    _ => {}
                }
            }
            if stop {
                break;
            }
        } else {
            let n = match c.stream.read(scratch) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock, NotConnected, or an error
            };
            c.line.extend_from_slice(&scratch[..n]);
            let mut start = 0;
            while let Some(nl) = c.line[start..].iter().position(|&b| b == b'\n') {
                let line = &c.line[start..start + nl];
                if line.starts_with(b"welcome ") {
                    c.ready = true;
                } else if let Some(rest) = line.strip_prefix(b"stats ") {
                    // stats clients=C wakeups=W scanned=S (rung 3) or
                    // events=E (3b-3d: epoll events, or completions)
                    let text = String::from_utf8_lossy(rest);
                    let get = |k: &str| {
                        text.split_whitespace()
                            .find_map(|f| f.strip_prefix(k)?.parse::<u64>().ok())
                    };
                    c.stats = get("wakeups=").zip(get("scanned=").or_else(|| get("events=")));
                } else if talking && line.windows(4).any(|w| w == b": t ") {
                    c.got += 1;
                }
                start += nl + 1;
            }
            c.line.drain(..start);
        }
        if c.closed {
            break;
        }
    }
    usize::from(c.ready && !was_ready)
}

/// A `/proc/PID/status` value (kB for memory lines), 0 if unreadable.
fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name: utime is the 12th,
    // stime the 13th (fields 14 and 15 of proc(5)).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// 1,000 clients need 1,000+ descriptors here and in the server (which
/// inherits the limit): raise the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
