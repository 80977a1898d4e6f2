//! `--help`'s groups of options, which the man page's sections follow too,
//! and the clap [`command`] that applies them to [`Args`].

use clap::CommandFactory;

use super::Args;

/// `--help`'s groups of options (and the man page's sections): heading,
/// then option ids. An option not listed stays under "Options"; an id that
/// is not an option panics in [`command`], which every test that parses
/// options goes through.
const HEADINGS: &[(&str, &[&str])] = &[
    ("Listening", &["bind", "reuse_port", "discovery"]),
    (
        "Limits",
        &[
            "max_clients",
            "max_per_ip",
            "per_ip_prefix_v4",
            "per_ip_prefix_v6",
            "limit_loopback",
            "max_payload",
            "max_text",
            "max_rooms",
            "max_outbuf",
            "rate",
            "burst",
            "presence_limit",
            "max_http_head",
            "max_http_headers",
            "closes_per_iteration",
        ],
    ),
    (
        "Timeouts",
        &["heartbeat_ms", "login_timeout_ms", "grace_ms"],
    ),
    (
        "TLS",
        &[
            "tls_cert",
            "tls_key",
            "tls_required",
            "tls_handshakes_per_iteration",
            "tls_handshakes_per_ip",
        ],
    ),
    (
        "History and rooms",
        &[
            "history",
            "history_memory",
            "room_ttl_ms",
            "max_lingering_rooms",
            "lingering_memory",
        ],
    ),
    (
        "Cluster",
        &[
            "redis",
            "node_name",
            "node_ttl_ms",
            "redis_max_pending",
            "cluster_list_ttl_ms",
            "redis_ca",
            "redis_timeout_ms",
        ],
    ),
    ("Moderation", &["state_file", "room_state_ttl_ms"]),
    (
        "Identity",
        &[
            "auth_key",
            "auth",
            "auth_issuer",
            "auth_audience",
            "max_sessions_per_account",
            "session_key_ttl_ms",
            "logins_per_iteration",
            "login_time_per_iteration_us",
            "max_logins_waiting",
            "max_dedup_ids",
            "max_kept_session_keys",
        ],
    ),
    (
        "Diagnostics",
        &["trace_events", "trace_file", "trace_file_max"],
    ),
];

/// The daemon's command line: [`Args`] with its options grouped under
/// headings for `--help` and the man page.
pub fn command() -> clap::Command {
    let mut cmd = Args::command();
    for (heading, ids) in HEADINGS {
        for id in *ids {
            cmd = cmd.mut_arg(*id, |a| a.help_heading(*heading));
        }
    }
    cmd
}
