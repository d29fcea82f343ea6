//! The topics the service needs, and the settings it relies on: created at start
//! (`kafka.create_topics`) and by the `topics` command, checked by `topics --check`
//! and, for the topics the relay writes, by the relay before it publishes.
//!
//! One list, so that what is created, what is checked and what an operator is told
//! to provision cannot disagree.

use crate::config::{KafkaSettings, RelayMode};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::fmt;
use std::time::Duration;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic the service needs, and how it must be made.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    /// What the service uses it for, in words for an operator.
    pub(crate) role: &'static str,
    /// Partitions it is created with.
    pub(crate) partitions: i32,
    /// The partition count is a requirement, not a default: the relay's state topic
    /// is read and written on partition 0 only.
    pub(crate) single_partition: bool,
    /// `cleanup.policy` must include `compact`.
    pub(crate) compacted: bool,
    /// Other topic settings it is created with (tuning, not checked).
    pub(crate) tuning: Vec<(&'static str, &'static str)>,
}

impl TopicSpec {
    /// The topic-level settings it is created with.
    fn configs(&self) -> Vec<(&'static str, &'static str)> {
        let mut configs = Vec::new();
        if self.compacted {
            configs.push(("cleanup.policy", "compact"));
        }
        configs.extend(self.tuning.iter().copied());
        configs
    }

    /// The Kafka command that creates it, for an operator without this binary at hand.
    pub(crate) fn create_command(&self, brokers: &str, replication: i32) -> String {
        let mut command = format!(
            "kafka-topics.sh --bootstrap-server {brokers} --create --topic {} --partitions {}",
            self.name, self.partitions
        );
        if replication > 0 {
            command.push_str(&format!(" --replication-factor {replication}"));
        }
        for (key, value) in self.configs() {
            command.push_str(&format!(" --config {key}={value}"));
        }
        command
    }
}

/// The state topic of the exactly-once relay.
pub fn state_topic(output_topic: &str) -> String {
    format!("{output_topic}.relay-state")
}

/// Every topic the service needs under `relay` (the state topic only for
/// `exactly_once`).
pub fn needed(kafka: &KafkaSettings, relay: RelayMode) -> Vec<TopicSpec> {
    let plain = |name: &str, role| TopicSpec {
        name: name.to_owned(),
        role,
        partitions: kafka.topic_partitions,
        single_partition: false,
        compacted: false,
        tuning: Vec::new(),
    };
    let mut topics = vec![
        plain(&kafka.input_topic, "the input (order-contact events)"),
        // Identity records are keyed by primary id and each carries the whole
        // identity, so a compacted topic keeps one current record per key (and
        // erasure tombstones delete theirs).
        TopicSpec {
            compacted: true,
            ..plain(&kafka.output_topic, "the output (identities)")
        },
        plain(&kafka.dlq_topic, "the dead letters"),
    ];
    if relay == RelayMode::ExactlyOnce {
        // The last committed round, one record per round under one key, so
        // compaction keeps it small.
        topics.push(TopicSpec {
            partitions: 1,
            single_partition: true,
            compacted: true,
            tuning: vec![("segment.ms", "600000")],
            ..plain(
                &state_topic(&kafka.output_topic),
                "the exactly-once relay's state",
            )
        });
    }
    topics
}

/// What became of one topic in [`create`].
#[derive(Debug)]
pub enum Creation {
    Created,
    Existed,
    Refused(RDKafkaErrorCode),
}

/// Creates those of `topics` that do not exist yet (one CreateTopics request).
pub async fn create(
    kafka: &KafkaSettings,
    brokers: &str,
    topics: &[TopicSpec],
) -> Result<Vec<(String, Creation)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka.admin_config(brokers).create()?;
    let configs: Vec<Vec<(&str, &str)>> = topics.iter().map(TopicSpec::configs).collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .map(|(topic, configs)| {
            configs.iter().fold(
                NewTopic::new(
                    &topic.name,
                    topic.partitions,
                    TopicReplication::Fixed(kafka.topic_replication),
                ),
                |new, (key, value)| new.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics(&new, &options).await?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => (topic, Creation::Created),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => (topic, Creation::Existed),
            Err((topic, code)) => (topic, Creation::Refused(code)),
        })
        .collect())
}

