//! The load generator: a seeded, realistic mix of order-contact events.
//!
//! Every event is one of
//! - **new** (≈60%): a customer never seen before (email and phone, or only one);
//! - **returning** (≈30%): a known customer bringing one new email or phone, with one
//!   identifier the service already knows;
//! - **repeat** (≈8%): a known customer with identifiers that are all known (a new
//!   order, a new eventId; nothing for the service to insert);
//! - **merge** (≈2%): the email of one known identity with the phone of another, so
//!   the service must merge the two.
//!
//! With `hot_share > 0`, that share of the returning/repeat/merge picks goes to the
//! first `hot_identities` identities (heavy hitters: shared family phones, a reseller
//! ordering for many people), whose clusters then grow large.
//!
//! The generator keeps its own model of who is who (a union-find over identities), so
//! the benchmark can check the clusters the service built: they are the connected
//! components of "appeared in the same event", whatever order the events are applied
//! in. It also numbers the contacts the service would create if the events were
//! applied in generation order; the PostgreSQL ceiling replays exactly those writes.

use identity_reconciler::domain::identity::identity_record;
use identity_reconciler::domain::{Identity, Origin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Share of each kind of event, in this order: new, returning, repeat (merge is the rest).
const NEW_SHARE: f64 = 0.60;
const RETURNING_SHARE: f64 = 0.30;
const REPEAT_SHARE: f64 = 0.08;

/// New customers who give only an email / only a phone (the rest give both).
const EMAIL_ONLY_SHARE: f64 = 0.10;
const PHONE_ONLY_SHARE: f64 = 0.05;

/// Known identifiers re-sent in another spelling (upper-case email, formatted phone),
/// so that normalisation is on the measured path as it is in production.
const RESPELLED_SHARE: f64 = 0.10;

const FIRST_NAMES: [&str; 12] = [
    "olivia", "liam", "emma", "noah", "amelia", "oliver", "ava", "elijah", "sophia", "lucas",
    "mia", "mateo",
];
const LAST_NAMES: [&str; 10] = [
    "smith", "garcia", "mueller", "rossi", "kowalski", "nakamura", "okafor", "silva", "dubois",
    "jensen",
];
const DOMAINS: [&str; 6] = [
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "proton.me",
    "icloud.com",
    "shop-mail.de",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    New,
    Returning,
    Repeat,
    Merge,
}

/// Mix settings; the same settings give the same events.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mix {
    pub seed: u64,
    /// Share of the picks of known identities that go to the heavy hitters.
    pub hot_share: f64,
    pub hot_identities: usize,
}

/// One generated event. `email`/`phone` are as sent (maybe re-spelled).
#[derive(Clone, Debug)]
pub struct Event {
    pub event_id: String,
    pub order_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub kind: Kind,
    /// What applying the events in generation order writes (for the PostgreSQL ceiling).
    pub effect: Effect,
}

/// The contact an event creates, and the outbox records it writes, when the events are
/// applied in generation order.
#[derive(Clone, Debug)]
pub struct Effect {
    pub new_contact: Option<NewContact>,
    /// (key, payload) of the outbox records: the identity record, plus the merge record.
    pub outbox: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct NewContact {
    pub id: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub linked_id: Option<i64>,
}

/// What the generator knows about one identity (valid at union-find roots only).
#[derive(Clone, Debug, Default)]
struct Person {
    /// Normalised identifiers, in the order they appeared.
    emails: Vec<String>,
    phones: Vec<String>,
    /// Contact ids in creation order; the first is the primary.
    contacts: Vec<i64>,
    version: i64,
}

pub struct Workload {
    mix: Mix,
    rng: StdRng,
    /// Distinguishes the event ids of workloads sharing a database.
    tag: String,
    parent: Vec<usize>,
    people: Vec<Person>,
    events: u64,
    emails: u64,
    phones: u64,
    contacts: i64,
    /// Build the outbox payloads of `Effect` (only the PostgreSQL ceiling needs them).
    with_payloads: bool,
}

impl Workload {
    pub fn new(mix: &Mix, tag: &str) -> Workload {
        Workload {
            mix: mix.clone(),
            rng: StdRng::seed_from_u64(mix.seed),
            tag: tag.to_owned(),
            parent: Vec::new(),
            people: Vec::new(),
            events: 0,
            emails: 0,
            phones: 0,
            contacts: 0,
            with_payloads: false,
        }
    }

    /// Also builds the outbox payloads of each event's `Effect`.
    pub fn with_payloads(mut self) -> Workload {
        self.with_payloads = true;
        self
    }

    pub fn take(&mut self, n: usize) -> Vec<Event> {
        (0..n).map(|_| self.next_event()).collect()
    }

