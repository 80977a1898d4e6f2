//! `muxchat-docgen DIR`: writes the man pages and shell completions of
//! muxchatd, muxchat and muxload under DIR. See [`muxchat::docgen`].

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: muxchat-docgen DIR");
        return ExitCode::from(2);
    };
    match muxchat::docgen::write_all(&dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("muxchat-docgen: {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
