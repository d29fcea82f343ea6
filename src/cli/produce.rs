//! `identity-reconciler produce`: events for the quick start and for tests by hand.

use anyhow::Context;
use identity_reconciler::config::Settings;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::BufRead;
use std::time::Duration;

/// Produce order-contact events (JSON objects, one per argument or per stdin line)
/// to the input topic; keyed by their `eventId` when they have one.
#[derive(clap::Args)]
pub struct Produce {
    /// Bootstrap servers (default: KAFKA_BROKERS / settings).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic (default: the input topic).
    #[arg(long)]
    topic: Option<String>,
    /// The events, one JSON object each; none reads them from stdin, one per line.
    events: Vec<String>,
}

impl Produce {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let brokers = super::brokers(self.brokers, settings)?;
        let topic = self
            .topic
            .unwrap_or_else(|| settings.kafka.input_topic.clone());
        let producer: FutureProducer = settings.kafka.command_producer_config(&brokers).create()?;
        let events: Vec<String> = if self.events.is_empty() {
            std::io::stdin().lock().lines().collect::<Result<_, _>>()?
        } else {
            self.events
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
}
