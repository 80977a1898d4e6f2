//! `--log-format json`: one JSON object per log line, written by hand
//! (string escaping per RFC 8259), so a log pipeline can take the daemon's
//! stderr as it is.
//!
//! Members: `time` (RFC 3339, UTC, milliseconds), `level`, `target`,
//! `message`, then every key-value field of the event (`log`'s `kv`
//! feature: `info!(peer:% = addr; "...")`), numbers and booleans as such,
//! anything else as a string. A field named like one of the four fixed
//! members is written as `field_NAME` so no key appears twice.

use std::fmt::Write as _;

use log::kv::{self, Key, Value, VisitSource};
use log::Record;

/// The JSON line (without the newline) for `record`, logged at `time`.
pub fn json_line(time: &str, record: &Record<'_>) -> String {
    let mut line = String::with_capacity(192);
    line.push_str("{\"time\":");
    push_str(&mut line, time);
    line.push_str(",\"level\":");
    push_str(&mut line, record.level().as_str());
    line.push_str(",\"target\":");
    push_str(&mut line, record.target());
    line.push_str(",\"message\":");
    let message = record.args().to_string();
    push_str(&mut line, &message);
    let _ = record.key_values().visit(&mut Fields(&mut line));
    line.push('}');
    line
}

struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let line = &mut *self.0;
        line.push(',');
        let key = key.as_str();
        if matches!(key, "time" | "level" | "target" | "message") {
            push_str(line, &format!("field_{key}"));
        } else {
            push_str(line, key);
        }
        line.push(':');
        if let Some(b) = value.to_bool() {
            line.push_str(if b { "true" } else { "false" });
        } else if let Some(n) = value.to_u64() {
            let _ = write!(line, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(line, "{n}");
        } else if let Some(x) = value.to_f64().filter(|x| x.is_finite()) {
            let _ = write!(line, "{x}");
        } else {
            push_str(line, &value.to_string());
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string: quotes, backslashes and control
/// characters escaped; everything else (UTF-8) as it is.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_fields() {
        let kvs: &[(&str, Value<'_>)] = &[
            ("peer", Value::from("10.0.0.1:5")),
            ("bytes_in", Value::from(42u64)),
            ("delta", Value::from(-3i64)),
            ("tls", Value::from(true)),
            ("message", Value::from("x")),
        ];
        let args = format_args!("a \"quoted\" \\ line\nwith\ttab \u{1} é");
        let record = Record::builder()
            .args(args)
            .level(log::Level::Info)
            .target("muxchat::conn")
            .key_values(&kvs)
            .build();
        let line = json_line("2026-01-01T00:00:00.000Z", &record);
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(v["time"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "muxchat::conn");
        assert_eq!(v["message"], "a \"quoted\" \\ line\nwith\ttab \u{1} é");
        assert_eq!(v["peer"], "10.0.0.1:5");
        assert_eq!(v["bytes_in"], 42);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["tls"], true);
        assert_eq!(v["field_message"], "x");
    }
}
