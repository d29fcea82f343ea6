//! Logging. Verbosity from `RUST_LOG` (default `info`); `text` or `json` lines.
//! Emails and phone numbers are not logged: the domain's `Debug` impls hide them and
//! log lines name contact ids, counts and event coordinates instead. Only with
//! `log.show_personal_data` do debug lines show them, masked (`domain::mask`).
//! Spans: `http{method,path,request_id}` around each request, `event{topic,partition,
//! offset,event_id}` around each event's parsing.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // `try_init`: tests may initialise more than once.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// "outer: cause: root cause", for logs.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
