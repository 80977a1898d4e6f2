//! What SIGHUP may change while the daemon runs, and what needs a restart.
//!
//! The event loop re-parses the command line, the environment and the
//! `--config` file exactly as at start-up (so the command line and the
//! environment still win over the file), then asks [`plan`] which of the
//! differences can take effect at once. The rule for "live": the value is
//! read where it is used, at the moment it is used, and no state built
//! from the old value would be wrong under the new one. Rates, limits
//! checked at admission or per request, and timeouts qualify; sizes that
//! shaped buffers, frames or the wire format (`max-payload`, history),
//! sockets (`bind`, `reuse-port`, discovery), the cluster link and the log
//! set-up do not, and are reported as needing a restart.
//!
//! Files behind options (the TLS certificate and key; the `--auth-key`
//! file) are re-read by the event loop on every SIGHUP, whether or not
//! their paths changed: renewing a certificate or rotating a key in place
//! is the usual case. A key file that does not load is logged and the
//! running key stays.
//!
//! Identity: `auth-key` (the path), `auth-issuer`, `auth-audience` (read
//! at each verification), `max-sessions-per-account` (at each
//! registration; sessions above a lowered limit stay) and
//! `session-key-ttl-ms` (the expiry queue holds end times, so a new TTL
//! applies to keys already kept) are live, and so are the login queue's
//! bounds (`logins-per-iteration`, `login-time-per-iteration-us`,
//! `max-logins-waiting`: read at each iteration and each push; logins
//! waiting above a lowered bound stay). `max-dedup-ids` and
//! `max-kept-session-keys` wait for a restart (lowering them would evict at
//! once). `auth` waits for a restart:
//! turning it on or off would change how sessions already registered are
//! shown (`~` guests) and what they may do.

use super::config::Config;

/// SAY overhead over its text (see `config/resolve.rs`): a live `--max-text` must
/// still fit the running `--max-payload`.
const SAY_OVERHEAD: usize = 2 + 64 + 2;

/// The outcome of comparing the running settings with a fresh parse.
#[derive(Debug)]
pub struct Plan {
    /// The settings to run with from now on: the running ones with every
    /// live change applied (restart-only options keep their old values).
    pub config: Config,
    /// `name=value` for each live option that changed (no secrets: none
    /// of the live options holds one).
    pub changed: Vec<String>,
    /// Options whose new value waits for a restart, with why where it is
    /// not simply "restart-only".
    pub restart: Vec<String>,
}

