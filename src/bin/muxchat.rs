//! `muxchat`: the interactive chat client. See [`muxchat::client`].

use std::process::ExitCode;

use clap::Parser;
use muxchat::client::{self, command::room_arg, Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.discover {
        return discover(&args);
    }
    let tls = match args.tls.client("muxchat", &args.connect) {
        Ok(tls) => tls,
        Err(msg) => {
            eprintln!("muxchat: {msg}");
            return ExitCode::from(1);
        }
    };
    let token = match client::token_from(
        args.token_file.as_deref(),
        std::env::var(client::TOKEN_ENV).ok(),
    ) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("muxchat: {msg}");
            return ExitCode::from(1);
        }
    };
    // An account's nick is its token's claim: ask for none unless told.
    let nick = match (args.nick, &token) {
        (Some(n), _) => n,
        (None, Some(_)) => String::new(),
        (None, None) => client::default_nick(),
    };
    let cfg = Config {
        token,
        tls,
        connect: args.connect,
        nick,
        joins: args.joins.iter().map(|r| room_arg(r)).collect(),
        timestamps: !args.no_time,
        script: args.script,
        unavailable_retry: (args.unavailable_retry_s > 0)
            .then(|| std::time::Duration::from_secs(args.unavailable_retry_s)),
    };
    match client::run(&cfg) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(msg) => {
            eprintln!("muxchat: {msg}");
            ExitCode::from(1)
        }
    }
}

/// `--discover`: 0 when some daemon answered, 1 when none did.
fn discover(args: &Args) -> ExitCode {
    let wait = std::time::Duration::from_millis(args.discover_ms);
    match client::discover::discover(&args.discover_to, wait, &mut std::io::stdout()) {
        Ok(0) => {
            eprintln!(
                "muxchat: no muxchatd answered at {} within {} ms (is it started with --discovery?)",
                args.discover_to, args.discover_ms
            );
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("muxchat: discovery via {}: {e}", args.discover_to);
            ExitCode::from(1)
        }
    }
}
