//! Typed settings. Layers, later ones win: `config/default.toml` (compiled in, so the
//! binary runs from any directory), an optional `--config FILE`, `IR__SECTION__KEY`
//! environment variables, then the named variables of the contract (§7).
//!
//! Nothing else in the crate reads raw configuration: this module also builds the
//! sqlx and rdkafka option objects.

mod catalogue;

pub(crate) use catalogue::{sections, Section, Setting};

use crate::domain::identifiers::IdentifierKinds;
use crate::domain::{Blocklist, InputRules, Limits, Normalization};
use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The contract's environment variables and the settings they override.
const ENV_OVERRIDES: [(&str, &str); 7] = [
    ("DATABASE_URL", "database.url"),
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    ("KAFKA_INPUT_TOPIC", "kafka.input_topic"),
    ("KAFKA_OUTPUT_TOPIC", "kafka.output_topic"),
    ("KAFKA_DLQ_TOPIC", "kafka.dlq_topic"),
    ("HTTP_ADDR", "http.addr"),
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub reconcile: ReconcileSettings,
    pub kafka: KafkaSettings,
    pub(crate) worker: WorkerSettings,
    pub relay: RelaySettings,
    pub ledger: LedgerSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    /// Identifier kinds beyond email and phone, by name; checked at load (not used
    /// by reconciliation yet: docs/design/identifier-kinds.md).
    pub identifiers: IdentifierKinds,
    /// Decided by the code, not read from any layer (see [`Tuning`]).
    #[serde(skip)]
    pub tuning: Tuning,
}

/// How much work runs at once: decided by the code from the machine it runs on, not
/// by an operator (no file or variable sets it; tests change it to force races).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Transactions one worker batch is split into, by partition, applied
    /// concurrently (a partition's events stay in one of them, in order).
    pub(crate) apply_lanes: usize,
    /// Transactions that coalesced `POST /identify` requests may run at once.
    pub coalesce_lanes: usize,
    /// Most requests coalesced into one transaction.
    pub coalesce_max_batch: usize,
}

impl Default for Tuning {
    /// Two apply lanes wherever there are two cores: concurrent batches of one mix
    /// nearly always share a returning customer and then wait on each other's locks,
    /// so a third stream gained nothing over a second (docs/performance.md). One
    /// coalescing lane per two cores: on two, one lane gave both the highest rate and
    /// the lowest p99 at 64 connections (more mostly waited on each other and on the
    /// CPU). 64 requests per transaction is what 64 connections queue at most.
    fn default() -> Tuning {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Tuning {
            apply_lanes: cores.clamp(1, 2),
            coalesce_lanes: (cores / 2).max(1),
            coalesce_max_batch: 64,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    /// Longest a statement waits for a pooled connection ("5s").
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Create the database named in `url` when it does not exist.
    pub(crate) create_if_missing: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    pub normalization: Normalization,
    /// Most inputs reconciled in one transaction.
    pub(crate) max_batch: usize,
    /// A worker batch stops growing once its messages' keys and values reach this
    /// many bytes (a single larger message is still a batch of one).
    pub(crate) max_batch_bytes: usize,
    /// Placeholder identifiers dropped at the boundary.
    pub blocklist: Blocklist,
    /// Per-identity caps.
    pub limits: Limits,
    /// Identifiers shared by too many people stop linking.
    pub quarantine: QuarantineSettings,
}

/// Automatic quarantine: an identifier seen with more than `max_counterparts`
/// distinct counterparts (emails of a phone, phones of an email) within `window`
/// stops being used for linking.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSettings {
    /// 0 turns automatic quarantine off (identifiers already quarantined stay so).
    pub max_counterparts: usize,
    /// A human-readable duration ("30d", "12h", "1h 30m").
    #[serde(deserialize_with = "human_duration")]
    pub window: std::time::Duration,
}

fn human_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    let duration = humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write e.g. \"30d\" or \"12h\""
        ))
    })?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom(
            "the window must be longer than zero",
        ));
    }
    Ok(duration)
}