/// `kafka.create_topics`: creates the input, output and dead-letter topics, and the
/// relay's state topic, where they do not exist yet.
///
/// Failures are warnings, not errors: the topics may exist already under a principal
/// that may not create them, and if they are really missing the consumer and the relay
/// say so.
pub async fn create_missing_topics(settings: &KafkaSettings, brokers: &str) -> anyhow::Result<()> {
    let topics = needed(settings, RelayMode::ExactlyOnce);
    let results = match create(settings, brokers, &topics).await {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the Kafka topics; assuming they exist (kafka.create_topics = false skips this)");
            return Ok(());
        }
    };
    for (topic, creation) in results {
        match creation {
            Creation::Created => tracing::info!(%topic, "created topic"),
            Creation::Existed => {}
            Creation::Refused(code) => {
                tracing::warn!(%topic, error = %code, "cannot create topic")
            }
        }
    }
    Ok(())
}

/// Something about one topic that stops the service from working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub topic: String,
    /// What is wrong.
    pub(crate) what: String,
    /// What to do about it.
    pub(crate) fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {}: {}; {}", self.topic, self.what, self.fix)
    }
}

/// How one topic looks on the broker.
enum Found {
    Missing,
    Unauthorized,
    /// Another error, e.g. no leader yet right after its creation.
    Unavailable(RDKafkaErrorCode),
    Partitions(usize),
}

/// The problems of `topics` on the broker: missing, not visible to this principal,
/// not compacted where they must be, or a state topic with more than one partition.
/// Empty when every topic is as the service needs it.
pub async fn check(
    kafka: &KafkaSettings,
    brokers: &str,
    topics: &[TopicSpec],
) -> Result<Vec<Problem>, KafkaError> {
    let (mut problems, existing) = check_existence(kafka, brokers, topics).await?;
    let compacted: Vec<&TopicSpec> = existing.into_iter().filter(|t| t.compacted).collect();
    if compacted.is_empty() {
        return Ok(problems);
    }
    let admin: AdminClient<DefaultClientContext> = kafka.admin_config(brokers).create()?;
    let resources: Vec<ResourceSpecifier<'_>> = compacted
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let described = admin.describe_configs(&resources, &options).await?;
    for (topic, result) in compacted.into_iter().zip(described) {
        let policy = match result {
            Ok(resource) => resource
                .get("cleanup.policy")
                .and_then(|entry| entry.value.clone())
                .unwrap_or_default(),
            Err(code) => {
                problems.push(Problem {
                    topic: topic.name.clone(),
                    what: format!("cannot read its settings ({code})"),
                    fix: "grant this principal DescribeConfigs on it".to_owned(),
                });
                continue;
            }
        };
        if !policy.split(',').any(|p| p.trim() == "compact") {
            problems.push(Problem {
                topic: topic.name.clone(),
                what: format!(
                    "cleanup.policy is {policy:?}, but {} must be compacted",
                    topic.role
                ),
                fix: format!(
                    "run `kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type \
                     topics --entity-name {} --add-config cleanup.policy=compact`",
                    topic.name
                ),
            });
        }
    }
    Ok(problems)
}

/// The problems of `topics` that need no more than metadata (missing, not visible,
/// a wrong partition count: what the service's own principal can always see), and
/// the topics without them.
async fn check_existence<'a>(
    kafka: &KafkaSettings,
    brokers: &str,
    topics: &'a [TopicSpec],
) -> Result<(Vec<Problem>, Vec<&'a TopicSpec>), KafkaError> {
    let mut problems = Vec::new();
    let mut existing = Vec::new();
    for (topic, found) in topics.iter().zip(describe(kafka, brokers, topics).await?) {
        let problem = |what: String, fix: String| Problem {
            topic: topic.name.clone(),
            what,
            fix,
        };
        match found {
            Found::Missing => problems.push(problem(
                format!("missing ({})", topic.role),
                format!(
                    "create it with `identity-reconciler topics` or `{}`",
                    topic.create_command(brokers, kafka.topic_replication)
                ),
            )),
            Found::Unauthorized => problems.push(problem(
                "not authorised to describe it".to_owned(),
                "grant this principal Describe (and the service Read/Write) on it".to_owned(),
            )),
            Found::Unavailable(code) => problems.push(problem(
                format!("the broker answers {code} about it"),
                "try again in a moment; if it lasts, look at the broker's log".to_owned(),
            )),
            Found::Partitions(count) if topic.single_partition && count != 1 => {
                problems.push(problem(
                    format!("{count} partitions, but {} must have exactly 1", topic.role),
                    format!(
                        "with the service stopped, delete it and create it again with \
                         `identity-reconciler topics` or `{}`",
                        topic.create_command(brokers, kafka.topic_replication)
                    ),
                ))
            }
            Found::Partitions(_) => existing.push(topic),
        }
    }
    Ok((problems, existing))
}

