//! `identity-reconciler contracts`: the committed contracts of `contracts/`, from the
//! code (see `identity_reconciler::contracts`).

use anyhow::Context;
use std::path::PathBuf;

/// Write the documents generated from the code (the contracts of `contracts/`, the
/// references of `docs/reference/`), or with --check fail when a committed one is
/// stale. Needs no settings.
#[derive(clap::Args)]
pub struct Contracts {
    /// Compare instead of writing; exit 1 naming the stale files.
    #[arg(long)]
    check: bool,
    /// The repository's root, where `contracts/` and `docs/reference/` are.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

impl Contracts {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = &self.dir;
        if !self.check {
            identity_reconciler::contracts::write(dir)
                .with_context(|| format!("cannot write the documents under {}", dir.display()))?;
            return Ok(());
        }
        let stale = identity_reconciler::contracts::stale(dir);
        if !stale.is_empty() {
            anyhow::bail!(
                "stale generated documents under {}: {} (run `identity-reconciler contracts` and commit them)",
                dir.display(),
                stale.join(", ")
            );
        }
        Ok(())
    }
}