impl ReconcileSettings {
    /// How raw identifiers become inputs.
    pub fn input_rules(&self) -> InputRules<'_> {
        InputRules {
            normalization: self.normalization,
            blocklist: &self.blocklist,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers; empty starts the embedded mock cluster.
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dlq_topic: String,
    /// Create missing topics at start.
    pub create_topics: bool,
    /// Partitions and replication of topics created at start.
    pub topic_partitions: i32,
    pub topic_replication: i32,
    /// Extra librdkafka properties for every client (TLS, SASL, tuning). Values are
    /// treated as secrets: they may hold passwords.
    #[serde(default)]
    pub(crate) properties: BTreeMap<String, SecretString>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerSettings {
    /// First delay of a retry loop ("100ms"); each retry doubles it, with jitter.
    #[serde(with = "humantime_serde")]
    pub(crate) backoff_initial: Duration,
    /// Longest delay of a retry loop ("10s").
    #[serde(with = "humantime_serde")]
    pub(crate) backoff_max: Duration,
    /// Longest a graceful shutdown waits for in-flight work before giving up ("10s").
    #[serde(with = "humantime_serde")]
    pub(crate) shutdown_timeout: Duration,
    /// Longest a rebalance waits for the batch in flight to finish before it abandons
    /// the batch's work of revoked partitions ("10s"); below the consumer's
    /// `session.timeout.ms` and `max.poll.interval.ms` (checked at start).
    #[serde(with = "humantime_serde")]
    pub(crate) drain_timeout: Duration,
    /// `/readyz` fails when messages wait but no batch completed for this long ("60s").
    #[serde(with = "humantime_serde")]
    pub(crate) stall_timeout: Duration,
    /// Bytes of the value kept in the truncated DLQ copy of a letter the DLQ topic
    /// cannot take whole.
    pub(crate) dlq_truncated_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Ledger rows older than this are pruned ("7d", "36h"); keep it longer than the
    /// input topic's retention.
    #[serde(with = "humantime_serde")]
    pub(crate) retention: Duration,
    /// Rows deleted per pruning step (one short transaction each).
    pub(crate) prune_batch: i64,
    /// Pause between pruning rounds; a round runs steps until nothing is left.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// How the relay publishes (§6 v2). Its round size and its fallback poll are
    /// constants of `worker::relay`: it is woken at commit (`LISTEN`), not by a poll.
    pub mode: RelayMode,
}

/// `exactly_once`: transactional, fenced rounds (read_committed consumers see each
/// record once). `at_least_once`: for brokers without transactions; a crash may
/// repeat a round's records, in order.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub body_limit_bytes: usize,
    /// Longest a request may take, body included, before it is answered 503 ("10s").
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (408, then closed; "5s").
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request body (408; "5s").
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// When set, every route but health, readiness, metrics and the OpenAPI document
    /// requires `Authorization: Bearer <token>`.
    #[serde(default)]
    pub auth_token: Option<SecretString>,
    /// When set, the admin routes (unmerge, forget, reviews) require
    /// `Authorization: Bearer <admin token>`; unset, they answer 403. The API token
    /// never grants them.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
}

impl HttpSettings {
    /// The configured API token, if any (an empty string disables authentication).
    pub(crate) fn auth_token(&self) -> Option<&str> {
        non_empty(&self.auth_token)
    }

    /// The configured admin token, if any (an empty string turns admin routes off).
    pub(crate) fn admin_token(&self) -> Option<&str> {
        non_empty(&self.admin_token)
    }

    /// Refuses settings where the API token would also be the admin token.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match (self.auth_token(), self.admin_token()) {
            (Some(api), Some(admin)) if api == admin => Err(
                "http.admin_token must differ from http.auth_token: the API token must not grant admin".into(),
            ),
            _ => Ok(()),
        }
    }
}

fn non_empty(secret: &Option<SecretString>) -> Option<&str> {
    secret
        .as_ref()
        .map(|t| t.expose_secret())
        .filter(|t| !t.is_empty())
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Debug-level lines may show emails and phone numbers, masked
    /// (`j***@example.com`, `***1234`). Off: they never appear in any form.
    #[serde(default)]
    pub(crate) show_personal_data: bool,
}

/// How log lines are written: plain `text`, or one JSON object per line.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// librdkafka's defaults of the consumer timeouts the drain timeout must stay below.
const SESSION_TIMEOUT_MS: u64 = 45_000;
const MAX_POLL_INTERVAL_MS: u64 = 300_000;

