//! The reference documents of `docs/reference/`, written from what the code defines:
//! the settings (their types and `config/default.toml`), the metrics registry and the
//! HTTP error codes.

use crate::config::{Section, Setting};
use crate::http::{ErrorCode, ERROR_CODES};
use crate::metrics::{Described, Metrics, ALERTS};
use std::fmt::Write;

fn generated_from(sources: &str) -> String {
    format!(
        "<!-- Generated from {sources} by `cargo run -- contracts`; edit those and regenerate, not this file. -->\n"
    )
}

/// `docs/reference/configuration.md`.
///
/// # Panics
/// When the settings types and `config/default.toml` disagree, naming each key.
pub(super) fn configuration() -> String {
    let sections = crate::config::sections().unwrap_or_else(|problems| {
        panic!("the settings types and config/default.toml disagree:\n{problems}")
    });
    let mut out = generated_from("the settings types (`src/config.rs`) and `config/default.toml`");
    out.push_str("# Configuration\n\n");
    for note in sections
        .iter()
        .filter(|s| s.name.is_empty())
        .flat_map(|s| &s.notes)
    {
        push_note(&mut out, note);
    }
    out.push_str(
        "Every setting below is in `config/default.toml` with its default. A key the \
         settings do not know, or a value of the wrong kind, is refused at start.\n\n",
    );
    out.push_str("| Setting | Type | Default | Environment |\n|---|---|---|---|\n");
    for setting in sections.iter().flat_map(|s| &s.settings) {
        let env = if setting.env.is_empty() {
            "(a file only)".to_owned()
        } else {
            code_list(&setting.env)
        };
        writeln!(
            out,
            "| [`{key}`](#{anchor}) | {kind} | `{default}` | {env} |",
            key = setting.key,
            anchor = anchor(&setting.key),
            kind = setting.kind,
            default = cell(&setting.default),
        )
        .expect("writing to a String");
    }
    out.push('\n');
    for section in sections.iter().filter(|s| !s.name.is_empty()) {
        write_section(&mut out, section);
    }
    out
}

fn write_section(out: &mut String, section: &Section) {
    writeln!(out, "## `[{}]`\n", section.name).expect("writing to a String");
    if !section.comment.is_empty() {
        writeln!(out, "{}\n", prose(&section.comment)).expect("writing to a String");
    }
    for Setting { key, meaning, .. } in &section.settings {
        writeln!(out, "### `{key}`\n\n{}\n", prose(meaning)).expect("writing to a String");
    }
    for note in &section.notes {
        push_note(out, note);
    }
}

/// A comment of the settings file that belongs to no setting: prose, or, when it
/// shows settings (an example), the comment as written.
fn push_note(out: &mut String, note: &str) {
    let shows_a_setting = note.lines().any(|line| {
        line.trim_start().split_once(" = ").is_some_and(|(key, _)| {
            key.trim_matches('"')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        })
    });
    if shows_a_setting {
        let lines: Vec<String> = note
            .lines()
            .map(|line| format!("# {line}").trim_end().to_owned())
            .collect();
        writeln!(out, "```toml\n{}\n```\n", lines.join("\n")).expect("writing to a String");
    } else {
        writeln!(out, "{}\n", prose(note)).expect("writing to a String");
    }
}

/// Plain text as Markdown: outside code spans, `<` and `*` are escaped (the file
/// writes `<group>` and masked values such as `j***@example.com`).
fn prose(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                part.to_owned()
            } else {
                part.replace('<', "\\<").replace('*', "\\*")
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// `docs/reference/metrics.md`.
///
/// # Panics
/// When [`ALERTS`] names a metric the registry does not have.
pub(super) fn metrics() -> String {
    let described = Metrics::described();
    let mut out = generated_from("the metrics registry (`src/metrics.rs`)");
    out.push_str(
        "# Metrics\n\n\
         Served at `GET /metrics` in the Prometheus text format. Counters count from the \
         process's start; a series with labels appears once it has a value. A histogram \
         is served as its `_bucket`, `_sum` and `_count` series.\n\n\
         | Metric | Type | Labels | Meaning |\n|---|---|---|---|\n",
    );
    for Described {
        name,
        kind,
        labels,
        help,
    } in &described
    {
        writeln!(
            out,
            "| `{name}` | {kind} | {labels} | {help} |",
            labels = code_list(labels),
            help = cell(help),
        )
        .expect("writing to a String");
    }
    out.push_str(
        "\n## What to alert on\n\n\
         Thresholds depend on the deployment and on what it promises its users; these \
         are the conditions worth a page or a ticket.\n\n\
         | Metric | Alert on |\n|---|---|\n",
    );
    for (metric, alert) in ALERTS {
        let name = described
            .iter()
            .map(|d| d.name.as_str())
            .find(|name| name.strip_prefix(crate::metrics::PREFIX) == Some(metric))
            .unwrap_or_else(|| panic!("metrics::ALERTS names {metric}, which is no metric"));
        writeln!(out, "| `{name}` | {} |", cell(alert)).expect("writing to a String");
    }
    out
}

/// `docs/reference/http-errors.md`.
pub(super) fn http_errors() -> String {
    let mut out = generated_from("the HTTP error codes (`src/http/error.rs`)");
    out.push_str(
        "# HTTP errors\n\n\
         Every error answer has the body `{\"error\": {\"code\": \"…\", \"message\": \"…\"}}` \
         (the `Error` schema of `contracts/openapi.json`). The `code` is stable and meant \
         for programs; the `message` is for people and never repeats a submitted email or \
         phone number. Expect codes to be added later: treat an unknown one by its status.\n\n\
         | Code | Status | Meaning |\n|---|---|---|\n",
    );
    let mut codes: Vec<&ErrorCode> = ERROR_CODES.iter().collect();
    // By status, the codes without a status of their own last; the table's order
    // otherwise.
    codes.sort_by_key(|c| c.status.map_or(u16::MAX, |s| s.as_u16()));
    for ErrorCode {
        code,
        status,
        meaning,
    } in codes
    {
        let status = status.map_or("another 4xx".to_owned(), |s| s.to_string());
        writeln!(out, "| `{code}` | {status} | {} |", cell(meaning)).expect("writing to a String");
    }
    out
}

/// Text that fits in a Markdown table's cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn code_list(items: &[String]) -> String {
    if items.is_empty() {
        return "—".to_owned();
    }
    let items: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    items.join(", ")
}

/// The anchor GitHub gives the heading `` `key` ``.
fn anchor(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}
