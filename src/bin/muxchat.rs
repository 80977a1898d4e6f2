//! `muxchat`: the interactive chat client. See [`muxchat::client`].

use std::process::ExitCode;

use clap::Parser;
use muxchat::client::{self, command::room_arg, Args, Config};

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
