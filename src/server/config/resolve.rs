//! From arguments, the environment and the `--config` file to a validated
//! [`Config`]: clap parses (command line, then environment), the file's
//! values fill only what both left at its default, and the options whose
//! values depend on each other are settled (a default adapts to what was
//! given; two given values that contradict each other are a usage error).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{command, Args, Argv, AuthMode, Config};
use crate::codec::HEADER_LEN;

/// Bytes of a SAY payload besides the text: room str (2 + up to 64) and the
/// text's own length prefix (2).
const SAY_OVERHEAD: u32 = 2 + 64 + 2;

impl Config {
    /// Parses the process's arguments and environment; exits with status 2
    /// and clap's message on a usage error.
    pub fn from_env() -> Config {
        match Config::from_argv(std::env::args_os()) {
            Ok(config) => config,
            Err(e) => e.exit(),
        }
    }

    /// Parses an argument list (the program name first) and the
    /// environment, then the `--config` file if one is named.
    pub fn from_argv<I, T>(argv: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let matches = command().try_get_matches_from(&argv)?;
        let mut config = match matches.get_one::<PathBuf>("config") {
            None => Config::from_matches(&matches),
            Some(path) => {
                let argv = with_file_values(&argv, &matches, path)?;
                Config::from_matches(&command().try_get_matches_from(argv)?)
            }
        }?;
        config.argv = Argv(argv);
        Ok(config)
    }

    /// Turns parsed arguments into settings. Options whose values depend on
    /// each other are settled here: a value left at its default adapts to
    /// the values given (see `Sizes::settle`); two given values that
    /// contradict each other are a usage error.
    pub fn from_matches(matches: &ArgMatches) -> Result<Config, clap::Error> {
        let args = Args::from_arg_matches(matches)?;
        let given = |id: &str| given(matches, id);
        let sizes = Sizes {
            payload: (args.max_payload, given("max_payload")),
            text: (args.max_text, given("max_text")),
            outbuf: (args.max_outbuf, given("max_outbuf")),
        };
        if args.redis.is_none() {
            // Cluster settings without a cluster are a mistake worth stopping
            // for: the user believes a node joins something when it does not.
            // --node-name is not among them: it also names a standalone
            // daemon (daemon-cli.md).
            for (id, long) in [
                ("node_ttl_ms", "--node-ttl-ms"),
                ("redis_max_pending", "--redis-max-pending"),
                ("cluster_list_ttl_ms", "--cluster-list-ttl-ms"),
                ("redis_ca", "--redis-ca"),
                ("redis_timeout_ms", "--redis-timeout-ms"),
            ] {
                if given(id) {
                    return Err(Args::command().error(
                        ErrorKind::MissingRequiredArgument,
                        format!("{long} needs --redis URL (it only applies to a cluster node)"),
                    ));
                }
            }
        }
        if args.redis.is_some() && args.state_file.is_some() {
            return Err(Args::command().error(
                ErrorKind::ArgumentConflict,
                "--state-file is for a standalone daemon: with --redis, room state lives in Redis",
            ));
        }
        if given("redis_ca") && args.redis.as_ref().is_some_and(|u| !u.tls) {
            return Err(Args::command().error(
                ErrorKind::ArgumentConflict,
                "--redis-ca needs a rediss:// --redis URL (TLS to Redis)",
            ));
        }
        let auth = match (args.auth, &args.auth_key) {
            (None, Some(_)) => AuthMode::Optional,
            (None, None) => AuthMode::Off,
            (Some(AuthMode::Off), _) => AuthMode::Off,
            (Some(mode), Some(_)) => mode,
            (Some(mode), None) => {
                return Err(Args::command().error(
                    ErrorKind::MissingRequiredArgument,
                    format!(
                        "--auth {} needs --auth-key FILE (the key that verifies tokens)",
                        mode.name()
                    ),
                ))
            }
        };
        let (settled, adapted) = sizes
            .settle()
            .map_err(|msg| Args::command().error(ErrorKind::ArgumentConflict, msg))?;
        Ok(Config {
            bind: args.bind,
            max_clients: args.max_clients as usize,
            max_payload: settled.payload.0,
            max_text: settled.text.0 as usize,
            max_rooms: args.max_rooms as usize,
            max_outbuf: settled.outbuf.0 as usize,
            heartbeat: Duration::from_millis(args.heartbeat_ms.into()),
            login_timeout: Duration::from_millis(args.login_timeout_ms.into()),
            grace: Duration::from_millis(args.grace_ms.into()),
            presence_limit: args.presence_limit as usize,
            rate: args.rate,
            burst: args.burst,
            trace_events: args.trace_events,
            tls: args.tls_cert.zip(args.tls_key),
            tls_required: args.tls_required,
            tls_handshakes_per_iteration: args.tls_handshakes_per_iteration as usize,
            tls_handshakes_per_ip: args.tls_handshakes_per_ip,
            http: crate::server::web::HttpLimits {
                max_head: args.max_http_head as usize,
                max_request_line: (args.max_http_head as usize).min(2048),
                max_headers: args.max_http_headers as usize,
            },
            discovery: args.discovery,
            trace_file: args.trace_file,
            trace_file_max: args.trace_file_max,
            max_per_ip: args.max_per_ip as usize,
            limit_loopback: args.limit_loopback,
            per_ip_keys: crate::server::doors::peers::PeerKeys {
                v4_bits: args.per_ip_prefix_v4,
                v6_bits: args.per_ip_prefix_v6,
            },
            history: args.history as usize,
            history_memory: usize::try_from(args.history_memory).unwrap_or(usize::MAX),
            room_ttl: Duration::from_millis(args.room_ttl_ms),
            max_lingering_rooms: usize::try_from(args.max_lingering_rooms).unwrap_or(usize::MAX),
            lingering_memory: usize::try_from(args.lingering_memory).unwrap_or(usize::MAX),
            redis: args.redis,
            node_name: args.node_name,
            reuse_port: args.reuse_port,
            node_ttl: Duration::from_millis(args.node_ttl_ms),
            redis_max_pending: usize::try_from(args.redis_max_pending).unwrap_or(usize::MAX),
            cluster_list_ttl: Duration::from_millis(args.cluster_list_ttl_ms),
            proxy_from: args.proxy_from.unwrap_or_default(),
            log_format: args.log_format,
            argv: Argv::default(),
            redis_ca: args.redis_ca,
            redis_timeout: Duration::from_millis(args.redis_timeout_ms),
            state_file: args.state_file,
            room_state_ttl: Duration::from_millis(args.room_state_ttl_ms),
            auth_key: args.auth_key,
            auth,
            auth_issuer: args.auth_issuer,
            auth_audience: args.auth_audience,
            max_sessions_per_account: args.max_sessions_per_account as usize,
            session_key_ttl: Duration::from_millis(args.session_key_ttl_ms),
            adapted,
        })
    }
}

