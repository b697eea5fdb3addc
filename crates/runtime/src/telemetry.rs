//! Logging: tracing to stderr, as text or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! OpenTelemetry export is added by the operations issue; nothing here records message bodies or
//! secrets — that rule is kept at each span and event, not filtered here.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing),
/// which keeps tests that start several agents in one process simple.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
