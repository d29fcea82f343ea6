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
        let cli_page = dir.join(super::reference::CLI_PAGE);
        let cli_markdown = super::reference::cli_markdown();
        if !self.check {
            identity_reconciler::contracts::write(dir)
                .and_then(|()| std::fs::write(&cli_page, cli_markdown))
                .with_context(|| format!("cannot write the documents under {}", dir.display()))?;
            return Ok(());
        }
        let mut stale = identity_reconciler::contracts::stale(dir);
        if std::fs::read_to_string(&cli_page).ok() != Some(cli_markdown) {
            stale.push(super::reference::CLI_PAGE);
        }
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
