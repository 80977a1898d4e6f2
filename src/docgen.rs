//! Man pages and shell completions for the three binaries, generated from
//! their clap definitions so they can never disagree with `--help`.
//!
//! `cargo run --release --bin muxchat-docgen -- DIR` writes
//! `DIR/man/{muxchatd,muxchat,muxload}.1` and
//! `DIR/completions/` for bash, zsh and fish.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The three binaries' command definitions, as their `main`s parse them.
pub fn commands() -> Vec<Command> {
    vec![
        crate::server::config::Args::command(),
        crate::client::Args::command(),
        crate::load::Args::command(),
    ]
}

/// Writes every man page and completion script under `dir`; returns the
/// files written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut written = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        let page = man.join(format!("{name}.1"));
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut roff)?;
        std::fs::write(&page, roff)?;
        written.push(page);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            written.push(clap_complete::generate_to(
                shell,
                &mut cmd,
                &name,
                &completions,
            )?);
        }
    }
    Ok(written)
}
