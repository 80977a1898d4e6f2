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

/// Issue 22: the man pages have the sections operators look for, and NAME
/// says the name once.
#[test]
fn man_pages_have_environment_exit_status_signals_and_files() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docgen-sections");
    let _ = std::fs::remove_dir_all(&dir);
    docgen::write_all(&dir).expect("generate");
    for (name, exits) in [
        ("muxchatd", &["0", "1", "2"][..]),
        ("muxchat", &["0", "1", "2"][..]),
        ("muxload", &["0", "1", "2", "3", "4", "5"][..]),
    ] {
        let page =
            std::fs::read_to_string(dir.join("man").join(format!("{name}.1"))).expect("man page");
        let headings: Vec<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix(".SH "))
            .map(|h| h.trim_matches('"'))
            .collect();
        for want in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "ENVIRONMENT",
            "EXIT STATUS",
            "SIGNALS",
            "FILES",
        ] {
            assert!(
                headings.contains(&want),
                "{name}.1 lacks {want}: {headings:?}"
            );
        }
        // NAME: `name \- summary`, the name once.
        let at = page.find(".SH NAME\n").expect("NAME") + ".SH NAME\n".len();
        let line = page[at..].lines().next().unwrap();
        assert!(line.starts_with(&format!("{name} \\- ")), "{line}");
        // clap's about starts `name: ...`; NAME must not say it again.
        assert!(
            !line.contains(&format!("{name}:")),
            "NAME repeats the name: {line}"
        );
        // EXIT STATUS lists each code.
        let exit = &page[page.find(".SH \"EXIT STATUS\"").unwrap()..];
        let exit = &exit[..exit[1..].find(".SH").unwrap()];
        for code in exits {
            assert!(
                exit.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                "{name}.1 EXIT STATUS lacks {code}: {exit}"
            );
        }
    }
    // The daemon's variables are listed, one per option.
    let page = std::fs::read_to_string(dir.join("man/muxchatd.1")).unwrap();
    for var in ["MUXCHAT_BIND", "MUXCHAT_TLS_CERT", "RUST_LOG"] {
        assert!(page.contains(var), "muxchatd.1 lacks {var}");
    }
    // The option groups of --help are sections of the man page too.
    assert!(page.contains(".SH LIMITS\n") && page.contains(".SH TLS\n"));
}

/// `--help` groups the daemon's options under headings and wraps its lines
/// (to the terminal's width; 100 columns when not a terminal).
#[test]
fn daemon_help_is_grouped_and_wrapped() {
    let out = Command::new(env!("CARGO_BIN_EXE_muxchatd"))
        .arg("--help")
        .env_remove("COLUMNS")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Listening:",
        "Limits:",
        "Timeouts:",
        "TLS:",
        "History and rooms:",
        "Cluster:",
        "Diagnostics:",
    ] {
        assert!(
            help.lines().any(|l| l == heading),
            "no {heading} group in:\n{help}"
        );
    }
    let widest = help.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 100, "a line of {widest} columns in:\n{help}");
}