/// Compares `running` with `new` (a fresh parse of the same command line)
/// and applies the live differences.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let mut next = running.clone();
    let mut changed = Vec::new();
    let mut restart = Vec::new();
    let ms = |d: &std::time::Duration| d.as_millis().to_string();

    // Live: read per admission, per frame or per timer.
    macro_rules! live {
        ($field:ident, $name:literal) => {
            live!($field, $name, |v: &dyn std::fmt::Display| v.to_string())
        };
        ($field:ident, $name:literal, $show:expr) => {
            if new.$field != running.$field {
                next.$field = new.$field.clone();
                changed.push(format!("{}={}", $name, $show(&next.$field)));
            }
        };
    }
    live!(max_clients, "max-clients");
    live!(max_rooms, "max-rooms");
    live!(presence_limit, "presence-limit");
    live!(rate, "rate");
    live!(burst, "burst");
    live!(heartbeat, "heartbeat-ms", ms);
    live!(login_timeout, "login-timeout-ms", ms);
    live!(grace, "grace-ms", ms);
    live!(max_per_ip, "max-per-ip");
    live!(limit_loopback, "limit-loopback");
    live!(trace_events, "trace-events");
    live!(proxy_from, "proxy-from");
    // Read when a room empties (its drop time) and by the drop timer.
    live!(room_state_ttl, "room-state-ttl-ms", ms);
    live!(max_sessions_per_account, "max-sessions-per-account");
    live!(session_key_ttl, "session-key-ttl-ms", ms);
    // Read by the login queue at each iteration and each push.
    live!(logins_per_iteration, "logins-per-iteration");
    let us = |d: &std::time::Duration| d.as_micros().to_string();
    live!(login_time_per_iteration, "login-time-per-iteration-us", us);
    live!(max_logins_waiting, "max-logins-waiting");
    // Read by the reap stage at each iteration.
    live!(closes_per_iteration, "closes-per-iteration");
    // Paths and names, not secrets.
    let opt = |v: &dyn std::fmt::Debug| format!("{v:?}");
    live!(auth_key, "auth-key", opt);
    live!(auth_issuer, "auth-issuer", opt);
    live!(auth_audience, "auth-audience", opt);
    if new.http.max_head != running.http.max_head {
        changed.push(format!("max-http-head={}", new.http.max_head));
    }
    if new.http.max_headers != running.http.max_headers {
        changed.push(format!("max-http-headers={}", new.http.max_headers));
    }
    // New connections read the limits from the doors built after this.
    next.http = new.http;

    // Live within the running frame size: a text or an output limit that
    // no longer holds one frame of the running --max-payload waits.
    if new.max_text != running.max_text {
        if new.max_text + SAY_OVERHEAD <= running.max_payload as usize {
            next.max_text = new.max_text;
            changed.push(format!("max-text={}", new.max_text));
        } else {
            restart.push(format!(
                "max-text (a SAY of {} bytes does not fit the running max-payload {})",
                new.max_text, running.max_payload
            ));
        }
    }
    if new.max_outbuf != running.max_outbuf {
        if new.max_outbuf >= crate::codec::HEADER_LEN + running.max_payload as usize {
            next.max_outbuf = new.max_outbuf;
            changed.push(format!("max-outbuf={}", new.max_outbuf));
        } else {
            restart.push(format!(
                "max-outbuf (must hold a frame of the running max-payload {})",
                running.max_payload
            ));
        }
    }

    // The certificate and key files are re-read by the caller; whether the
    // port takes TLS at all is decided at start-up.
    match (&running.tls, &new.tls) {
        (Some(_), Some(_)) => next.tls = new.tls.clone(),
        (None, None) => {}
        _ => restart.push("tls-cert and tls-key (turning TLS on or off)".into()),
    }

    // Restart-only: compared by their debug form, which every field has.
    macro_rules! restart_only {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(
                if format!("{:?}", new.$field) != format!("{:?}", running.$field) {
                    restart.push($name.to_string());
                }
            )*
        };
    }
    restart_only!(
        bind => "bind",
        max_payload => "max-payload",
        tls_required => "tls-required",
        discovery => "discovery",
        trace_file => "trace-file",
        trace_file_max => "trace-file-max",
        history => "history",
        history_memory => "history-memory",
        room_ttl => "room-ttl-ms",
        max_lingering_rooms => "max-lingering-rooms",
        lingering_memory => "lingering-memory",
        redis => "redis",
        node_name => "node-name",
        reuse_port => "reuse-port",
        node_ttl => "node-ttl-ms",
        redis_max_pending => "redis-max-pending",
        cluster_list_ttl => "cluster-list-ttl-ms",
        redis_ca => "redis-ca",
        redis_timeout => "redis-timeout-ms",
        per_ip_keys => "per-ip-prefix-v4 and per-ip-prefix-v6",
        tls_handshakes_per_iteration => "tls-handshakes-per-iteration",
        tls_handshakes_per_ip => "tls-handshakes-per-ip",
        log_format => "log-format",
        state_file => "state-file",
        auth => "auth",
        max_dedup_ids => "max-dedup-ids",
        max_kept_session_keys => "max-kept-session-keys",
    );
    Plan {
        config: next,
        changed,
        restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::from_argv(std::iter::once("muxchatd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn live_options_apply_and_the_rest_wait() {
        let running = parse(&["--rate", "5"]);
        let new = parse(&[
            "--rate",
            "7",
            "--heartbeat-ms",
            "1500",
            "--max-per-ip",
            "3",
            "--history",
            "10",
            "--bind",
            "127.0.0.1:1",
            "--max-http-head",
            "4096",
        ]);
        let p = plan(&running, &new);
        assert_eq!(
            p.changed,
            [
                "rate=7",
                "heartbeat-ms=1500",
                "max-per-ip=3",
                "max-http-head=4096"
            ]
        );
        assert_eq!(p.restart, ["bind", "history"]);
        assert_eq!(p.config.rate, 7);
        assert_eq!(p.config.heartbeat.as_millis(), 1500);
        assert_eq!(p.config.http.max_head, 4096);
        // Restart-only values stay as they run.
        assert_eq!(p.config.history, running.history);
        assert_eq!(p.config.bind, running.bind);
    }

    #[test]
    fn sizes_must_fit_the_running_frame() {
        let running = parse(&["--max-payload", "1024"]);
        let new = parse(&["--max-payload", "8192", "--max-text", "4000"]);
        let p = plan(&running, &new);
        assert!(p.restart.iter().any(|r| r.starts_with("max-payload")));
        assert!(p.restart.iter().any(|r| r.starts_with("max-text")), "{p:?}");
        assert_eq!(p.config.max_text, running.max_text);
        let p = plan(
            &running,
            &parse(&["--max-payload", "1024", "--max-text", "500"]),
        );
        assert_eq!(p.changed, ["max-text=500"]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn identity_options_reload_except_the_mode() {
        let running = parse(&["--auth-key", "/a"]);
        let new = parse(&[
            "--auth-key",
            "/b",
            "--auth",
            "required",
            "--auth-issuer",
            "me",
            "--max-sessions-per-account",
            "2",
            "--session-key-ttl-ms",
            "1000",
        ]);
        let p = plan(&running, &new);
        assert_eq!(
            p.changed,
            [
                "max-sessions-per-account=2",
                "session-key-ttl-ms=1000",
                "auth-key=Some(\"/b\")",
                "auth-issuer=Some(\"me\")",
            ]
        );
        assert_eq!(p.restart, ["auth"]);
        assert_eq!(
            p.config.auth_key.as_deref(),
            Some(std::path::Path::new("/b"))
        );
        assert_eq!(p.config.auth, running.auth);
    }

    #[test]
    fn the_login_queue_bounds_are_live_and_the_memory_bounds_wait() {
        let running = parse(&[]);
        let new = parse(&[
            "--logins-per-iteration",
            "8",
            "--login-time-per-iteration-us",
            "500",
            "--max-logins-waiting",
            "100",
            "--max-dedup-ids",
            "8192",
            "--max-kept-session-keys",
            "10",
            "--closes-per-iteration",
            "9",
        ]);
        let p = plan(&running, &new);
        assert_eq!(
            p.changed,
            [
                "logins-per-iteration=8",
                "login-time-per-iteration-us=500",
                "max-logins-waiting=100",
                "closes-per-iteration=9",
            ]
        );
        assert_eq!(p.restart, ["max-dedup-ids", "max-kept-session-keys"]);
        assert_eq!(p.config.logins_per_iteration, 8);
        assert_eq!(p.config.max_dedup_ids, running.max_dedup_ids);
    }

    #[test]
    fn the_room_state_ttl_is_live_and_the_state_file_waits() {
        let running = parse(&["--state-file", "/tmp/a.json"]);
        let new = parse(&["--state-file", "/tmp/b.json", "--room-state-ttl-ms", "1000"]);
        let p = plan(&running, &new);
        assert_eq!(p.changed, ["room-state-ttl-ms=1000"]);
        assert_eq!(p.restart, ["state-file"]);
        assert_eq!(p.config.room_state_ttl.as_millis(), 1000);
        assert_eq!(p.config.state_file, running.state_file);
    }

    #[test]
    fn nothing_changed_is_nothing() {
        let c = parse(&["--rate", "3"]);
        let p = plan(&c, &parse(&["--rate", "3"]));
        assert!(p.changed.is_empty() && p.restart.is_empty(), "{p:?}");
    }
}
