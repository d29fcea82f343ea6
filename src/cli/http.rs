//! `identity-reconciler http`: the HTTP sidecar alone, for instances that only serve.

use identity_reconciler::config::Settings;
use identity_reconciler::Mode;

/// The HTTP sidecar only; needs no Kafka.
#[derive(clap::Args)]
pub struct Http {}

impl Http {
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        super::run::serve(settings, Mode::Http).await
    }
}
