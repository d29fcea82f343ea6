//! `identity-reconciler history`: the operator's side of `GET /identities/{id}/history`.

use identity_reconciler::config::Settings;
use identity_reconciler::views;

/// Print the merges and additions of the identity contact ID belongs to.
#[derive(clap::Args)]
pub struct History {
    /// Any contact id of the identity.
    id: i64,
}

impl History {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = super::open_store(settings).await?;
        let history = store.history(self.id).await?;
        println!("{}", views::history_json(&history));
        Ok(())
    }
}
