//! The Kafka side: the consumer loop, dead letters, the outbox relay and the embedded
//! development cluster.

mod batch;
mod consumer;
mod dead_letters;
mod drain;
mod embedded;
pub mod event;
mod observe;
mod pause;
mod relay;
pub mod step;
pub mod topics;

/// The headers a dead letter carries after the original message's own;
/// `contracts/dlq-headers.schema.json` is generated from these names.
pub mod dlq_header {
    pub const REASON: &str = "dlq.reason";
    pub const ERROR: &str = "dlq.error";
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// On a truncated copy only (the whole letter is kept in PostgreSQL).
    pub const TRUNCATED: &str = "dlq.truncated";
    pub(crate) const ORIGINAL_VALUE_BYTES: &str = "dlq.original.value.bytes";
}

pub(crate) use embedded::EmbeddedCluster;
pub use topics::{create_missing_topics, state_topic as relay_state_topic};

use crate::config::{KafkaSettings, Settings};
use crate::health::Health;
use crate::metrics::METRICS;
use crate::store::Store;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The consumer of the input topic.
type Kafka = StreamConsumer<KafkaContext>;

/// What the consumer loop and the relay share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) producer: FutureProducer<KafkaContext>,
    /// Bootstrap servers, for the clients the relay makes per lease.
    pub(crate) brokers: String,
    pub(crate) health: Arc<Health>,
    pub(crate) shutdown: CancellationToken,
}

/// Client context of every Kafka client: feeds readiness and lag metrics; for the
/// consumer, drains revoked partitions and commits synchronously before they go.
#[derive(Clone)]
pub(crate) struct KafkaContext {
    health: Arc<Health>,
    /// The consumer loop has paused its assignment (back-off): partitions assigned
    /// meanwhile are paused as they arrive.
    paused: Arc<AtomicBool>,
    /// The consumer's in-flight work per partition (see [`drain`]).
    drain: Arc<drain::Drain>,
}

impl KafkaContext {
    fn new(health: Arc<Health>) -> KafkaContext {
        KafkaContext::draining(health, Duration::ZERO)
    }

    /// The consumer's context: a revocation waits up to `drain_timeout` for the batch
    /// in flight.
    fn draining(health: Arc<Health>, drain_timeout: Duration) -> KafkaContext {
        KafkaContext {
            health,
            paused: Arc::default(),
            drain: Arc::new(drain::Drain::new(drain_timeout)),
        }
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.health.set_broker_reachable(up);
        let mut total_lag = 0;
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    total_lag += stats.consumer_lag;
                    if statistics.client_type == "consumer" {
                        observe::observe_partition(
                            name,
                            *partition,
                            stats.app_offset,
                            stats.lo_offset,
                            stats.consumer_lag,
                        );
                    }
                    METRICS
                        .consumer_lag
                        .with_label_values(&[name, &partition.to_string()])
                        .set(stats.consumer_lag);
                }
            }
        }
        // Producers report no consumer lag; only the consumer's statistics count.
        if statistics.client_type == "consumer" {
            self.health.set_lag(total_lag);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health.set_broker_reachable(false);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // The batch in flight finishes or is abandoned, and what was read from these
            // partitions is dropped, before they go (see `drain`); this blocks the
            // consumer's poll, which librdkafka runs this callback in.
            let revoked = partitions
                .elements()
                .iter()
                .map(|p| p.partition())
                .collect();
            let outcome = self.drain.revoke(&revoked);
            METRICS
                .revocations
                .with_label_values(&[outcome.as_str()])
                .inc();
            // Stored offsets belong to work already committed in PostgreSQL.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                Err(e) if nothing_to_commit(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "commit before revocation failed; the new owner will skip the events via the ledger")
                }
            }
            tracing::info!(
                partitions = partitions.count(),
                batch = %outcome.as_str(),
                "partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.health.set_broker_reachable(true);
            // Assigned during a back-off: they wait with the others.
            let paused = self.paused.load(Ordering::SeqCst);
            if paused {
                if let Err(e) = consumer.pause(partitions) {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
            }
            tracing::info!(
                partitions = partitions.count(),
                paused,
                "partitions assigned"
            );
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) => {}
            Err(e) if nothing_to_commit(&e) => {}
            Err(e) => {
                METRICS.offset_commit_failures.inc();
                tracing::warn!(error = %e, "committing offsets failed; they are committed again with the next ones, or redelivered and skipped by the ledger");
            }
        }
    }
}

fn nothing_to_commit(error: &KafkaError) -> bool {
    matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset))
}

/// Whether a producer error means the topic will never take this record, whatever
/// the retries: it is too large (the broker's or the topic's limit, or librdkafka's
/// own `message.max.bytes`, which it checks before sending), invalid, or the topic is
/// missing or not writable. Everything else (broker unreachable, timeouts, leader
/// changes, a full local queue) is transient.
pub(crate) fn refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | MessageBatchTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | BadMessage
                | TopicAuthorizationFailed
                | UnknownTopicOrPartition
                | UnknownTopic
                | UnknownPartition
                | InvalidTopic
                | PolicyViolation
        )
    )
}

/// How long librdkafka may take to accept a record into its queue.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands a record to the producer without blocking the runtime, waiting while the
/// local queue is full; records are enqueued in call order, which keeps per-key order.
async fn enqueue<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &FutureProducer<KafkaContext>,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError> {
    let deadline = tokio::time::Instant::now() + ENQUEUE_TIMEOUT;
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if tokio::time::Instant::now() < deadline =>
            {
                record = returned;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl KafkaSettings {
    fn consumer(
        &self,
        brokers: &str,
        health: Arc<Health>,
        drain_timeout: Duration,
    ) -> Result<StreamConsumer<KafkaContext>, KafkaError> {
        self.consumer_config(brokers)
            .create_with_context(KafkaContext::draining(health, drain_timeout))
    }

    fn producer(
        &self,
        brokers: &str,
        health: Arc<Health>,
    ) -> Result<FutureProducer<KafkaContext>, KafkaError> {
        self.producer_config(brokers)
            .create_with_context(KafkaContext::new(health))
    }

    /// The relay's producer for `relay.mode = "exactly_once"`.
    fn transactional_producer(
        &self,
        brokers: &str,
        health: Arc<Health>,
        transactional_id: &str,
    ) -> Result<FutureProducer<KafkaContext>, KafkaError> {
        self.transactional_producer_config(brokers, transactional_id)
            .create_with_context(KafkaContext::new(health))
    }
}

/// The running worker: consumer loop and relay.
pub(crate) struct Worker {
    pub(crate) shared: Shared,
    consumer: StreamConsumer<KafkaContext>,
}

impl Worker {
    pub(crate) fn new(
        settings: Arc<Settings>,
        store: Store,
        brokers: &str,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Worker> {
        let producer = settings.kafka.producer(brokers, health.clone())?;
        let consumer =
            settings
                .kafka
                .consumer(brokers, health.clone(), settings.worker.drain_timeout)?;
        health.worker_started();
        Ok(Worker {
            shared: Shared {
                settings,
                store,
                producer,
                brokers: brokers.to_owned(),
                health,
                shutdown,
            },
            consumer,
        })
    }

    /// Spawns the consumer loop and the relay; both end after shutdown is requested.
    pub(crate) fn spawn(self, tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>) {
        tasks
            .spawn(consumer::ConsumerLoop::new(self.shared.clone(), Arc::new(self.consumer)).run());
        tasks.spawn(relay::run(self.shared));
    }
}
