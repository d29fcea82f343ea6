//! `identity-reconciler run`: the main job.

use identity_reconciler::config::Settings;
use identity_reconciler::{shutdown, Application, Mode};
use tokio_util::sync::CancellationToken;

/// Worker, outbox relay and HTTP sidecar (the main job). Without KAFKA_BROKERS it
/// starts an embedded in-memory Kafka cluster.
#[derive(clap::Args)]
pub struct Run {}

impl Run {
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        serve(settings, Mode::Run).await
    }
}

/// Builds the service and runs it until SIGTERM or SIGINT.
pub async fn serve(settings: Settings, mode: Mode) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    // A signal during start-up (migrations, topic creation) stops the start too.
    let result = tokio::select! {
        built = Application::build(settings, mode, token.clone()) => match built {
            Ok(app) => app.run_until_stopped().await,
            Err(e) => Err(e),
        },
        _ = token.cancelled() => Ok(()),
    };
    if let Err(e) = &result {
        tracing::error!(error = ?e, "identity-reconciler stopped with an error");
    }
    result
}
