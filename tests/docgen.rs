//! Man pages and completions are generated for all three binaries, and
//! each mentions every option; every `--help` opens with what the binary is.

use std::process::Command;

use muxchat::docgen;

#[test]
fn man_pages_and_completions_cover_every_option() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docgen");
    let _ = std::fs::remove_dir_all(&dir);
    let files = docgen::write_all(&dir).expect("generate");
    assert_eq!(files.len(), 3 * 4, "{files:?}");
    for cmd in docgen::commands() {
        let name = cmd.get_name();
        let page =
            std::fs::read_to_string(dir.join("man").join(format!("{name}.1"))).expect("man page");
        let bash = std::fs::read_to_string(dir.join("completions").join(format!("{name}.bash")))
            .expect("bash completion");
        assert!(page.contains(".TH"), "{name}.1 is not a man page");
        let mut longs = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            longs += 1;
            // roff escapes each '-' as '\-'.
            let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(
                page.contains(&escaped),
                "{name}.1 does not mention --{long}"
            );
            assert!(
                bash.contains(&format!("--{long}")),
                "{name}.bash does not complete --{long}"
            );
        }
        assert!(longs >= 3, "{name} has too few options to be the real one");
    }
}

#[test]
fn every_help_opens_with_what_the_binary_is() {
    for (bin, opening) in [
        (
            env!("CARGO_BIN_EXE_muxchatd"),
            "muxchatd: the muxchat chat daemon",
        ),
        (
            env!("CARGO_BIN_EXE_muxchat"),
            "muxchat: the terminal chat client",
        ),
        (env!("CARGO_BIN_EXE_muxload"), "muxload: the load generator"),
    ] {
        let out = Command::new(bin)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.starts_with(opening), "{bin}: {help}");
    }
}

#[test]
fn the_generator_binary_writes_into_the_named_directory() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docgen-bin");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_muxchat-docgen"))
        .arg(&dir)
        .output()
        .expect("run muxchat-docgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("man/muxload.1").is_file());
    assert!(dir.join("completions/_muxchatd").is_file());
    let usage = Command::new(env!("CARGO_BIN_EXE_muxchat-docgen"))
        .output()
        .expect("run muxchat-docgen");
    assert_eq!(usage.status.code(), Some(2));
}
