//! PostgreSQL ceilings, each on a fresh database, measured in the same run as what
//! they bound.
//!
//! - *Batched writes*: the rows the worker writes for the same events (ledger keys,
//!   the contacts the mix creates, the outbox records), 500 events per transaction,
//!   each table in one `unnest` INSERT, by the simplest possible client: no locks, no
//!   reads, no reconciliation. The worker cannot beat it (it does all that and more).
//! - *One statement per event*: the same rows, one autocommit statement per event: the
//!   price of a commit (a WAL flush) per event, for reference.
//! - *One reconciliation per transaction*: the library's `Store::reconcile` with one
//!   request per call from N tasks: exactly the SQL of `POST /identify` without HTTP.
//!
//! Not a ceiling but a breakdown of the worker's figure: *the store alone*, the
//! library's `Store::reconcile` over the same events, parsed as the worker parses
//! them, 500 per call, with no broker, no relay and no other process on the machine.

use crate::checks::{self, Check};
use crate::cpu::{CpuMeter, CpuUse};
use crate::load::{closed_loop, Call, LoadReport};
use crate::services::{Database, Servers};
use crate::workload::{Effect, Event, Mix, Workload};
use futures::FutureExt;
use identity_reconciler::config::Settings;
use identity_reconciler::domain::Request;
use identity_reconciler::domain::{ContactInput, Origin};
use identity_reconciler::store::Store;
use identity_reconciler::worker::event::{parse_event, Source};
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events per transaction, as the worker's default `reconcile.max_batch`.
const BATCH: usize = 500;

/// The columns of one batch, built before the clock starts.
#[derive(Default)]
pub struct Batch {
    keys: Vec<String>,
    ids: Vec<i64>,
    emails: Vec<Option<String>>,
    phones: Vec<Option<String>>,
    links: Vec<Option<i64>>,
    outbox_keys: Vec<String>,
    payloads: Vec<String>,
}

impl Batch {
    fn of(events: &[Event]) -> Batch {
        let mut batch = Batch::default();
        for event in events {
            batch.push(&event.event_id, &event.effect);
        }
        batch
    }

    /// Adds one event: its ledger key, the contact it creates, its outbox records.
    pub fn push(&mut self, key: &str, effect: &Effect) {
        self.keys.push(key.to_owned());
        if let Some(contact) = &effect.new_contact {
            self.ids.push(contact.id);
            self.emails.push(contact.email.clone());
            self.phones.push(contact.phone.clone());
            self.links.push(contact.linked_id);
        }
        for (key, payload) in &effect.outbox {
            self.outbox_keys.push(key.clone());
            self.payloads.push(payload.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// (key, payload) of the batch's output records, in order.
    pub fn records(&self) -> impl Iterator<Item = (&str, &str)> {
        self.outbox_keys
            .iter()
            .zip(&self.payloads)
            .map(|(k, p)| (k.as_str(), p.as_str()))
    }

    /// Writes the batch in one transaction, each table in one `unnest` INSERT: the
    /// batched-writes ceiling's statements (the simplest chain uses them too).
    pub async fn write(&self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO processed_event (key) SELECT unnest($1::text[])")
            .bind(&self.keys)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version) \
             SELECT id, email, phone, link, CASE WHEN link IS NULL THEN 'primary' ELSE 'secondary' END, \
                    clock_timestamp(), clock_timestamp(), 1 \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, email, phone, link)",
        )
        .bind(&self.ids)
        .bind(&self.emails)
        .bind(&self.phones)
        .bind(&self.links)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO outbox (key, payload) SELECT * FROM unnest($1::text[], $2::text[])",
        )
        .bind(&self.outbox_keys)
        .bind(&self.payloads)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The worker's rows for N events, in batches of 500, ready to be written to a fresh
/// database by the simplest client.
pub struct BatchedWrites {
    db: Database,
    batches: Vec<Batch>,
}

impl BatchedWrites {
    /// Creates the database and builds the batches (not timed).
    pub async fn prepare(servers: &Servers, mix: &Mix, n: usize) -> anyhow::Result<Self> {
        let db = Database::create(servers, "pg_batch").await?;
        let events = Workload::new(mix, "w").with_payloads().take(n);
        let batches = events.chunks(BATCH).map(Batch::of).collect();
        Ok(BatchedWrites { db, batches })
    }

    /// Writes every batch, one transaction each; returns how long that took.
    pub async fn run(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for batch in &self.batches {
            batch.write(&self.db.pool).await?;
        }
        Ok(started.elapsed())
    }

