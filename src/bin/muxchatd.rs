//! `muxchatd`: the chat daemon. A thin shell over [`muxchat::server`]: parse
//! and validate the options (usage errors exit 2), bind (start-up errors
//! exit 1 with one line naming the address), print `listening on ADDR`,
//! run the loop until a signal's drain completes (exit 0).

use std::io::Write;
use std::process::ExitCode;

use log::{info, warn};
use muxchat::codec::pem::TlsError;
use muxchat::server::cluster::ClusterError;
use muxchat::server::config::{Config, LogFormat};
use muxchat::server::logfmt;
use muxchat::server::moderation::state_file;
use muxchat::server::trace::Trace;
use muxchat::server::Server;

fn main() -> ExitCode {
    // `muxchatd gen-cert ...` is a tool, not the daemon; any other first
    // argument is the daemon's command line as before.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "gen-cert") {
        return muxchat::gencert::main(argv);
    }
    if argv.get(1).is_some_and(|a| a == "token") {
        return muxchat::server::identity::mint::main(argv);
    }
    // Exits with status 2 and clap's message on a usage error.
    let config = Config::from_env();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_timestamp_millis();
    if config.log_format == LogFormat::Json {
        logger.format(|buf, record| {
            let time = buf.timestamp_millis().to_string();
            writeln!(buf, "{}", logfmt::json_line(&time, record))
        });
    }
    logger.init();
    for note in &config.adapted {
        info!("{note}");
    }
    let json = config.log_format == LogFormat::Json;
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Still one line; with --log-format json a JSON one, so every
            // line a pipeline reads parses.
            if json {
                log::error!("muxchatd: {message}");
            } else {
                eprintln!("muxchatd: {message}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    let bind = config.bind;
    if let (Some(name), None) = (&config.node_name, &config.redis) {
        // A cluster node logs its name as it joins; a standalone one here.
        info!("standalone daemon, node name {name}");
    }
    // The key that verifies tokens: a file that does not load stops the
    // start (exit 1 naming it), before anything listens.
    let auth_key = match &config.auth_key {
        Some(path) => {
            let key = muxchat::server::identity::AuthKey::load(path).map_err(|e| e.to_string())?;
            info!(
                "identity: auth {}, {} key from {}",
                config.auth.name(),
                key.alg(),
                path.display()
            );
            Some(key)
        }
        None => None,
    };
    let max_clients = config.max_clients;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let trace = match &config.trace_file {
        Some(path) => Trace::create(path, config.trace_file_max)
            .map_err(|e| format!("cannot create the trace file {}: {e}", path.display()))?,
        None => Trace::off(),
    };
    // Before binding, so a bad state file never prints `listening`.
    let moderation = load_state_file(&config)?;
    let mut server = Server::bind(config).map_err(|e| {
        // A certificate or key that cannot be used names its file; an
        // unreachable cluster store names its URL.
        let inner = e.get_ref();
        if let Some(tls) = inner.and_then(|i| i.downcast_ref::<TlsError>()) {
            format!("TLS: {tls}")
        } else if let Some(cluster) = inner.and_then(|i| i.downcast_ref::<ClusterError>()) {
            // Names the URL and the cause.
            cluster.to_string()
        } else {
            format!("cannot listen on {bind}: {e}")
        }
    })?;
    server.set_trace(trace);
    if let Some(loaded) = moderation {
        server.set_moderation_state(loaded);
    }
    if let Some(key) = auth_key {
        server.set_auth_key(key);
    }
    let addr = server.local_addr();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    // The address to type into a browser: a wildcard bind is reachable
    // on loopback.
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    info!("chat in a browser: open {scheme}://{host}:{}/", addr.port());
    raise_fd_limit(max_clients);
    server.run().map_err(|e| format!("event loop failed: {e}"))
}

/// Loads `--state-file` (none given: nothing). Unreadable or corrupt: the
/// error names the file, and the daemon exits 1.
fn load_state_file(config: &Config) -> Result<Option<state_file::Loaded>, String> {
    let Some(path) = &config.state_file else {
        return Ok(None);
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ttl_ms = config.room_state_ttl.as_millis() as u64;
    let loaded = state_file::load(path, now_ms, ttl_ms).map_err(|e| e.to_string())?;
    info!(
        "state file {}: {} rooms with state, {} server-wide bans",
        path.display(),
        loaded.rooms.len(),
        loaded.server_bans.len()
    );
    Ok(Some(loaded))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every connection is a
/// descriptor, and the default soft limit (often 1024) would cap the daemon
/// far below `--max-clients`.
fn raise_fd_limit(max_clients: usize) {
    let limit = match muxchat::net::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!("getrlimit(RLIMIT_NOFILE) failed ({e}); keeping the default");
            return;
        }
    };
    info!("open file limit: {} (max clients {max_clients})", limit);
    // A few descriptors go to the listener, epoll, the signal pipe, the
    // reserve and stdio.
    if (limit as usize) < max_clients + 16 {
        warn!(
            "the open file limit {} is below --max-clients {max_clients}: \
             connections past it get SERVER_FULL",
            limit
        );
    }
}
