//! Logging. Human or JSON lines; every line of a job carries its challenge_id through the job
//! span. Codes never reach a log: the domain types that hold them redact their Debug output,
//! and destinations are logged masked.

use crate::config::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Crates that log what otpd sends, the rendered message and so the code, at debug level or
/// below: rusmpp and rusmppc print every PDU, a submit_sm's text included. They are held at
/// info whatever the filter says.
const CLAMPED: [&str; 2] = ["rusmpp=info", "rusmppc=info"];

/// PostgreSQL's notices, which sqlx logs at info: every start-up's migration run would print
/// "relation \"_sqlx_migrations\" already exists, skipping", which says nothing. Warnings
/// and worse still show.
const QUIETED: [&str; 1] = ["sqlx::postgres::notice=warn"];

/// `directives` (an EnvFilter string) with the crates that would log codes held at info, and
/// PostgreSQL's notices held at warn.
pub fn filter(directives: &str) -> EnvFilter {
    CLAMPED
        .iter()
        .chain(&QUIETED)
        .fold(EnvFilter::new(directives), |f, d| {
            f.add_directive(d.parse().expect("a valid directive"))
        })
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.filter`.
pub fn init(settings: &LogSettings) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.filter.clone());
    let filter = filter(&directives);
    // Colours only for a person at a terminal: a journal, a file or a log shipper would keep
    // the escape codes as text. `NO_COLOR` turns them off there too.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
