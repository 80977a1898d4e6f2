//! Value parsers for options whose checks clap's defaults do not give:
//! `--redis` (its error must not quote a URL that may hold a password),
//! `--proxy-from` and `--node-name`.

use clap::error::ErrorKind;

use crate::server::cluster::url::RedisUrl;
use crate::server::doors::proxy::Cidrs;

/// `--redis`'s value parser: the URL's own error names what is wrong.
/// clap's usual message quotes the value it refused, which may hold a
/// password; this one names the option and the cause only.
#[derive(Clone)]
pub(super) struct RedisUrlParser;

impl clap::builder::TypedValueParser for RedisUrlParser {
    type Value = RedisUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<RedisUrl, clap::Error> {
        let refuse = |why: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for '--redis <URL>': {why}\n"),
            )
        };
        value
            .to_str()
            .ok_or_else(|| refuse("not UTF-8".into()))?
            .parse()
            .map_err(refuse)
    }
}

/// `--proxy-from`'s value parser: each part names what is wrong with it.
pub(super) fn parse_cidrs(s: &str) -> Result<Cidrs, String> {
    s.parse()
}

/// `--node-name`'s value parser. The name goes into log lines, Redis keys
/// and WELCOME's server string, so it is kept to characters that need no
/// quoting in any of them.
pub(super) fn parse_node_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("must be 1 to 64 bytes long, not {}", s.len()));
    }
    match s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (only ASCII letters, digits and `_ - . :`)"
        )),
        None => Ok(s.to_string()),
    }
}
