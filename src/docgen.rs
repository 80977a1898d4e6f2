//! Man pages and shell completions for the three binaries, generated from
//! their clap definitions so they can never disagree with `--help`.
//!
//! `cargo run --release --bin muxchat-docgen -- DIR` writes
//! `DIR/man/{muxchatd,muxchat,muxload}.1` and
//! `DIR/completions/` for bash, zsh and fish.
//!
//! clap_mangen renders the synopsis and the options; the NAME line, the
//! description and the sections clap knows nothing of (ENVIRONMENT, EXIT
//! STATUS, SIGNALS, FILES) are written here, per binary.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The three binaries' command definitions, as their `main`s parse them.
pub fn commands() -> Vec<Command> {
    vec![
        crate::server::config::command(),
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
        std::fs::write(&page, man_page(&cmd)?)?;
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

/// What a man page says beyond the options, per binary.
struct Extra {
    /// NAME's one-line summary (after `name \-`).
    summary: &'static str,
    /// Environment variables other than the options' own.
    environment: &'static [(&'static str, &'static str)],
    exit_status: &'static [(&'static str, &'static str)],
    signals: &'static [(&'static str, &'static str)],
    files: &'static [(&'static str, &'static str)],
}

const SSL_CERT_FILE: (&str, &str) = (
    "SSL_CERT_FILE",
    "With --tls and no --ca: the PEM bundle of CAs to trust, tried before the system's.",
);

fn extra(name: &str) -> Extra {
    match name {
        "muxchatd" => Extra {
            summary: "the muxchat chat daemon",
            environment: &[(
                "RUST_LOG",
                "Log level and filters for the log lines on stderr (default info).",
            )],
            exit_status: &[
                (
                    "0",
                    "Clean shutdown after SIGTERM or SIGINT (the drain ended).",
                ),
                (
                    "1",
                    "Start-up error: address in use, permission denied, a certificate, key, \
                     state or trace file that cannot be used, an unreachable --redis; one \
                     stderr line names it.",
                ),
                (
                    "2",
                    "Usage error: unknown option or configuration key, bad or contradictory \
                     values; the message names the option.",
                ),
            ],
            signals: &[
                (
                    "SIGTERM, SIGINT",
                    "The first starts the drain: the listener closes, every session gets \
                     SHUTDOWN, and the daemon exits 0 when they have closed or --grace-ms has \
                     passed. A second exits at once.",
                ),
                (
                    "SIGHUP",
                    "Reloads without dropping a connection: the TLS certificate and key, the \
                     --auth-key file and the --config options that can change while running; \
                     a file that does not load is logged and the old values stay.",
                ),
                (
                    "SIGPIPE",
                    "Ignored: a write to a closed socket ends that session only.",
                ),
            ],
            files: &[
                (
                    "/etc/muxchat/muxchatd.toml",
                    "The configuration file the Debian package installs and the systemd unit \
                     passes to --config (every option, commented out, with its default).",
                ),
                (
                    "/usr/lib/systemd/system/muxchatd.service",
                    "The systemd unit (with the package's drop-in muxchatd.service.d/debian.conf).",
                ),
                (
                    "/usr/share/doc/muxchat/OPERATIONS.md",
                    "The operator's guide: TLS, proxies, metrics, the Grafana dashboard, \
                     limits, clusters.",
                ),
            ],
        },
        "muxchat" => Extra {
            summary: "the terminal chat client for muxchatd",
            environment: &[
                SSL_CERT_FILE,
                (
                    "MUXCHAT_TOKEN",
                    "A sign-in token (JWT) itself, when --token-file is not given: the client \
                     then speaks protocol version 3. It cannot be read again, so the token is \
                     not refreshed before it expires; --token-file can be.",
                ),
            ],
            exit_status: &[
                ("0", "After /quit, or at the end of input."),
                (
                    "1",
                    "The server could not be reached before registering, refused the session \
                     for good (a fatal ERROR such as TLS_REQUIRED, AUTH_FAILED or \
                     SESSION_LIMIT), or TLS failed; one line says why.",
                ),
                ("2", "Usage error; the message names the option."),
            ],
            signals: &[(
                "SIGINT, SIGTERM",
                "The default action: the client ends at once (the server frees its nick \
                 when it notices the connection is gone).",
            )],
            files: &[(
                "/etc/ssl/certs/ca-certificates.crt",
                "The system CA bundle --tls trusts without --ca (also \
                 /etc/pki/tls/certs/ca-bundle.crt and /etc/ssl/cert.pem).",
            )],
        },
        _ => Extra {
            summary: "the load generator for muxchatd (or Redis pub/sub)",
            environment: &[SSL_CERT_FILE],
            exit_status: &[
                ("0", "A clean run."),
                (
                    "1",
                    "An error (nothing to connect to, no connection became ready).",
                ),
                ("2", "Usage error; the message names the option."),
                (
                    "3",
                    "Loss seen: a gap, duplicate or reorder on a live receiver.",
                ),
                (
                    "4",
                    "Not every connection got ready or stayed connected (the server cut or \
                     closed some).",
                ),
                (
                    "5",
                    "The daemon refused some publishes (RATE_LIMITED and the like) and \
                     --allow-refusals was not given.",
                ),
            ],
            signals: &[(
                "SIGINT, SIGTERM",
                "The default action: the run ends at once, without a report.",
            )],
            files: &[(
                "--plot FILE, --hgrm FILE",
                "Written at the end of the run when asked: an SVG picture, and the latency \
                 distribution in HdrHistogram's text format.",
            )],
        },
    }
}

/// Text for roff: backslashes doubled, `-` as `\-` (a hyphen, not a
/// typographic dash), and a leading `.` or `'` kept from reading as a
/// request.
fn roff_text(s: &str) -> String {
    let escaped = s.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// One section of `.TP` entries (a bold term, then its text).
fn tagged(out: &mut String, heading: &str, entries: &[(String, String)]) {
    if entries.is_empty() {
        return;
    }
    out.push_str(&format!(".SH \"{heading}\"\n"));
    for (term, text) in entries {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_text(term),
            roff_text(text)
        ));
    }
}

/// The man page of one binary.
pub fn man_page(cmd: &Command) -> io::Result<Vec<u8>> {
    let name = cmd.get_name().to_string();
    let x = extra(&name);
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    // NAME is `name \- summary`: clap's about already starts with the
    // name, which would read twice.
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let description = about
        .strip_prefix(&format!("{name}: "))
        .unwrap_or(&about)
        .to_string();
    let mut text = format!(
        ".SH NAME\n{} \\- {}\n",
        roff_text(&name),
        roff_text(x.summary)
    );
    page.extend_from_slice(text.as_bytes());
    man.render_synopsis_section(&mut page)?;
    let mut chars = description.chars();
    let description: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    text = format!(".SH DESCRIPTION\n{}\n", roff_text(&description));
    page.extend_from_slice(text.as_bytes());
    man.render_options_section(&mut page)?;

    let mut rest = String::new();
    // Every option's variable, then the others.
    let mut env: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            let long = a.get_long()?;
            Some((var, format!("The same as --{long}; the command line wins.")))
        })
        .collect();
    env.extend(
        x.environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    tagged(&mut rest, "ENVIRONMENT", &env);
    tagged(&mut rest, "EXIT STATUS", &pairs(x.exit_status));
    tagged(&mut rest, "SIGNALS", &pairs(x.signals));
    tagged(&mut rest, "FILES", &pairs(x.files));
    page.extend_from_slice(rest.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}
