//! Logging set-up: JSON lines for long-running processes when not on a terminal (what log
//! collectors read), human-readable otherwise; `RUST_LOG` filters (default `info`, and
//! `warn` for one-shot commands so their output stays clean).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(long_running: bool) {
    let default = if long_running { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if long_running && !std::io::stderr().is_terminal() {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