fn unknown_topic(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        UnknownTopicOrPartition | UnknownTopic | UnknownPartition
    )
}

/// Each topic's partition count, from a consumer's metadata request: a consumer's
/// request never creates a topic, even on a broker with automatic creation on.
async fn describe(
    kafka: &KafkaSettings,
    brokers: &str,
    topics: &[TopicSpec],
) -> Result<Vec<Found>, KafkaError> {
    let client: BaseConsumer = kafka
        .admin_config(brokers)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|name| {
                let metadata = match client.fetch_metadata(Some(name), ADMIN_TIMEOUT) {
                    Ok(metadata) => metadata,
                    Err(e) if e.rdkafka_error_code().is_some_and(unknown_topic) => {
                        return Ok(Found::Missing)
                    }
                    Err(e) => return Err(e),
                };
                let topic = metadata.topics().iter().find(|t| t.name() == name);
                Ok(match topic {
                    None => Found::Missing,
                    Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Found::Unauthorized,
                        Some(code) if unknown_topic(code) => Found::Missing,
                        Some(code) => Found::Unavailable(code),
                        None if t.partitions().is_empty() => Found::Missing,
                        None => Found::Partitions(t.partitions().len()),
                    },
                })
            })
            .collect()
    })
    .await
    .expect("the metadata requests do not panic")
}

/// What stops the relay from publishing until somebody acts, said so that an
/// operator knows what to do.
#[derive(Debug)]
pub(crate) struct CannotPublish(pub String);

impl fmt::Display for CannotPublish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the outbox relay cannot publish: {}", self.0)
    }
}

impl std::error::Error for CannotPublish {}

/// Before the relay publishes: the topics it writes exist (with one partition for
/// the state topic). Needs only metadata, which the service's principal can see on
/// the topics it may write.
pub(crate) async fn relay_topics_present(
    kafka: &KafkaSettings,
    brokers: &str,
    relay: RelayMode,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let topics: Vec<TopicSpec> = needed(kafka, relay)
        .into_iter()
        .filter(|t| t.name == kafka.output_topic || t.single_partition)
        .collect();
    let (problems, _) = check_existence(kafka, brokers, &topics).await?;
    if problems.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = problems.iter().map(Problem::to_string).collect();
    Err(Box::new(CannotPublish(problems.join("; "))))
}

/// For readiness and the log: what about `error` keeps the relay from publishing
/// until somebody acts (a missing topic, a refused authorisation, a fenced producer);
/// `None` for what passes by itself (a broker restarting, a database blip).
pub(crate) fn cannot_publish(
    error: &(dyn std::error::Error + 'static),
    kafka: &KafkaSettings,
    transactional_id: &str,
) -> Option<String> {
    if let Some(CannotPublish(reason)) = error.downcast_ref::<CannotPublish>() {
        return Some(reason.clone());
    }
    let code = error.downcast_ref::<KafkaError>()?.rdkafka_error_code()?;
    let topics = format!(
        "{} and {}",
        kafka.output_topic,
        state_topic(&kafka.output_topic)
    );
    use RDKafkaErrorCode::*;
    Some(match code {
        code if unknown_topic(code) => format!(
            "a topic it writes ({topics}) is missing ({code}); run `identity-reconciler topics --check` \
             and create what it names"
        ),
        TopicAuthorizationFailed => format!(
            "not authorised to write to {topics} ({code}); grant the service's principal Write \
             and Describe on them"
        ),
        TransactionalIdAuthorizationFailed => format!(
            "not authorised to use the transactional id {transactional_id} ({code}); grant the \
             service's principal Write and Describe on that TransactionalId"
        ),
        ClusterAuthorizationFailed => format!(
            "not authorised for idempotent writes ({code}); grant the service's principal \
             IdempotentWrite on the cluster"
        ),
        Fenced | ProducerFenced | InvalidProducerEpoch => format!(
            "its producer was fenced ({code}): another process took the transactional id \
             {transactional_id}; retrying with a new producer. If it goes on, two deployments \
             share kafka.group_id and the output topic: give each its own group"
        ),
        _ => return None,
    })
}
