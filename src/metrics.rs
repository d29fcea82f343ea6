//! Prometheus metrics, served at `GET /metrics`. Names are part of the interface:
//! `docs/reference/metrics.md` is generated from this registry (type, labels and
//! help of every metric, and [`ALERTS`]).
//!
//! A leaf: it imports nothing from the crate, so every layer can count. What a metric
//! needs from a layer (the blocked fields of an input, the review queue's count) is
//! passed in as plain values.

use prometheus::{
    register_histogram_vec_with_registry, register_histogram_with_registry,
    register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry, Encoder, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) events_consumed: IntCounter,
    pub(crate) events_applied: IntCounter,
    pub(crate) events_replayed: IntCounter,
    pub(crate) events_dead_lettered: IntCounterVec,
    pub(crate) dead_letter_outcomes: IntCounterVec,
    pub(crate) event_id_conflicts: IntCounter,
    pub(crate) ledger_rows: IntGauge,
    pub(crate) ledger_pruned: IntCounter,
    pub(crate) counterparts_pruned: IntCounter,
    pub(crate) offset_commit_failures: IntCounter,
    pub(crate) merges: IntCounter,
    pub(crate) contacts_inserted: IntCounter,
    pub(crate) batch_size: Histogram,
    pub(crate) batch_duration: Histogram,
    pub(crate) consumer_lag: IntGaugeVec,
    pub(crate) outbox_backlog: IntGauge,
    pub(crate) relay_published: IntCounter,
    pub(crate) relay_latency: Histogram,
    pub(crate) retries: IntCounterVec,
    pub(crate) partitions_paused: IntGauge,
    pub(crate) revocations: IntCounterVec,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    pub(crate) db_pool_connections: IntGaugeVec,
    pub(crate) identifiers_blocked: IntCounterVec,
    pub(crate) links_refused: IntCounterVec,
    pub(crate) inputs_suppressed: IntCounter,
    pub(crate) unmerges: IntCounter,
    pub(crate) quarantine_splits: IntCounter,
    pub(crate) erasures: IntCounter,
    pub(crate) review_queue_size: IntGaugeVec,
    pub(crate) consumer_lag_seconds: prometheus::GaugeVec,
    pub(crate) consumer_records_lead: IntGaugeVec,
    pub(crate) review_queue_oldest_age: prometheus::Gauge,
    /// Every metric above, as the reference describes it.
    described: Vec<Described>,
}

/// One registered metric: its full name, type, label names and help.
pub(crate) struct Described {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) labels: Vec<String>,
    pub(crate) help: String,
}

/// What to alert on, by metric name (without the prefix): the reference's advice to
/// operators. Every name must be a registered metric (the reference's generation
/// checks it). Thresholds depend on the deployment, so they are described, not set.
pub(crate) const ALERTS: [(&str, &str); 17] = [
    ("events_dead_lettered_total", "A rising rate: producers send events the service refuses; the `reason` label and the dead-letter topic say which and why."),
    ("dead_letter_outcomes_total", "Any increase of `outcome=\"stored_only\"` or `\"stored_truncated\"`: the dead-letter topic refuses letters (missing, not writable, or too small); they are kept in the `dead_letter` table."),
    ("event_id_conflicts_total", "Any increase: a producer reuses an `eventId` for different content."),
    ("ledger_rows", "Growth that never levels off: pruning does not keep up with `ledger.retention`."),
    ("offset_commit_failures_total", "A sustained rate: the broker refuses offset commits; events are redelivered after a restart or a rebalance (harmless, but slow)."),
    ("consumer_lag", "A steady rise on one partition while others stay flat: that partition is stalled."),
    ("outbox_backlog", "Growth for more than a few minutes: the relay is not publishing (broker down, missing topic, lost authorisation, fenced producer)."),
    ("relay_latency_seconds", "A p99 above the freshness you promise the consumers of the output topic."),
    ("retries_total", "A sustained rate: PostgreSQL or the broker keeps failing transiently."),
    ("partitions_paused", "1 for longer than a few `worker.backoff_max`: the worker is stuck behind a failing dependency."),
    ("partition_revocations_total", "Any increase of `outcome=\"abandoned\"`: batches outlast `worker.drain_timeout` and their work is redone by the partitions' new owner."),
    ("http_requests_total", "A rising share of `status=~\"5..\"` answers."),
    ("http_request_duration_seconds", "A p99 above the latency you promise the callers of `POST /identify`."),
    ("db_pool_connections", "`state=\"in_use\"` at `database.max_connections` for minutes: work queues for connections and requests fail with 503 `unavailable`."),
    ("consumer_lag_seconds", "Above the freshness you promise for several scrapes: the worker falls behind or is stalled."),
    ("consumer_records_lead", "Falling towards 0 while `consumer_lag_seconds` is high: retention is about to delete events nobody has read."),
    ("review_queue_oldest_age_seconds", "Older than the time you allow for review: nobody works the queue (`GET /reviews`)."),
];

