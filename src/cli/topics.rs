//! `identity-reconciler topics`: creates the topics the service needs, with the
//! settings it relies on, or with `--check` only says what is missing or wrong and
//! how to fix it. The same list as `kafka.create_topics` at start
//! ([`identity_reconciler::worker::topics`]), for compose's init step and for
//! operators who provision topics themselves.

use anyhow::Context;
use identity_reconciler::config::Settings;
use identity_reconciler::worker::topics::{self, Creation, Problem};
use std::time::Duration;

/// How long a topic just created may take to show in the metadata of every broker.
const SETTLE: Duration = Duration::from_secs(30);

/// Create the Kafka topics the service needs (input, output, dead letters, the relay's
/// state), or with --check say which are missing or set up wrong.
#[derive(clap::Args, Debug)]
pub struct Topics {
    /// Create nothing: exit 1 naming each topic that is missing or set up wrong, and
    /// how to fix it.
    #[arg(long)]
    check: bool,
    /// Bootstrap servers (default: KAFKA_BROKERS / settings).
    #[arg(long)]
    brokers: Option<String>,
}

impl Topics {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        run(settings, self).await
    }
}

async fn run(settings: &Settings, args: Topics) -> anyhow::Result<()> {
    let kafka = &settings.kafka;
    let brokers = super::brokers(args.brokers, settings)?;
    let needed = topics::needed(kafka, settings.relay.mode);
    let mut created = Vec::new();
    if !args.check {
        let results = topics::create(kafka, &brokers, &needed)
            .await
            .with_context(|| format!("cannot create the topics on {brokers}"))?;
        let mut refused = Vec::new();
        for (topic, creation) in results {
            match creation {
                Creation::Created => {
                    println!("created {topic}");
                    created.push(topic);
                }
                Creation::Existed => println!("{topic} exists"),
                Creation::Refused(code) => refused.push(format!("{topic}: {code}")),
            }
        }
        anyhow::ensure!(
            refused.is_empty(),
            "the broker refused to create {} (the principal needs Create on the topics or the cluster)",
            refused.join(", ")
        );
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    let problems = loop {
        let problems = topics::check(kafka, &brokers, &needed)
            .await
            .with_context(|| format!("cannot describe the topics on {brokers}"))?;
        // A topic created a moment ago may not be in every broker's metadata yet.
        let settling = problems.iter().any(|p| created.contains(&p.topic));
        if !settling || tokio::time::Instant::now() >= deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !problems.is_empty() {
        anyhow::bail!(
            "{} of the {} topics the service needs are not as it needs them:\n{}",
            problems.len(),
            needed.len(),
            problems
                .iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!(
        "the {} topics the service needs exist with the settings it relies on: {}",
        needed.len(),
        needed
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
