//! The commands of `identity-reconciler`, one module each. A command's module holds
//! its arguments (their doc comments are its `--help`, and `docs/reference/cli.md`
//! is generated from them) and what it does with them.
//!
//! Commands that write (`unmerge`, `forget`, `reviews approve`) go through the
//! store's functions as the HTTP admin routes do, and print the same JSON answers.

mod contracts;
mod dlq;
mod explain;
mod forget;
mod history;
mod http;
mod migrate;
mod produce;
mod reference;
mod reviews;
mod run;
mod tail;
mod topics;
mod unmerge;

use identity_reconciler::config::Settings;
use identity_reconciler::store::{self, Store};
use std::path::PathBuf;

#[derive(clap::Parser)]
#[command(
    version,
    about = "One identity per customer from a stream of order events."
)]
pub struct Cli {
    /// Settings file layered over the defaults (environment variables still win).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Each command's help is the doc comment of its arguments' type, in its module.
#[derive(clap::Subcommand)]
pub enum Command {
    Run(run::Run),
    Http(http::Http),
    Migrate(migrate::Migrate),
    Unmerge(unmerge::Unmerge),
    Forget(forget::Forget),
    History(history::History),
    Explain(explain::Explain),
    Reviews(reviews::Reviews),
    Tail(tail::Tail),
    Dlq(dlq::Dlq),
    Produce(produce::Produce),
    Topics(topics::Topics),
    Contracts(contracts::Contracts),
}

impl Command {
    /// Runs a command that needs the settings.
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        match self {
            Command::Run(run) => run.run(settings).await,
            Command::Http(http) => http.run(settings).await,
            Command::Migrate(migrate) => migrate.run(&settings).await,
            Command::Unmerge(unmerge) => unmerge.run(&settings).await,
            Command::Forget(forget) => forget.run(&settings).await,
            Command::History(history) => history.run(&settings).await,
            Command::Explain(explain) => explain.run(&settings).await,
            Command::Reviews(reviews) => reviews.run(&settings).await,
            Command::Tail(tail) => tail.run(&settings).await,
            Command::Dlq(dlq) => dlq.run(&settings).await,
            Command::Produce(produce) => produce.run(&settings).await,
            Command::Topics(topics) => topics.run(&settings).await,
            Command::Contracts(contracts) => contracts.run(),
        }
    }
}

/// The store of the configured database, migrated.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let pool = store::connect(&settings.database).await?;
    Ok(Store::new(pool, settings.reconcile.clone()))
}

/// `--brokers` when given, else the configured bootstrap servers (`KAFKA_BROKERS`).
fn brokers(given: Option<String>, settings: &Settings) -> anyhow::Result<String> {
    let brokers = given.unwrap_or_else(|| settings.kafka.brokers.clone());
    anyhow::ensure!(
        !brokers.trim().is_empty(),
        "give --brokers or set KAFKA_BROKERS"
    );
    Ok(brokers)
}
