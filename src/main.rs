//! The `identity-reconciler` command: parse the CLI, load settings, hand off to the
//! command's module under `src/cli/`.
//!
//! The commands live in the binary, not in the library: they are the outermost layer
//! (they read the library, nothing in the library reads them), and the compiler keeps
//! it so.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use identity_reconciler::config::Settings;
use identity_reconciler::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { config, command } = Cli::parse();
    // `contracts` writes files from the code alone, so it runs without settings, a
    // database or a broker (CI and a fresh clone).
    let command = match command {
        Command::Contracts(contracts) => return contracts.run(),
        command => command,
    };
    let settings = Settings::load(config.as_deref()).context("invalid settings")?;
    telemetry::init(settings.log.format);
    command.run(settings).await
}
