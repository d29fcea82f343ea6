//! `identity-reconciler contracts`: the committed contracts of `contracts/`, from the
//! code (see `identity_reconciler::contracts`).

use anyhow::Context;
use std::path::PathBuf;

/// Write the contracts of `contracts/` (the OpenAPI document and the JSON Schemas)
/// from the code, or with --check fail when a committed one is stale. Needs no
/// settings.
#[derive(clap::Args)]
pub struct Contracts {
    /// Compare instead of writing; exit 1 naming the stale files.
    #[arg(long)]
    check: bool,
    /// The directory of the contracts.
    #[arg(long, default_value = "contracts")]
    dir: PathBuf,
}

impl Contracts {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = &self.dir;
        if !self.check {
            identity_reconciler::contracts::write(dir)
                .with_context(|| format!("cannot write the contracts into {}", dir.display()))?;
            return Ok(());
        }
        let stale = identity_reconciler::contracts::stale(dir);
        if !stale.is_empty() {
            anyhow::bail!(
                "stale contracts in {}: {} (run `identity-reconciler contracts` and commit them)",
                dir.display(),
                stale.join(", ")
            );
        }
        Ok(())
    }
}
