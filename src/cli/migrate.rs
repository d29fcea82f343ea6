//! `identity-reconciler migrate`: the schema, before a rolling deploy starts the new
//! instances.

use identity_reconciler::config::Settings;
use identity_reconciler::store;

/// Apply database migrations and exit.
#[derive(clap::Args)]
pub struct Migrate {}

impl Migrate {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        store::connect(&settings.database).await?.close().await;
        tracing::info!("migrations applied");
        Ok(())
    }
}
