//! `--redis redis://HOST:PORT[/DB]`.