    pub async fn finish(self, servers: &Servers) -> anyhow::Result<()> {
        self.db.drop_database(servers).await
    }
}

/// What the batched writes measure.
pub struct Batched {
    pub events_per_s: f64,
    pub cpu: CpuUse,
    /// WAL written from the first batch to the last commit.
    pub wal_bytes: i64,
}

/// Events per second writing the worker's rows in batches of 500, and the machine's
/// CPU and the server's WAL meanwhile.
pub async fn batched_writes(servers: &Servers, mix: &Mix, n: usize) -> anyhow::Result<Batched> {
    let writes = BatchedWrites::prepare(servers, mix, n).await?;
    let wal = writes.db.wal_position().await?;
    let cpu = CpuMeter::start();
    let took = writes.run().await?;
    let cpu = cpu.stop();
    let wal_bytes = writes.db.wal_bytes_since(&wal).await?;
    writes.finish(servers).await?;
    Ok(Batched {
        events_per_s: n as f64 / took.as_secs_f64(),
        cpu,
        wal_bytes,
    })
}

/// Events per second of `Store::reconcile` alone, batches of 500 events parsed as the
/// worker parses them, one call after the other, on a fresh database; and the
/// machine's CPU meanwhile.
pub async fn store_alone(servers: &Servers, mix: &Mix, n: usize) -> anyhow::Result<(f64, CpuUse)> {
    let db = Database::create(servers, "store_alone").await?;
    let mut settings = Settings::load(None)?;
    settings.database.url = db.url.clone().into();
    // The service's own connection settings.
    let pool = identity_reconciler::store::connect(&settings.database).await?;
    let settings = settings.reconcile;
    let source = Source {
        topic: "bench".into(),
        partition: 0,
        offset: 0,
    };
    let now = chrono::Utc::now();
    let requests: Vec<Request> = Workload::new(mix, "w")
        .take(n)
        .iter()
        .map(|event| {
            let value = event.to_json(now).to_string();
            parse_event(Some(value.as_bytes()), &source, settings.input_rules())
        })
        .collect::<Result<_, _>>()?;
    let store = Store::new(pool.clone(), settings);
    let cpu = CpuMeter::start();
    let started = Instant::now();
    for batch in requests.chunks(BATCH) {
        store.reconcile(batch).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    pool.close().await;
    db.drop_database(servers).await?;
    Ok((rate, cpu))
}

/// Events per second writing the same rows with one autocommit statement per event,
/// for at most `seconds`.
pub async fn one_statement_per_event(
    servers: &Servers,
    mix: &Mix,
    n: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let db = Database::create(servers, "pg_single").await?;
    let mut workload = Workload::new(mix, "w").with_payloads();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut done = 0;
    let mut elapsed = Duration::ZERO;
    while done < n && Instant::now() < until {
        // Generate outside the clock; the statement alone is timed.
        let event = workload.next_event();
        let contact = event.effect.new_contact.as_ref();
        let (keys, payloads): (Vec<&str>, Vec<&str>) = event
            .effect
            .outbox
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_str()))
            .unzip();
        let started = Instant::now();
        sqlx::query(
            "WITH ledger AS (INSERT INTO processed_event (key) VALUES ($1)), \
             added AS (INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version) \
                       SELECT $2, $3, $4, $5, CASE WHEN $5::bigint IS NULL THEN 'primary' ELSE 'secondary' END, \
                              clock_timestamp(), clock_timestamp(), 1 \
                       WHERE $2::bigint IS NOT NULL) \
             INSERT INTO outbox (key, payload) SELECT * FROM unnest($6::text[], $7::text[])",
        )
        .bind(&event.event_id)
        .bind(contact.map(|c| c.id))
        .bind(contact.and_then(|c| c.email.as_deref()))
        .bind(contact.and_then(|c| c.phone.as_deref()))
        .bind(contact.and_then(|c| c.linked_id))
        .bind(&keys)
        .bind(&payloads)
        .execute(&db.pool)
        .await?;
        elapsed += started.elapsed();
        done += 1;
    }
    db.drop_database(servers).await?;
    Ok(done as f64 / elapsed.as_secs_f64())
}

/// `Store::reconcile`, one HTTP-origin request per transaction, from `concurrency`
/// tasks with a pool of as many connections, on a fresh database.
pub async fn reconcile_per_transaction(
    servers: &Servers,
    mix: &Mix,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<(LoadReport, Check)> {
    let db = Database::create(servers, &format!("reconcile_{concurrency}")).await?;
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(&db.url)
        .await?;
    let store = Store::new(pool.clone(), Settings::load(None)?.reconcile);
    let call: Call = Arc::new(move |event: Event| {
        let store = store.clone();
        async move {
            let Ok(input) = input_of(&event) else {
                return false;
            };
            let request = Request {
                input,
                origin: Origin::Http { request_id: None },
            };
            store
                .reconcile(std::slice::from_ref(&request))
                .await
                .is_ok()
        }
        .boxed()
    });
    let report = closed_loop(mix, concurrency, seconds, call).await;
    pool.close().await;
    let check = checks::invariants(&db).await;
    db.drop_database(servers).await?;
    Ok((report, check))
}

/// Parses the event as the HTTP handler parses a body (normalisation included).
fn input_of(event: &Event) -> anyhow::Result<ContactInput> {
    let body = event.identify_body();
    let object = body.as_object().expect("an object");
    static SETTINGS: std::sync::LazyLock<identity_reconciler::config::ReconcileSettings> =
        std::sync::LazyLock::new(|| {
            identity_reconciler::config::Settings::load(None)
                .expect("the default settings load")
                .reconcile
        });
    Ok(ContactInput::from_json_object(
        object,
        SETTINGS.input_rules(),
    )?)
}
