//! `muxload`: the load generator. See [`muxchat::load`].

use std::process::ExitCode;

use muxchat::load::{self, Config};

fn main() -> ExitCode {
    let cfg = Config::from_env();
    match load::run(&cfg) {
        Ok(code) => ExitCode::from(code as u8),
        Err(msg) => {
            eprintln!("muxload: {msg}");
            ExitCode::from(1)
        }
    }
}
