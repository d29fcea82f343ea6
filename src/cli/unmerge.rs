//! `identity-reconciler unmerge`: the operator's side of `POST /identities/{id}/unmerge`.

use identity_reconciler::config::Settings;
use identity_reconciler::views;

/// Undo the merge that absorbed the primary contact ID into another identity, and
/// publish both identities (through the outbox; a running relay sends them).
#[derive(clap::Args)]
pub struct Unmerge {
    /// The absorbed primary's contact id (the key of its `mergedInto` record).
    id: i64,
}

impl Unmerge {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = super::open_store(settings).await?;
        let unmerged = store.unmerge(self.id).await?;
        println!("{}", views::unmerged_json(&unmerged));
        Ok(())
    }
}