    pub fn next_event(&mut self) -> Event {
        self.events += 1;
        let event_id = format!("{}-{:09}", self.tag, self.events);
        let order_id = format!("ord-{}-{}", self.tag, self.events);
        let roll: f64 = self.rng.gen();
        // Until there are two identities, every event is a new customer.
        let kind = if self.people.len() < 2 || roll < NEW_SHARE {
            Kind::New
        } else if roll < NEW_SHARE + RETURNING_SHARE {
            Kind::Returning
        } else if roll < NEW_SHARE + RETURNING_SHARE + REPEAT_SHARE {
            Kind::Repeat
        } else {
            Kind::Merge
        };
        let (kind, email, phone, root, absorbed) = match kind {
            Kind::New => {
                let (email, phone) = self.new_customer();
                (Kind::New, email, phone, None, None)
            }
            Kind::Returning => {
                let (root, email, phone) = self.returning();
                (Kind::Returning, email, phone, Some(root), None)
            }
            Kind::Repeat => {
                let (root, email, phone) = self.repeat();
                (Kind::Repeat, email, phone, Some(root), None)
            }
            Kind::Merge => match self.merge() {
                Some((root, absorbed, email, phone)) => {
                    (Kind::Merge, email, phone, Some(root), Some(absorbed))
                }
                None => {
                    let (root, email, phone) = self.repeat();
                    (Kind::Repeat, email, phone, Some(root), None)
                }
            },
        };
        let effect = self.apply(
            &event_id,
            &order_id,
            email.clone(),
            phone.clone(),
            root,
            absorbed,
        );
        Event {
            event_id,
            order_id,
            email: email.map(|e| self.maybe_respell_email(e, kind)),
            phone: phone.map(|p| self.maybe_respell_phone(p, kind)),
            kind,
            effect,
        }
    }

    /// The clusters every event so far must have produced: one set of identifiers per
    /// identity.
    pub fn clusters(&self) -> BTreeSet<BTreeSet<String>> {
        (0..self.people.len())
            .filter(|&i| self.parent[i] == i)
            .map(|i| {
                let person = &self.people[i];
                person
                    .emails
                    .iter()
                    .chain(&person.phones)
                    .cloned()
                    .collect()
            })
            .collect()
    }

    fn new_customer(&mut self) -> (Option<String>, Option<String>) {
        let roll: f64 = self.rng.gen();
        if roll < EMAIL_ONLY_SHARE {
            (Some(self.fresh_email()), None)
        } else if roll < EMAIL_ONLY_SHARE + PHONE_ONLY_SHARE {
            (None, Some(self.fresh_phone()))
        } else {
            (Some(self.fresh_email()), Some(self.fresh_phone()))
        }
    }

    /// One known identifier and one new one. The new one is of a random kind when the
    /// person has both; an email-only person brings a new phone (the known email fills
    /// the email slot) and a phone-only person a new email.
    fn returning(&mut self) -> (usize, Option<String>, Option<String>) {
        let root = self.pick_known();
        let person = &self.people[root];
        let new_email = match (person.emails.is_empty(), person.phones.is_empty()) {
            (false, false) => self.rng.gen_bool(0.5),
            (true, _) => true,
            (false, true) => false,
        };
        if new_email {
            let phone = self.known(root, false);
            (root, Some(self.fresh_email()), phone)
        } else {
            let email = self.known(root, true);
            (root, email, Some(self.fresh_phone()))
        }
    }

    /// Only identifiers the person already has.
    fn repeat(&mut self) -> (usize, Option<String>, Option<String>) {
        let root = self.pick_known();
        let email = self.known(root, true);
        let phone = self.known(root, false);
        (root, email, phone)
    }

    /// The email of one identity and the phone of another; `None` if a few tries find
    /// no such pair (early on, or when most people gave only one kind).
    fn merge(&mut self) -> Option<(usize, usize, Option<String>, Option<String>)> {
        for _ in 0..10 {
            let a = self.pick_known();
            let b = self.pick_known();
            if a == b {
                continue;
            }
            let (with_email, with_phone) =
                if !self.people[a].emails.is_empty() && !self.people[b].phones.is_empty() {
                    (a, b)
                } else if !self.people[b].emails.is_empty() && !self.people[a].phones.is_empty() {
                    (b, a)
                } else {
                    continue;
                };
            let email = self.known(with_email, true);
            let phone = self.known(with_phone, false);
            // The survivor is the identity with the oldest contact.
            let (keep, absorbed) = if self.people[a].contacts[0] < self.people[b].contacts[0] {
                (a, b)
            } else {
                (b, a)
            };
            return Some((keep, absorbed, email, phone));
        }
        None
    }