impl Settings {
    /// Refuses a `worker.drain_timeout` the consumer cannot afford: the rebalance
    /// callback blocks the consumer's poll while it drains, so it must end before
    /// librdkafka gives up on the member (`max.poll.interval.ms`), and docs/contract.md §6 puts
    /// it below the session timeout (`session.timeout.ms`), as the group expects.
    pub(crate) fn validate_drain_timeout(&self) -> Result<(), String> {
        let drain = self.worker.drain_timeout;
        for (property, default) in [
            ("session.timeout.ms", SESSION_TIMEOUT_MS),
            ("max.poll.interval.ms", MAX_POLL_INTERVAL_MS),
        ] {
            let limit = match self.kafka.properties.get(property) {
                None => default,
                Some(value) => value.expose_secret().trim().parse::<u64>().map_err(|_| {
                    format!("kafka.properties.\"{property}\" is not a number of milliseconds")
                })?,
            };
            if drain >= Duration::from_millis(limit) {
                return Err(format!(
                    "worker.drain_timeout ({}) must be below the consumer's {property} ({limit} ms): \
                     a rebalance that drains longer costs the worker its group membership",
                    humantime::format_duration(drain)
                ));
            }
        }
        Ok(())
    }

    /// Loads the layers described in the module doc.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file));
        }
        builder = builder.add_source(config::Environment::with_prefix("IR").separator("__"));
        for (var, key) in ENV_OVERRIDES {
            builder = builder.set_override_option(key, std::env::var(var).ok())?;
        }
        builder.build()?.try_deserialize()
    }

    /// A fresh back-off for a retry loop (`worker.backoff_initial`, `worker.backoff_max`).
    pub(crate) fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.worker.backoff_initial, self.worker.backoff_max)
    }
}

impl DatabaseSettings {
    /// Connection options from the URL, plus `plan_cache_mode=force_generic_plan` and
    /// `enable_seqscan=off`.
    ///
    /// Every statement of the service looks rows up by key. With a whole batch's
    /// emails and phones to look up, though, the planner can price a sequential scan
    /// of a mid-sized `contact` table below that many index probes and pick it, a
    /// scan far slower than the probes (on a large table it picks the probes again).
    /// Discouraging sequential scans keeps the probes; a statement with no other way
    /// still scans.
    ///
    /// With scans ruled out, the generic plan of each statement is its index plan
    /// whatever the statistics (a table that grew from empty included; the identifier
    /// indexes are plain, not partial, for that: see migration 4), and
    /// `tests/query_plans.rs` checks it on an empty and on a filled database. Planning
    /// every batch's statements for their actual values instead would cost a planning
    /// pass per statement and batch, for the same plan.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(
            PgConnectOptions::from_str(self.url.expose_secret())?.options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
            ]),
        )
    }

    pub(crate) fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
    }
}

impl KafkaSettings {
    /// Whether `run` must start the embedded mock cluster.
    pub(crate) fn embedded(&self) -> bool {
        self.brokers.trim().is_empty()
    }

