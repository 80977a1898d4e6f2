//! Making the server, before its loop runs: the listening socket and its
//! options, the poll instance, the signal pipe and the discovery socket
//! registered on it, a cluster node's start-up check, the doors' TLS
//! configuration, and what the binary hands it (trace, state file, key).
//! Apart from `mod.rs` so that file is the loop and its stages only.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpListener;
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use socket2::{Domain, Protocol, Socket, Type};

use super::super::chat::history::Epochs;
use super::super::chat::Chat;
use super::super::cluster::{Cluster, Reach};
use super::super::config::Config;
use super::super::discovery::Discovery;
use super::super::doors::refusing::Refusals;
use super::super::doors::{tls, Doors, HandshakeGate};
use super::super::sessions::registry::Sessions;
use super::super::sessions::session::Marks;
use super::super::trace::Trace;
use super::housekeeping::default_node_name;
use super::{
    Server, ACCEPT_BUDGET, BACKLOG, DISCOVERY, GLOBAL_READ_BUDGET, LISTENER, READ_CHUNK, SIGNALS,
};

impl Server {
    /// Binds the listener (SO_REUSEADDR, non-blocking, a real backlog) and
    /// sets up the poll instance and signal handling.
    pub fn bind(config: Config) -> io::Result<Server> {
        let socket = Socket::new(
            Domain::for_address(config.bind),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        // Restarting the daemon must not fail because old connections sit
        // in TIME_WAIT on the port.
        socket.set_reuse_address(true)?;
        if config.reuse_port {
            // Several daemons on one port: the kernel hashes each new
            // connection to one of the listeners.
            socket.set_reuse_port(true)?;
        }
        socket.bind(&config.bind.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(socket.into());
        let local_addr = listener.local_addr()?;

        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Signals arrive through a self-pipe registered like any socket:
        // no handler thread, no work in signal context.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let mut discovery = None;
        if config.discovery {
            let mut d = Discovery::bind(local_addr, Instant::now())?;
            poll.registry()
                .register(d.source(), DISCOVERY, Interest::READABLE)?;
            discovery = Some(d);
        }

        let cluster = match &config.redis {
            // The start-up check blocks (with a timeout): the loop is not
            // running yet, and a node that cannot reach its cluster must
            // not start serving.
            Some(url) => Some(
                Cluster::start(
                    Reach {
                        url,
                        ca: config.redis_ca.as_deref(),
                        timeout: config.redis_timeout,
                    },
                    config
                        .node_name
                        .clone()
                        .unwrap_or_else(|| default_node_name(local_addr)),
                    config.node_ttl,
                    config.room_ttl,
                    config.redis_max_pending,
                    poll.registry().try_clone()?,
                    Epochs::new().next_epoch(),
                )
                .map_err(io::Error::other)?
                .with_list_ttl(config.cluster_list_ttl),
            ),
            None => None,
        };
        let trace = config.trace_events;
        let handshakes = HandshakeGate::new(
            config.tls_handshakes_per_iteration,
            config.tls_handshakes_per_ip,
            config.limit_loopback,
        );
        let tls = match &config.tls {
            Some((cert, key)) => Some(
                // A TlsError inside: the binary reports it naming the file.
                tls::server_config(cert, key).map_err(io::Error::other)?,
            ),
            None => None,
        };
        // The page is compressed and hashed now, not by the first request.
        super::super::web::page();
        let tls_pem = match &config.tls {
            Some((cert, _)) => std::fs::read(cert).unwrap_or_default(),
            None => Vec::new(),
        };
        let doors = Arc::new(Doors::new(
            tls,
            config.tls_required,
            config.http,
            config.max_payload,
        ));
        let mut sessions = Sessions::new(Marks::new(&config));
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            discovery,
            chat: {
                let timeout = config.redis_timeout;
                let mut chat = Chat::new(config, Instant::now());
                if let Some(c) = cluster {
                    chat.set_cluster(c);
                    chat.load_replica_at_start(&mut sessions, timeout);
                }
                chat
            },
            sessions,
            scratch: vec![0; READ_CHUNK],
            still_readable: Vec::new(),
            global_left: GLOBAL_READ_BUDGET,
            handshakes,
            handshake_wait: VecDeque::new(),
            accept_more: false,
            accepts_left: ACCEPT_BUDGET,
            per_ip: HashMap::new(),
            refusals: Refusals::default(),
            last_trim: None,
            iteration: 0,
            drained: Vec::new(),
            reserve_fd: File::open("/dev/null").ok(),
            last_emfile_warning: None,
            drain_deadline: None,
            local_addr,
            trace,
            doors,
            tls_pem,
        })
    }

    /// Turns the loop trace on (`--trace-file`); it is off by default.
    pub fn set_trace(&mut self, trace: Trace) {
        self.chat.trace = trace;
    }

    /// Hands the chat the state file read at start (`--state-file`).
    pub fn set_moderation_state(&mut self, loaded: crate::server::moderation::state_file::Loaded) {
        self.chat.restore_moderation(loaded);
    }

    /// The key that verifies tokens (`--auth-key`, loaded at start).
    pub fn set_auth_key(&mut self, key: crate::server::identity::AuthKey) {
        self.chat.set_auth_key(key);
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}
