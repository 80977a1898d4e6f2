//! `muxchat`: the interactive chat client. See [`muxchat::client`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use muxchat::client::{self, command::room_arg, Config};

/// Chat on a muxchatd server from a terminal, a pipe or a script.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server address, HOST:PORT (a name is resolved; [::1]:PORT for IPv6).
    #[arg(long, default_value = "127.0.0.1:25000", env = "MUXCHAT_CONNECT")]
    connect: String,
    /// Nick to register (default: $USER, or "guest").
    #[arg(long)]
    nick: Option<String>,
    /// Room to join after registering; repeatable. The last one is where
    /// plain text goes.
    #[arg(long = "join", value_name = "#ROOM")]
    joins: Vec<String>,
    /// Do not prefix lines with the time.
    #[arg(long)]
    no_time: bool,
    /// Read commands from FILE instead of stdin, then quit.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = Config {
        connect: args.connect,
        nick: args.nick.unwrap_or_else(client::default_nick),
        joins: args.joins.iter().map(|r| room_arg(r)).collect(),
        timestamps: !args.no_time,
        script: args.script,
    };
    match client::run(&cfg) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(msg) => {
            eprintln!("muxchat: {msg}");
            ExitCode::from(1)
        }
    }
}
