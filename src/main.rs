//! The `identity-reconciler` command: parse the CLI, load settings, start, wait.

use anyhow::Context;
use clap::{Parser, Subcommand};
use identity_reconciler::config::Settings;
use identity_reconciler::domain::{Email, Phone};
use identity_reconciler::store::ForgetTarget;
use identity_reconciler::{shutdown, store, telemetry, Application, Mode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "One identity per customer from a stream of order events."
)]
struct Cli {
    /// Settings file layered over the defaults (environment variables still win).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Worker, outbox relay and HTTP sidecar (the main job). Without KAFKA_BROKERS it
    /// starts an embedded in-memory Kafka cluster.
    Run,
    /// The HTTP sidecar only; needs no Kafka.
    Http,
    /// Apply database migrations and exit.
    Migrate,
    /// Undo the merge that absorbed the primary contact ID into another identity, and
    /// publish both identities (through the outbox; a running relay sends them).
    Unmerge {
        /// The absorbed primary's contact id (the key of its `mergedInto` record).
        id: i64,
    },
    /// Erase a person: scrub every contact of their identity, keep only salted hashes
    /// of its identifiers so later inputs carrying them are dropped, and publish
    /// tombstones for the identity's keys.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["email", "phone", "id"])))]
    Forget {
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
        /// Any contact id of the identity.
        #[arg(long)]
        id: Option<i64>,
    },
    /// Print the merges and additions of the identity contact ID belongs to.
    History { id: i64 },
    /// Print why the contacts of the identity contact ID belongs to are together:
    /// the input behind each contact and merge, and the values tying them (shown:
    /// the command is an operator's, with the database's credentials).
    Explain { id: i64 },
    /// The review queue: links refused by a cap, a keep-apart decision or a
    /// quarantined identifier.
    Reviews {
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// Print the records of the identities topic (or the dead letters) as JSON lines,
    /// from now on (or from the beginning), until interrupted.
    Tail {
        #[arg(long, value_enum, default_value = "identities")]
        topic: identity_reconciler::tail::TailTopic,
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Dead letters: list them, or re-publish them to the input topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Produce order-contact events (JSON objects, one per argument or per stdin line)
    /// to the input topic; keyed by their `eventId` when they have one.
    /// Write the contracts of `contracts/` (the OpenAPI document) from the code, or
    /// with --check fail when a committed one is stale. Needs no settings.
    Contracts {
        /// Compare instead of writing; exit 1 naming the stale files.
        #[arg(long)]
        check: bool,
        #[arg(long, default_value = "contracts")]
        dir: PathBuf,
    },
    Produce {
        /// Bootstrap servers (default: KAFKA_BROKERS / settings).
        #[arg(long)]
        brokers: Option<String>,
        /// Topic (default: the input topic).
        #[arg(long)]
        topic: Option<String>,
        events: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ReviewAction {
    /// Print pending entries, oldest first, as JSON (as `GET /reviews`).
    List {
        /// Only this reason: max_emails, max_phones, max_contacts, keep_apart, quarantine.
        #[arg(long)]
        reason: Option<String>,
        /// The `nextCursor` of the previous page.
        #[arg(long)]
        after: Option<i64>,
        /// Entries per page (1-500, default 50).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Make the refused merge now (or release the quarantined identifier).
    Approve { id: i64 },
    /// Keep the two identities apart for good (a quarantined identifier stays so).
    Reject { id: i64 },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print one JSON line per dead letter (where from, why; not the content).
    List {
        #[command(flatten)]
        select: DlqSelect,
    },
    /// Re-publish dead letters to the input topic, in source order, each to its
    /// source partition.
    Redrive {
        #[command(flatten)]
        select: DlqSelect,
    },
}

#[derive(clap::Args)]
struct DlqSelect {
    /// Read the `dead_letter` table (letters the DLQ topic could not take whole)
    /// instead of the DLQ topic.
    #[arg(long)]
    from_db: bool,
    /// Only letters written since: an RFC 3339 time or a duration back ("2h", "7d").
    #[arg(long)]
    since: Option<String>,
    /// Bootstrap servers (default: KAFKA_BROKERS / settings).
    #[arg(long)]
    brokers: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Contracts { check, dir } = &cli.command {
        return contracts(*check, dir);
    }
    let settings = Settings::load(cli.config.as_deref()).context("invalid settings")?;
    telemetry::init(settings.log.format);
    let mode = match cli.command {
        Command::Run => Mode::Run,
        Command::Http => Mode::Http,
        Command::Migrate => {
            store::connect(&settings.database).await?.close().await;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::Produce {
            brokers,
            topic,
            events,
        } => return produce(&settings, brokers, topic, events).await,
        Command::Dlq { command } => return dlq(&settings, command).await,
        Command::Contracts { .. } => unreachable!("handled before the settings are loaded"),
        Command::Unmerge { id } => {
            let store = open_store(&settings).await?;
            let unmerged = store.unmerge(id).await?;
            println!("{}", identity_reconciler::views::unmerged_json(&unmerged));
            return Ok(());
        }
        Command::Forget { email, phone, id } => {
            let store = open_store(&settings).await?;
            let mode = settings.reconcile.normalization;
            let target = match (email, phone, id) {
                (Some(e), _, _) => {
                    ForgetTarget::Email(Email::parse(&e, mode)?.context("--email is empty")?)
                }
                (_, Some(p), _) => {
                    ForgetTarget::Phone(Phone::parse(&p, mode)?.context("--phone is empty")?)
                }
                (_, _, Some(id)) => ForgetTarget::Id(id),
                _ => unreachable!("clap requires one of them"),
            };
            let forgotten = store.forget(&target).await?;
            println!("{}", identity_reconciler::views::forgotten_json(&forgotten));
            return Ok(());
        }
        Command::Reviews { action } => {
            let store = open_store(&settings).await?;
            let answer = match action {
                ReviewAction::List {
                    reason,
                    after,
                    limit,
                } => {
                    let query = identity_reconciler::views::ReviewQuery {
                        reason,
                        after,
                        limit,
                    };
                    let (reason, after, limit) = query.checked()?;
                    identity_reconciler::views::review_page_json(
                        &store.reviews(reason, after, limit).await?,
                    )
                }
                ReviewAction::Approve { id } => identity_reconciler::views::review_decision_json(
                    &store.approve_review(id).await?,
                ),
                ReviewAction::Reject { id } => identity_reconciler::views::review_decision_json(
                    &store.reject_review(id).await?,
                ),
            };
            println!("{answer}");
            return Ok(());
        }
        Command::Tail {
            topic,
            from_beginning,
            limit,
        } => {
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            let mut out = std::io::stdout().lock();
            return identity_reconciler::tail::tail(
                &settings,
                topic,
                from_beginning,
                limit,
                &mut out,
                token.cancelled(),
            )
            .await;
        }
        Command::Explain { id } => {
            let store = open_store(&settings).await?;
            let explanation = store.explain(id).await?;
            println!(
                "{}",
                identity_reconciler::views::explanation_json(&explanation, true)
            );
            return Ok(());
        }
        Command::History { id } => {
            let store = open_store(&settings).await?;
            let history = store.history(id).await?;
            println!("{}", identity_reconciler::views::history_json(&history));
            return Ok(());
        }
    };
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

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let (select, redrive) = match command {
        DlqCommand::List { select } => (select, false),
        DlqCommand::Redrive { select } => (select, true),
    };
    let since = select
        .since
        .as_deref()
        .map(identity_reconciler::worker::parse_since)
        .transpose()?;
    let brokers = select
        .brokers
        .unwrap_or_else(|| settings.kafka.brokers.clone());
    anyhow::ensure!(
        !brokers.trim().is_empty(),
        "give --brokers or set KAFKA_BROKERS"
    );
    let store = open_store(settings).await?;
    let letters = identity_reconciler::worker::dead_letters(
        settings,
        &brokers,
        &store,
        select.from_db,
        since,
    )
    .await?;
    if redrive {
        let sent = identity_reconciler::worker::redrive(settings, &brokers, &letters).await?;
        println!(
            "redrove {sent} dead letter(s) to {}",
            settings.kafka.input_topic
        );
    } else {
        for letter in &letters {
            println!("{}", identity_reconciler::worker::describe_letter(letter));
        }
    }
    Ok(())
}

async fn open_store(settings: &Settings) -> anyhow::Result<store::Store> {
    let pool = store::connect(&settings.database).await?;
    Ok(store::Store::new(pool, settings.reconcile.clone()))
}

async fn produce(
    settings: &Settings,
    brokers: Option<String>,
    topic: Option<String>,
    events: Vec<String>,
) -> anyhow::Result<()> {
    let brokers = brokers.unwrap_or_else(|| settings.kafka.brokers.clone());
    anyhow::ensure!(
        !brokers.trim().is_empty(),
        "give --brokers or set KAFKA_BROKERS"
    );
    let topic = topic.unwrap_or_else(|| settings.kafka.input_topic.clone());
    let producer: FutureProducer = settings.kafka.command_producer_config(&brokers).create()?;
    let events: Vec<String> = if events.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        events
    };
    let mut sent = 0;
    for event in events.iter().filter(|e| !e.trim().is_empty()) {
        let key = serde_json::from_str::<serde_json::Value>(event)
            .ok()
            .and_then(|v| {
                v.get("eventId")
                    .and_then(|id| id.as_str())
                    .map(str::to_owned)
            });
        let mut record = FutureRecord::<str, str>::to(&topic).payload(event);
        if let Some(key) = &key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .context("cannot produce the event")?;
        sent += 1;
    }
    println!("produced {sent} event(s) to {topic}");
    Ok(())
}

fn contracts(check: bool, dir: &std::path::Path) -> anyhow::Result<()> {
    if !check {
        identity_reconciler::contracts::write(dir)
            .with_context(|| format!("cannot write the contracts into {}", dir.display()))?;
        return Ok(());
    }
    let stale = identity_reconciler::contracts::stale(dir);
    if !stale.is_empty() {
        anyhow::bail!(
            "stale contracts in {}: {} (run `identity-reconciler contracts` and commit them)",
            dir.display(),
            stale.join(", ")
        );
    }
    Ok(())
}
