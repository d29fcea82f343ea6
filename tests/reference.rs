//! The references of `docs/reference/` (configuration, metrics, HTTP errors) are
//! generated from the code, like the contracts; the committed copies must be the
//! generated ones, so that they cannot drift from what the service does. Needs no
//! database and no broker.

use std::path::Path;

#[test]
fn the_committed_references_are_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale: Vec<_> = identity_reconciler::contracts::stale(root)
        .into_iter()
        .filter(|path| path.starts_with("docs/reference/"))
        .collect();
    assert!(
        stale.is_empty(),
        "stale references {stale:?}: run `cargo run -- contracts` and commit docs/reference/"
    );
}

#[test]
fn every_setting_metric_and_error_code_has_its_entry() {
    let documents = identity_reconciler::contracts::generated();
    let document = |name: &str| {
        documents
            .iter()
            .find(|(path, _)| *path == name)
            .map(|(_, content)| content.as_str())
            .unwrap_or_else(|| panic!("{name} is generated"))
    };
    let configuration = document("docs/reference/configuration.md");
    for key in [
        "database.url",
        "reconcile.quarantine.window",
        "kafka.properties",
        "log.show_personal_data",
    ] {
        assert!(
            configuration.contains(&format!("### `{key}`")),
            "{key} in configuration.md"
        );
    }
    let metrics = document("docs/reference/metrics.md");
    // A metric vector with no series yet is listed with its labels all the same.
    assert!(
        metrics
            .contains("| `identity_reconciler_events_dead_lettered_total` | counter | `reason` |"),
        "{metrics}"
    );
    let errors = document("docs/reference/http-errors.md");
    assert!(errors.contains("| `forgotten` | 410 Gone |"), "{errors}");
}