    /// The option objects of every Kafka client the service and its commands create,
    /// each built the same way: the brokers, our defaults for that client, the
    /// operator's `[kafka.properties]` (which override the defaults), then the
    /// settings a guarantee rests on (which nothing overrides).
    fn client(
        &self,
        brokers: &str,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value.expose_secret());
        }
        for (key, value) in fixed {
            config.set(*key, *value);
        }
        config
    }

    /// An admin client (topic creation, metadata).
    pub(crate) fn admin_config(&self, brokers: &str) -> ClientConfig {
        self.client(brokers, &[], &[])
    }

    /// The worker's consumer, a member of `group_id`. Offsets are stored only once
    /// their events are durable (`enable.auto.offset.store=false`) and committed by
    /// librdkafka in the background from that store.
    pub(crate) fn consumer_config(&self, brokers: &str) -> ClientConfig {
        self.client(
            brokers,
            &[
                ("group.id", &self.group_id),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("auto.offset.reset", "earliest"),
                ("auto.commit.interval.ms", "1000"),
                ("statistics.interval.ms", "5000"),
                // Memory in bytes: prefetched messages are capped at 16 MiB in all
                // (the default, 64 MiB, is 64 one-megabyte messages), fetched 8 MiB
                // at a time; with `reconcile.max_batch_bytes` the batch in hand is
                // bounded too.
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.max.bytes", "8388608"),
            ],
            &[
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
            ],
        )
    }

    /// The worker's producer (dead letters, and the relay in `at_least_once` mode).
    ///
    /// message.max.bytes: librdkafka's default, 1,000,000, stated on purpose. It is
    /// below Apache Kafka's default max.message.bytes (1,048,588), so a record the
    /// broker would refuse for its size is refused locally, at once and for certain,
    /// and becomes a dead letter kept in PostgreSQL (`refused_for_good`) instead of a
    /// round trip. Raise it only together with the broker's and the topics' limits.
    pub(crate) fn producer_config(&self, brokers: &str) -> ClientConfig {
        self.producer_with_linger(brokers, "5")
    }

    fn producer_with_linger(&self, brokers: &str, linger_ms: &str) -> ClientConfig {
        self.client(
            brokers,
            &[
                ("linger.ms", linger_ms),
                ("message.max.bytes", "1000000"),
                ("statistics.interval.ms", "5000"),
            ],
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
    }

    /// The relay's producer in `exactly_once` mode: the worker's producer with the
    /// relay lease's `transactional.id`, and no linger by default: a round enqueues
    /// all its records at once and then waits for them, so lingering only delays
    /// every round (docs/performance.md).
    pub(crate) fn transactional_producer_config(
        &self,
        brokers: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut config = self.producer_with_linger(brokers, "0");
        config.set("transactional.id", transactional_id);
        config
    }

    /// A consumer that reads a topic on its own, outside the worker's group, and
    /// commits nothing (the relay's state, the DLQ for `dead-letters`, `tail`);
    /// `committed_only`: records of aborted transactions are skipped.
    pub fn reader_config(
        &self,
        brokers: &str,
        group_id: &str,
        committed_only: bool,
    ) -> ClientConfig {
        let isolation = if committed_only {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        self.client(
            brokers,
            &[],
            &[
                ("isolation.level", isolation),
                ("group.id", group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        )
    }

    /// The producer of the `produce` and `redrive` commands: idempotent, and a record
    /// not acknowledged within 30 s is an error the command reports.
    pub fn command_producer_config(&self, brokers: &str) -> ClientConfig {
        self.client(
            brokers,
            &[("message.timeout.ms", "30000")],
            &[("enable.idempotence", "true")],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_tune_the_clients_but_cannot_turn_off_what_delivery_rests_on() {
        let mut settings = Settings::load(None).unwrap();
        for (key, value) in [
            ("linger.ms", "50"),
            ("fetch.max.bytes", "1048576"),
            ("enable.auto.offset.store", "true"),
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("isolation.level", "read_uncommitted"),
            ("group.id", "someone-else"),
        ] {
            settings
                .kafka
                .properties
                .insert(key.into(), value.to_owned().into());
        }
        let kafka = &settings.kafka;
        let consumer = kafka.consumer_config("b:9092");
        assert_eq!(consumer.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(consumer.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        let producer = kafka.transactional_producer_config("b:9092", "relay/x");
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("transactional.id"), Some("relay/x"));
        let reader = kafka.reader_config("b:9092", "identity-reconciler-relay-state", true);
        assert_eq!(reader.get("isolation.level"), Some("read_committed"));
        assert_eq!(
            reader.get("group.id"),
            Some("identity-reconciler-relay-state")
        );
        assert_eq!(reader.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn a_drain_timeout_at_or_above_the_session_timeout_is_refused_at_start() {
        let mut settings = Settings::load(None).unwrap();
        assert_eq!(settings.worker.drain_timeout, Duration::from_secs(10));
        assert_eq!(settings.validate_drain_timeout(), Ok(()));
        settings
            .kafka
            .properties
            .insert("session.timeout.ms".into(), "10000".to_owned().into());
        let refused = settings.validate_drain_timeout().unwrap_err();
        assert!(
            refused.contains("worker.drain_timeout (10s) must be below the consumer's session.timeout.ms (10000 ms)"),
            "{refused}"
        );
        settings.worker.drain_timeout = Duration::from_millis(9_999);
        assert_eq!(settings.validate_drain_timeout(), Ok(()));
        settings
            .kafka
            .properties
            .insert("max.poll.interval.ms".into(), "5000".to_owned().into());
        assert!(settings
            .validate_drain_timeout()
            .unwrap_err()
            .contains("max.poll.interval.ms (5000 ms)"));
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut settings = Settings::load(None).unwrap();
        settings.database.url = "postgres://svc:hunter2-db@db/identity".to_owned().into();
        settings
            .kafka
            .properties
            .insert("sasl.password".into(), "hunter2-kafka".to_owned().into());
        settings.http.auth_token = Some("hunter2-http".to_owned().into());
        settings.http.admin_token = Some("hunter2-admin".to_owned().into());
        let printed = format!("{settings:?} {settings:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("sasl.password"));
    }

    #[test]
    fn durations_are_human_readable_and_unknown_values_and_keys_are_refused_at_start() {
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.worker.backoff_initial, Duration::from_millis(100));
        assert_eq!(settings.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(settings.log.format, LogFormat::Text);
        let dir = std::env::temp_dir().join(format!("ir-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A misspelt format used to mean text silently; a bare number was milliseconds.
        for (name, text, named) in [
            ("format", "[log]\nformat = \"jsn\"\n", "jsn"),
            (
                "backoff",
                "[worker]\nbackoff_initial = 100\n",
                "backoff_initial",
            ),
            // A misspelt key, or a section the code decides, used to be ignored.
            ("key", "[reconcile]\nmax_bach = 10\n", "max_bach"),
            ("nested", "[reconcile.limits]\nmax_email = 3\n", "max_email"),
            ("section", "[tuning]\napply_lanes = 1\n", "tuning"),
        ] {
            let file = dir.join(format!("{name}.toml"));
            std::fs::write(&file, text).unwrap();
            let refused = Settings::load(Some(&file)).unwrap_err().to_string();
            assert!(refused.contains(named), "{refused}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identifier_kinds_load_from_a_file_with_their_names_as_written_and_are_checked() {
        use crate::domain::identifiers::KindName;
        assert!(Settings::load(None).unwrap().identifiers.is_empty());
        let dir = std::env::temp_dir().join(format!("ir-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The example of config/default.toml, uncommented, is a valid configuration.
        let example: String = DEFAULTS
            .split("[identifiers]")
            .nth(1)
            .expect("the identifiers table")
            .lines()
            .filter_map(|line| line.strip_prefix("#   "))
            .map(|line| format!("{}\n", line.split(" #").next().unwrap_or(line)))
            .collect();
        let documented = dir.join("documented.toml");
        std::fs::write(&documented, &example).unwrap();
        let settings = Settings::load(Some(&documented)).unwrap();
        let kind = |name: &str| {
            settings
                .identifiers
                .get(&KindName::parse(name).unwrap())
                .cloned()
        };
        assert!(kind("customerId").unwrap().unique());
        assert_eq!(kind("deviceId").unwrap().max_per_identity(), Some(20));
        assert!(!kind("deviceId").unwrap().links());
        // Every key of a kind is in that example.
        let keys =
            serde_json::to_value(crate::domain::identifiers::KindSettings::default()).unwrap();
        for key in keys.as_object().unwrap().keys() {
            assert!(
                example.contains(&format!("\n{key} = ")),
                "{key} in the example"
            );
        }
        let contradiction = dir.join("contradiction.toml");
        std::fs::write(
            &contradiction,
            "[identifiers.customerId]\nunique = true\nmax_per_identity = 2\n",
        )
        .unwrap();
        let refused = Settings::load(Some(&contradiction))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("contradicts max_per_identity = 2"),
            "{refused}"
        );
        let misspelt = dir.join("misspelt.toml");
        std::fs::write(&misspelt, "[identifiers.customerId]\nuniqe = true\n").unwrap();
        let refused = Settings::load(Some(&misspelt)).unwrap_err().to_string();
        assert!(refused.contains("uniqe"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_compiled_in_defaults_load() {
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.kafka.input_topic, "order-contacts");
        assert_eq!(settings.reconcile.normalization, Normalization::Standard);
    }
}