/// The registry, remembering what it registers: a metric vector with no series yet
/// is absent from `gather`, its labels known only to its descriptor.
struct Registering {
    registry: Registry,
    described: std::cell::RefCell<Vec<Described>>,
}

impl Registering {
    /// What the `register_*_with_registry!` macros call.
    fn register(&self, metric: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        for (desc, family) in metric.desc().into_iter().zip(metric.collect()) {
            let kind = match family.get_field_type() {
                prometheus::proto::MetricType::COUNTER => "counter",
                prometheus::proto::MetricType::GAUGE => "gauge",
                prometheus::proto::MetricType::HISTOGRAM => "histogram",
                _ => "untyped",
            };
            self.described.borrow_mut().push(Described {
                name: format!("{PREFIX}{}", desc.fq_name),
                kind,
                labels: desc.variable_labels.clone(),
                help: desc.help.clone(),
            });
        }
        self.registry.register(metric)
    }
}

/// The process-wide metrics.
pub(crate) static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new().expect("metric definitions are valid"));

pub(crate) const PREFIX: &str = "identity_reconciler_";

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let r = Registering {
            registry: Registry::new_custom(Some(PREFIX.trim_end_matches('_').into()), None)?,
            described: Default::default(),
        };
        let seconds = prometheus::exponential_buckets(0.0005, 2.0, 16)?;
        // Twice as fine, over the same range: the relay's p99 is compared with a
        // couple of batch times (docs/performance.md), which the doubling buckets
        // cannot resolve.
        let fine_seconds = prometheus::exponential_buckets(0.0005, std::f64::consts::SQRT_2, 32)?;
        Ok(Metrics {
            events_consumed: register_int_counter_with_registry!(
                "events_consumed_total",
                "Events read from the input topic.",
                r
            )?,
            events_applied: register_int_counter_with_registry!(
                "events_applied_total",
                "Events reconciled into PostgreSQL (first delivery).",
                r
            )?,
            events_replayed: register_int_counter_with_registry!(
                "events_replayed_total",
                "Events skipped because the ledger already held their key.",
                r
            )?,
            events_dead_lettered: register_int_counter_vec_with_registry!(
                "events_dead_lettered_total",
                "Events sent to the dead-letter topic, by reason.",
                &["reason"],
                r
            )?,
            dead_letter_outcomes: register_int_counter_vec_with_registry!(
                "dead_letter_outcomes_total",
                "Dead letters by where they went: `published` (whole, to the DLQ topic), \
                 `stored_truncated` (whole in the dead_letter table, a truncated copy on the \
                 DLQ topic), `stored_only` (whole in the table; the DLQ took no copy).",
                &["outcome"],
                r
            )?,
            event_id_conflicts: register_int_counter_with_registry!(
                "event_id_conflicts_total",
                "Events whose eventId was already applied with other content (dead-lettered).",
                r
            )?,
            ledger_rows: register_int_gauge_with_registry!(
                "ledger_rows",
                "Rows of the ledger of processed events (the planner's estimate).",
                r
            )?,
            ledger_pruned: register_int_counter_with_registry!(
                "ledger_pruned_total",
                "Ledger rows deleted because they were older than ledger.retention.",
                r
            )?,
            counterparts_pruned: register_int_counter_with_registry!(
                "counterparts_pruned_total",
                "Quarantine counterpart pairs deleted because they were last seen before reconcile.quarantine.window.",
                r
            )?,
            offset_commit_failures: register_int_counter_with_registry!(
                "offset_commit_failures_total",
                "Offset commits the broker refused or that did not complete.",
                r
            )?,
            merges: register_int_counter_with_registry!(
                "merges_total",
                "Identities absorbed into an older one.",
                r
            )?,
            contacts_inserted: register_int_counter_with_registry!(
                "contacts_inserted_total",
                "Contacts inserted (primaries and secondaries).",
                r
            )?,
            batch_size: register_histogram_with_registry!(
                "reconcile_batch_size",
                "Inputs reconciled per transaction.",
                prometheus::exponential_buckets(1.0, 2.0, 11)?,
                r
            )?,
            batch_duration: register_histogram_with_registry!(
                "reconcile_batch_duration_seconds",
                "Time to reconcile one batch, retries included.",
                seconds.clone(),
                r
            )?,
            consumer_lag: register_int_gauge_vec_with_registry!(
                "consumer_lag",
                "Messages between the consumer's position and the partition's end.",
                &["topic", "partition"],
                r
            )?,
            outbox_backlog: register_int_gauge_with_registry!(
                "outbox_backlog",
                "Outbox rows not yet published.",
                r
            )?,
            relay_published: register_int_counter_with_registry!(
                "relay_published_total",
                "Outbox records acknowledged by the broker.",
                r
            )?,
            relay_latency: register_histogram_with_registry!(
                "relay_latency_seconds",
                "Time from an outbox row's commit to the broker's acknowledgement.",
                fine_seconds,
                r
            )?,
            retries: register_int_counter_vec_with_registry!(
                "retries_total",
                "Transient failures that were retried, by operation.",
                &["operation"],
                r
            )?,
            partitions_paused: register_int_gauge_with_registry!(
                "partitions_paused",
                "1 while the consumer is paused by back-off.",
                r
            )?,
            revocations: register_int_counter_vec_with_registry!(
                "partition_revocations_total",
                "Rebalances that revoked partitions, by what the batch in flight did: idle (none held them), drained (finished in time), abandoned (cancelled at worker.drain_timeout).",
                &["outcome"],
                r
            )?,
            http_requests: register_int_counter_vec_with_registry!(
                "http_requests_total",
                "HTTP requests by route and status.",
                &["route", "status"],
                r
            )?,
            http_duration: register_histogram_vec_with_registry!(
                "http_request_duration_seconds",
                "HTTP request latency by route.",
                &["route"],
                seconds,
                r
            )?,
            db_pool_connections: register_int_gauge_vec_with_registry!(
                "db_pool_connections",
                "Database pool connections by state (in_use, idle).",
                &["state"],
                r
            )?,
            identifiers_blocked: register_int_counter_vec_with_registry!(
                "identifiers_blocked_total",
                "Emails and phone numbers dropped by the blocklist, by field.",
                &["field"],
                r
            )?,
            links_refused: register_int_counter_vec_with_registry!(
                "links_refused_total",
                "Merges and new secondaries refused by a per-identity cap, by reason.",
                &["reason"],
                r
            )?,
            inputs_suppressed: register_int_counter_with_registry!(
                "inputs_suppressed_total",
                "Events and requests dropped because they carry an erased identifier.",
                r
            )?,
            unmerges: register_int_counter_with_registry!("unmerges_total", "Merges undone.", r)?,
            quarantine_splits: register_int_counter_with_registry!(
                "quarantine_splits_total",
                "Identities split off because a quarantined identifier was all that linked them.",
                r
            )?,
            erasures: register_int_counter_with_registry!(
                "erasures_total",
                "Identities erased (forget).",
                r
            )?,
            consumer_lag_seconds: prometheus::register_gauge_vec_with_registry!(
                "consumer_lag_seconds",
                "Age of the oldest unconsumed message of the input topic's partition (0 once caught up for a statistics interval).",
                &["partition"],
                r
            )?,
            consumer_records_lead: register_int_gauge_vec_with_registry!(
                "consumer_records_lead",
                "Records between the partition's log start offset and the consumer's position: how many retention may delete before unread data is lost.",
                &["partition"],
                r
            )?,
            review_queue_size: register_int_gauge_vec_with_registry!(
                "review_queue_size",
                "Pending entries of the review queue, by reason.",
                &["reason"],
                r
            )?,
            review_queue_oldest_age: prometheus::register_gauge_with_registry!(
                "review_queue_oldest_age_seconds",
                "Age of the oldest pending entry of the review queue (0 when empty).",
                r
            )?,
            registry: r.registry,
            described: r.described.into_inner(),
        })
    }

    /// Every metric of a fresh registry, in the order they are registered.
    pub(crate) fn described() -> Vec<Described> {
        Metrics::new()
            .expect("metric definitions are valid")
            .described
    }

    /// Counts the identifiers the blocklist dropped from one input, by field
    /// (`email`, `phoneNumber`).
    pub(crate) fn count_blocked<'a>(&self, fields: impl IntoIterator<Item = &'a str>) {
        for field in fields {
            self.identifiers_blocked.with_label_values(&[field]).inc();
        }
    }

    /// The review queue's gauges from a fresh count: `pending` holds, for each reason
    /// with pending entries, how many and the age of the oldest in seconds. Every one
    /// of `reasons` is shown, 0 when none is pending.
    pub(crate) fn set_review_queue(&self, reasons: &[&str], pending: &[(&str, i64, f64)]) {
        for &reason in reasons {
            let count = pending
                .iter()
                .find(|(r, _, _)| *r == reason)
                .map_or(0, |&(_, count, _)| count);
            self.review_queue_size
                .with_label_values(&[reason])
                .set(count);
        }
        let oldest = pending.iter().map(|&(_, _, age)| age).fold(0.0, f64::max);
        self.review_queue_oldest_age.set(oldest);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}