/// Whether the user gave option `id` (command line or environment) rather
/// than leaving it at its default.
fn given(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        None | Some(ValueSource::DefaultValue)
    )
}

/// The argument list with the config file's values put in front, each only
/// where the command line and the environment left that option at its
/// default. Placing them as arguments lets clap check every value with the
/// same parser as the command line, and makes them count as given.
fn with_file_values(
    argv: &[OsString],
    matches: &ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, clap::Error> {
    let usage = |msg: String| Args::command().error(ErrorKind::InvalidValue, msg);
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--config {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| usage(format!("--config {}: {e}", path.display())))?;
    let command = Args::command();
    let mut out = vec![argv[0].clone()];
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some())
            .filter(|_| id != "config")
            .ok_or_else(|| {
                usage(format!(
                    "--config {}: unknown key `{key}` (keys are the long options, e.g. max-clients)",
                    path.display()
                ))
            })?;
        if given(matches, &id) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if *on {
                    out.push(format!("--{long}").into());
                }
            }
            toml::Value::String(v) if takes_value => out.push(format!("--{long}={v}").into()),
            toml::Value::Integer(v) if takes_value => out.push(format!("--{long}={v}").into()),
            _ => {
                let want = if takes_value {
                    "a string or an integer"
                } else {
                    "true or false"
                };
                return Err(usage(format!(
                    "--config {}: `{key}` must be {want}",
                    path.display()
                )));
            }
        }
    }
    out.extend(argv[1..].iter().cloned());
    Ok(out)
}

/// The three sizes that constrain each other, each with whether the user
/// gave it (command line or environment) or it is a default:
/// `max_text + SAY_OVERHEAD <= max_payload` (the longest SAY fits in a
/// frame) and `HEADER_LEN + max_payload <= max_outbuf` (one whole frame
/// fits in a session's output).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) payload: (u32, bool),
    pub(super) text: (u32, bool),
    pub(super) outbuf: (u32, bool),
}

impl Sizes {
    /// Moves each default that clashes with a given value to the nearest
    /// value that fits, saying so in the returned notes. An error names the
    /// given values that cannot all hold.
    pub(super) fn settle(mut self) -> Result<(Sizes, Vec<String>), String> {
        let header = HEADER_LEN as u32;
        let mut notes = Vec::new();
        let (text, text_given) = self.text;
        let (outbuf, outbuf_given) = self.outbuf;
        if !self.payload.1 {
            // The payload is the pivot: at least the given text's SAY, at
            // most what the given output limit holds.
            let low = if text_given { text + SAY_OVERHEAD } else { 0 };
            let high = if outbuf_given {
                outbuf - header
            } else {
                u32::MAX
            };
            if low > high {
                return Err(format!(
                    "--max-text {text} needs frames of {low} bytes, which --max-outbuf {outbuf} \
                     cannot hold ({} bytes at most)",
                    high
                ));
            }
            let payload = self.payload.0.clamp(low, high);
            if payload != self.payload.0 {
                notes.push(format!(
                    "--max-payload set to {payload} (default {}) to fit the other sizes given",
                    self.payload.0
                ));
                self.payload.0 = payload;
            }
        }
        let payload = self.payload.0;
        if text + SAY_OVERHEAD > payload {
            if text_given {
                return Err(format!(
                    "--max-text {text} does not fit in --max-payload {payload} \
                     (a SAY needs {SAY_OVERHEAD} bytes more than its text)"
                ));
            }
            let fitted = payload - SAY_OVERHEAD;
            notes.push(format!(
                "--max-text set to {fitted} (default {text}) to fit in --max-payload {payload}"
            ));
            self.text.0 = fitted;
        }
        if outbuf < header + payload {
            if outbuf_given {
                return Err(format!(
                    "--max-outbuf {outbuf} must hold at least one frame of \
                     --max-payload {payload} plus its {header}-byte header"
                ));
            }
            let fitted = header + payload;
            notes.push(format!(
                "--max-outbuf set to {fitted} (default {outbuf}) to hold one frame of \
                 --max-payload {payload}"
            ));
            self.outbuf.0 = fitted;
        }
        Ok((self, notes))
    }
}
