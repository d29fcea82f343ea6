//! The committed contracts (`contracts/`): documents generated from the code, kept in
//! the repository so that clients can read them without running the service.
//! `identity-reconciler contracts` rewrites them; `--check` (and a test) fails when a
//! committed file differs from what the code generates.

use std::path::Path;

/// Every generated contract: file name and content.
pub fn generated() -> Vec<(&'static str, String)> {
    vec![("openapi.json", crate::http::openapi_document())]
}

/// Writes every contract into `dir`.
pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in generated() {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// The contracts whose file in `dir` is missing or differs from the generated one.
pub fn stale(dir: &Path) -> Vec<&'static str> {
    generated()
        .into_iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect()
}
