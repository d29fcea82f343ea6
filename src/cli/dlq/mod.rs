//! `identity-reconciler dlq list` and `dlq redrive`: what became of the dead letters,
//! and re-publishing them to the input topic once their cause is fixed.

mod letters;
mod redrive;

use identity_reconciler::config::Settings;

/// Dead letters: list them, or re-publish them to the input topic.
#[derive(clap::Args)]
pub struct Dlq {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Print one JSON line per dead letter (where from, why; not the content).
    List {
        #[command(flatten)]
        select: Select,
    },
    /// Re-publish dead letters to the input topic, in source order, each to its
    /// source partition.
    Redrive {
        #[command(flatten)]
        select: Select,
    },
}

// Which letters, read from where. (A plain comment: a flattened type's doc comment
// would become the help of the command that flattens it.)
#[derive(clap::Args)]
struct Select {
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

impl Dlq {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let (select, redrive) = match self.action {
            Action::List { select } => (select, false),
            Action::Redrive { select } => (select, true),
        };
        let since = select
            .since
            .as_deref()
            .map(letters::parse_since)
            .transpose()?;
        let brokers = super::brokers(select.brokers, settings)?;
        let store = super::open_store(settings).await?;
        let letters = letters::letters(settings, &brokers, &store, select.from_db, since).await?;
        if redrive {
            let sent = redrive::redrive(settings, &brokers, &letters).await?;
            println!(
                "redrove {sent} dead letter(s) to {}",
                settings.kafka.input_topic
            );
        } else {
            for letter in &letters {
                println!("{}", letters::describe(letter));
            }
        }
        Ok(())
    }
}
