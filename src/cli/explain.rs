//! `identity-reconciler explain`: the operator's side of `GET /identities/{id}/explain`.

use identity_reconciler::config::Settings;
use identity_reconciler::views;

/// Print why the contacts of the identity contact ID belongs to are together:
/// the input behind each contact and merge, and the values tying them (shown:
/// the command is an operator's, with the database's credentials).
#[derive(clap::Args)]
pub struct Explain {
    /// Any contact id of the identity.
    id: i64,
}

impl Explain {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = super::open_store(settings).await?;
        let explanation = store.explain(self.id).await?;
        println!("{}", views::explanation_json(&explanation, true));
        Ok(())
    }
}