    /// Records the event in the model and returns what it writes.
    fn apply(
        &mut self,
        event_id: &str,
        order_id: &str,
        email: Option<String>,
        phone: Option<String>,
        root: Option<usize>,
        absorbed: Option<usize>,
    ) -> Effect {
        let root = root.unwrap_or_else(|| {
            self.parent.push(self.people.len());
            self.people.push(Person::default());
            self.people.len() - 1
        });
        let mut absorbed_primary = None;
        if let Some(absorbed) = absorbed {
            let gone = std::mem::take(&mut self.people[absorbed]);
            absorbed_primary = Some((gone.contacts[0], gone.version + 1));
            self.parent[absorbed] = root;
            let person = &mut self.people[root];
            person.emails.extend(gone.emails);
            person.phones.extend(gone.phones);
            person.contacts.extend(gone.contacts);
            person.contacts.sort_unstable();
        }
        let person = &mut self.people[root];
        let new_email = email.as_ref().filter(|e| !person.emails.contains(e));
        let new_phone = phone.as_ref().filter(|p| !person.phones.contains(p));
        let new_contact = (new_email.is_some() || new_phone.is_some()).then(|| {
            self.contacts += 1;
            NewContact {
                id: self.contacts,
                email: email.clone(),
                phone: phone.clone(),
                linked_id: person.contacts.first().copied(),
            }
        });
        if let Some(e) = new_email {
            person.emails.push(e.clone());
        }
        if let Some(p) = new_phone {
            person.phones.push(p.clone());
        }
        if let Some(contact) = &new_contact {
            person.contacts.push(contact.id);
        }
        person.version += 1;
        let outbox = if self.with_payloads {
            self.outbox_records(root, event_id, order_id, absorbed_primary)
        } else {
            Vec::new()
        };
        Effect {
            new_contact,
            outbox,
        }
    }

    /// The identity record (and merge record) the service publishes for this event.
    fn outbox_records(
        &self,
        root: usize,
        event_id: &str,
        order_id: &str,
        absorbed: Option<(i64, i64)>,
    ) -> Vec<(String, String)> {
        let person = &self.people[root];
        let identity = Identity {
            primary_id: person.contacts[0],
            emails: person.emails.clone(),
            phone_numbers: person.phones.clone(),
            secondary_ids: person.contacts[1..].to_vec(),
        };
        let origin = Origin::Event {
            event_id: Some(event_id.to_owned()),
            order_id: Some(order_id.to_owned()),
            ledger_key: event_id.to_owned(),
        };
        let mut records = vec![(
            identity.primary_id.to_string(),
            identity_record(&identity, person.version, true, &origin).to_string(),
        )];
        if let Some((id, version)) = absorbed {
            let record = identity_reconciler::domain::identity::merge_record(
                id,
                identity.primary_id,
                version,
                &origin,
            );
            records.push((id.to_string(), record.to_string()));
        }
        records
    }

    /// A known identity: a heavy hitter with probability `hot_share`, else any.
    fn pick_known(&mut self) -> usize {
        let count = self.people.len();
        let hot = self.mix.hot_identities.min(count);
        let index = if hot > 0 && self.rng.gen_bool(self.mix.hot_share.clamp(0.0, 1.0)) {
            self.rng.gen_range(0..hot)
        } else {
            self.rng.gen_range(0..count)
        };
        self.find(index)
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            // Path halving keeps the trees flat.
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// A random known email (`email`) or phone of the person at `root`, if any.
    fn known(&mut self, root: usize, email: bool) -> Option<String> {
        let person = &self.people[root];
        let values = if email {
            &person.emails
        } else {
            &person.phones
        };
        if values.is_empty() {
            return None;
        }
        Some(values[self.rng.gen_range(0..values.len())].clone())
    }

    fn fresh_email(&mut self) -> String {
        self.emails += 1;
        let first = FIRST_NAMES[self.rng.gen_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[self.rng.gen_range(0..LAST_NAMES.len())];
        let domain = DOMAINS[self.rng.gen_range(0..DOMAINS.len())];
        // The counter makes it unique; the names make it realistically long.
        format!("{first}.{last}.{}{}@{domain}", self.tag, self.emails)
    }

    /// UK-style mobile numbers, normalised (no spaces); unique per workload tag.
    fn fresh_phone(&mut self) -> String {
        self.phones += 1;
        // Scatter the numbers so that index inserts are not all at the right edge.
        let scattered = (self.phones * 7_919) % 100_000_000;
        format!("+447{}{scattered:08}", self.tag_digit())
    }

    fn tag_digit(&self) -> u8 {
        self.tag.bytes().fold(0u8, |a, b| a.wrapping_add(b)) % 10
    }

    fn maybe_respell_email(&mut self, email: String, kind: Kind) -> String {
        if kind != Kind::New && self.rng.gen_bool(RESPELLED_SHARE) {
            email.to_uppercase()
        } else {
            email
        }
    }

    /// "+447123456789" → "+44 7123 456-789", which the service normalises back.
    fn maybe_respell_phone(&mut self, phone: String, kind: Kind) -> String {
        if kind != Kind::New && self.rng.gen_bool(RESPELLED_SHARE) {
            format!(
                "{} {} {}-{}",
                &phone[..3],
                &phone[3..7],
                &phone[7..10],
                &phone[10..]
            )
        } else {
            phone
        }
    }
}

impl Event {
    /// The event as the checkout system publishes it (docs/contract.md §6).
    pub fn to_json(&self, occurred_at: chrono::DateTime<chrono::Utc>) -> Value {
        json!({
            "eventId": self.event_id,
            "orderId": self.order_id,
            "email": self.email,
            "phoneNumber": self.phone,
            "occurredAt": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// The body of `POST /identify` for the same customer.
    pub fn identify_body(&self) -> Value {
        json!({ "email": self.email, "phoneNumber": self.phone })
    }
}
