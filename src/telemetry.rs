//! Logging. Human or JSON lines; every line of a job carries its challenge_id through the job
//! span. Codes never reach a log: the domain types that hold them redact their Debug output,
//! and destinations are logged masked.

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Crates that log what otpd sends, the rendered message and so the code, at debug level or
/// below: rusmpp and rusmppc print every PDU, a submit_sm's text included. They are held at
/// info whatever the filter says.
const CLAMPED: [&str; 2] = ["rusmpp=info", "rusmppc=info"];

/// `directives` (an EnvFilter string) with the crates that would log codes held at info.
pub fn filter(directives: &str) -> EnvFilter {
    CLAMPED.iter().fold(EnvFilter::new(directives), |f, d| {
        f.add_directive(d.parse().expect("a valid directive"))
    })
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.filter`.
pub fn init(settings: &LogSettings) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.filter.clone());
    let filter = filter(&directives);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
