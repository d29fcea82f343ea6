//! The reconciliation rules of §3, as a pure function from a snapshot to a plan.
//!
//! The store loads every contact of every cluster a batch of inputs can touch (one
//! query), [`plan`] replays the inputs against that snapshot in order, and the store
//! applies the result with a few set-based statements. Work is proportional to the
//! size of the touched clusters, never to the size of the table.
//!
//! Ages: the primary of a cluster is its oldest contact, by `(created_at, id)`.
//! Contacts a plan inserts are younger than every stored contact (the store stamps
//! them after it has locked the clusters, never earlier than the snapshot's newest
//! contact) and are ordered among themselves by their position in the plan.

use super::identity::{identity_record, merge_record, Identity, Origin};
use super::input::{ContactInput, Email, Phone};
use super::quality::{Cap, Limits, Size};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// A live contact as stored.
#[derive(Clone, Debug)]
pub(crate) struct StoredContact {
    pub(crate) id: i64,
    pub(crate) email: Option<Email>,
    pub(crate) phone: Option<Phone>,
    pub(crate) linked_id: Option<i64>,
    pub(crate) created_at: DateTime<Utc>,
    /// Records published so far under this contact's id while it was a primary.
    pub(crate) version: i64,
}

/// A contact in a plan: already stored, or the n-th contact the plan inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ContactRef {
    Stored(i64),
    New(usize),
}

/// A contact to insert; its position in [`Plan::inserts`] is its `ContactRef::New`.
#[derive(Clone, Debug)]
pub(crate) struct NewContact {
    pub(crate) email: Option<Email>,
    pub(crate) phone: Option<Phone>,
    /// `None` for a primary.
    pub(crate) linked_id: Option<ContactRef>,
    pub(crate) version: i64,
    /// The input (its index in the plan's inputs) that created it.
    pub(crate) input: usize,
}

/// A stored contact whose link or version changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredUpdate {
    pub(crate) id: i64,
    pub(crate) linked_id: Option<ContactRef>,
    pub(crate) version: i64,
}

/// A primary absorbed by a merge, with the version of its `mergedInto` record and
/// what the merge journal needs to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Absorbed {
    pub(crate) primary: ContactRef,
    pub(crate) version: i64,
    /// The absorbed primary's secondaries, re-pointed to the survivor.
    pub(crate) moved: Vec<ContactRef>,
    /// The newest contact (highest id) of the merged identity at the time of the
    /// merge: contacts with higher ids joined it later.
    pub(crate) watermark: ContactRef,
    /// The contacts holding the merging input's email and its phone: the evidence
    /// that bridged the two sides (an explain shows their values).
    pub(crate) via: Vec<ContactRef>,
}

/// A link that a per-identity cap or a keep-apart decision refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: Refused,
    /// The primary whose merge was refused; `None` when a new secondary was refused.
    pub(crate) other: Option<ContactRef>,
}

/// Why a link was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The merge or the growth would take the identity past a cap.
    Cap(Cap),
    /// An operator's decision keeps the two clusters apart. `queue` is false when a
    /// review already rejected the merge for good: the refusal is not queued again.
    KeepApart { queue: bool },
}

impl Refused {
    /// The code in the review queue and in metrics.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refused::Cap(cap) => cap.code(),
            Refused::KeepApart { .. } => "keep_apart",
        }
    }

    /// Whether the refusal goes to the review queue.
    pub(crate) fn queued(self) -> bool {
        !matches!(self, Refused::KeepApart { queue: false })
    }
}

/// Two stored contacts that must never be in one cluster (an undone merge or a
/// rejected review): whatever their clusters became since, a merge of the cluster
/// holding `a` with the cluster holding `b` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeepApart {
    pub(crate) a: i64,
    pub(crate) b: i64,
    /// Rejected for good by a review: refusals are not queued again.
    pub(crate) is_final: bool,
}

/// The operators' decisions a plan must respect, beyond the caps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decisions {
    /// Keep-apart decisions between contacts of the snapshot (others cannot matter).
    pub(crate) keep_apart: Vec<KeepApart>,
    /// Inputs (by index) whose every identifier is quarantined: they are answered as
    /// the oldest identity holding it and link nothing (no merge, no new secondary).
    pub(crate) answer_only: HashSet<usize>,
}

/// What one input did, and the identity right after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) identity: Identity<ContactRef>,
    pub(crate) version: i64,
    pub(crate) changed: bool,
    pub(crate) absorbed: Vec<Absorbed>,
    pub(crate) refused: Vec<Refusal>,
    /// An input whose email and phone were both known to one identity but held by
    /// different contacts links those contacts without changing anything: the merge
    /// journal keeps the pair, so that undoing an earlier merge can tell whether the
    /// two sides were tied together since.
    pub(crate) bridge: Option<(ContactRef, ContactRef)>,
}

/// One input to reconcile and where it came from.
#[derive(Clone, Debug)]
pub struct Request {
    pub input: ContactInput,
    pub origin: Origin,
}

/// Everything the store must write for a batch, and what to answer for each input.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    pub(crate) inserts: Vec<NewContact>,
    pub(crate) updates: Vec<StoredUpdate>,
    pub(crate) outcomes: Vec<Outcome>,
    /// The records to publish, in outbox order.
    pub(crate) records: Vec<Publish>,
}

/// A record the plan publishes (the outbox's payload is rendered by
/// [`Publish::render`] once the new contacts have ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// The identity after input `input`, under its primary's id.
    Identity { input: usize },
    /// The `absorbed`-th primary that input `input` merged into its identity, under
    /// the absorbed primary's id.
    Merge { input: usize, absorbed: usize },
}

impl Publish {
    /// The record's key (a primary's id) and payload. `identities[i]` is the identity
    /// after input `i` with stored ids, `resolve` gives the id of a contact of the
    /// plan, `origin` is where the input came from.
    pub(crate) fn render(
        self,
        plan: &Plan,
        identities: &[Identity],
        resolve: impl Fn(ContactRef) -> i64,
        origin: &Origin,
    ) -> (i64, serde_json::Value) {
        match self {
            Publish::Identity { input } => {
                let (identity, outcome) = (&identities[input], &plan.outcomes[input]);
                let record = identity_record(identity, outcome.version, outcome.changed, origin);
                (identity.primary_id, record)
            }
            Publish::Merge { input, absorbed } => {
                let absorbed = &plan.outcomes[input].absorbed[absorbed];
                let id = resolve(absorbed.primary);
                let into = identities[input].primary_id;
                (id, merge_record(id, into, absorbed.version, origin))
            }
        }
    }
}

/// What a batch publishes: a record for every input that changed an identity (and
/// one per primary it absorbed); in a batch of events, for every input, since every
/// event gets a record (§6).
fn records(outcomes: &[Outcome], from_events: bool) -> Vec<Publish> {
    let mut records = Vec::new();
    for (input, outcome) in outcomes.iter().enumerate() {
        if outcome.changed || from_events {
            records.push(Publish::Identity { input });
            records.extend(
                (0..outcome.absorbed.len()).map(|absorbed| Publish::Merge { input, absorbed }),
            );
        }
    }
    records
}

/// The snapshot broke an invariant of §2 (a secondary linked to a missing contact or
/// to another secondary). Applying a plan on top of it would spread the damage.
#[derive(Debug, thiserror::Error)]
#[error("stored contact {contact} is linked to {linked}, which is not a primary in the snapshot")]
pub(crate) struct InconsistentSnapshot {
    pub(crate) contact: i64,
    pub(crate) linked: i64,
}

/// Creation order; stored contacts are older than new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Age {
    Stored(DateTime<Utc>, i64),
    New(usize),
}

struct Node {
    reference: ContactRef,
    age: Age,
    email: Option<Email>,
    phone: Option<Phone>,
    /// Index of this node's primary; itself for a primary.
    primary: usize,
    version: i64,
    stored_primary: Option<usize>,
    stored_version: i64,
    /// The input that created a new contact.
    input: usize,
}

impl Node {
    fn primary_is_self(&self, planner: &Planner) -> bool {
        planner.nodes[self.primary].reference == self.reference
    }
}

#[derive(Default)]
struct Planner {
    nodes: Vec<Node>,
    by_email: HashMap<Email, Vec<usize>>,
    by_phone: HashMap<Phone, Vec<usize>>,
    /// Secondaries of each primary.
    members: HashMap<usize, Vec<usize>>,
    inserted: usize,
    limits: Limits,
    keep_apart: Vec<KeepApart>,
    /// Node of each stored contact id.
    stored: HashMap<i64, usize>,
    /// Index of the input being applied.
    current: usize,
}

/// Applies the inputs of `requests` in order to the clusters in `snapshot`.
///
/// `snapshot` must hold every live contact of every cluster that any input's email or
/// phone matches, whole clusters included. Each input that changes an identity bumps
/// its version and publishes a record ([`Plan::records`]); in a batch of events every
/// input does, as every event gets a record. A merge or a new secondary that would
/// take an identity past `limits`, or that `decisions` keep apart, is left out and
/// reported in [`Outcome::refused`].
pub(crate) fn plan(
    snapshot: Vec<StoredContact>,
    requests: &[Request],
    limits: Limits,
    decisions: &Decisions,
) -> Result<Plan, InconsistentSnapshot> {
    let mut planner = Planner::load(snapshot)?;
    planner.limits = limits;
    planner.keep_apart = decisions.keep_apart.clone();
    let record_unchanged = requests
        .iter()
        .any(|r| matches!(r.origin, Origin::Event { .. }));
    let outcomes: Vec<Outcome> = requests
        .iter()
        .map(|r| &r.input)
        .enumerate()
        .map(|(i, input)| {
            planner.current = i;
            if decisions.answer_only.contains(&i) {
                planner.answer_only(input, record_unchanged)
            } else {
                planner.apply(input, record_unchanged)
            }
        })
        .collect();
    let records = records(&outcomes, record_unchanged);
    Ok(Plan {
        records,
        ..planner.finish(outcomes)
    })
}

/// The identity whose primary is `primary`, from a snapshot holding its whole cluster.
pub(crate) fn identity_of(
    snapshot: Vec<StoredContact>,
    primary: i64,
) -> Result<Identity, InconsistentSnapshot> {
    let planner = Planner::load(snapshot)?;
    let index = planner
        .nodes
        .iter()
        .position(|n| n.reference == ContactRef::Stored(primary) && n.primary_is_self(&planner))
        .ok_or(InconsistentSnapshot {
            contact: primary,
            linked: primary,
        })?;
    Ok(planner.identity(index).map_ids(|r| match r {
        ContactRef::Stored(id) => id,
        ContactRef::New(_) => unreachable!("a loaded snapshot holds stored contacts only"),
    }))
}

impl Planner {
    fn load(snapshot: Vec<StoredContact>) -> Result<Planner, InconsistentSnapshot> {
        let index: HashMap<i64, usize> = snapshot
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut planner = Planner::default();
        for (i, contact) in snapshot.iter().enumerate() {
            let primary = match contact.linked_id {
                None => i,
                Some(linked) => match index.get(&linked) {
                    Some(&p) if snapshot[p].linked_id.is_none() => p,
                    _ => {
                        return Err(InconsistentSnapshot {
                            contact: contact.id,
                            linked,
                        })
                    }
                },
            };
            if primary != i {
                planner.members.entry(primary).or_default().push(i);
            }
        }
        for contact in snapshot {
            let primary = match contact.linked_id {
                None => planner.nodes.len(),
                Some(linked) => index[&linked],
            };
            planner.stored.insert(contact.id, planner.nodes.len());
            planner.push(Node {
                reference: ContactRef::Stored(contact.id),
                age: Age::Stored(contact.created_at, contact.id),
                email: contact.email,
                phone: contact.phone,
                primary,
                version: contact.version,
                stored_primary: Some(primary),
                stored_version: contact.version,
                input: 0,
            });
        }
        Ok(planner)
    }

    fn push(&mut self, node: Node) -> usize {
        let i = self.nodes.len();
        if let Some(email) = &node.email {
            self.by_email.entry(email.clone()).or_default().push(i);
        }
        if let Some(phone) = &node.phone {
            self.by_phone.entry(phone.clone()).or_default().push(i);
        }
        self.nodes.push(node);
        i
    }

    fn insert(&mut self, input: &ContactInput, primary: Option<usize>) -> usize {
        let i = self.nodes.len();
        let n = self.inserted;
        self.inserted += 1;
        if let Some(p) = primary {
            self.members.entry(p).or_default().push(i);
        }
        self.push(Node {
            reference: ContactRef::New(n),
            age: Age::New(n),
            email: input.email().cloned(),
            phone: input.phone().cloned(),
            primary: primary.unwrap_or(i),
            version: 0,
            stored_primary: None,
            stored_version: 0,
            input: self.current,
        })
    }

    fn apply(&mut self, input: &ContactInput, record_unchanged: bool) -> Outcome {
        let email_matches = input.email().and_then(|e| self.by_email.get(e));
        let phone_matches = input.phone().and_then(|p| self.by_phone.get(p));
        let mut primaries: Vec<usize> = email_matches
            .into_iter()
            .chain(phone_matches)
            .flatten()
            .map(|&n| self.nodes[n].primary)
            .collect();
        primaries.sort_by_key(|&p| self.nodes[p].age);
        primaries.dedup();

        let bridge = match primaries[..] {
            [_] => self.bridge(input),
            _ => None,
        };
        let mut absorbed = Vec::new();
        let mut refused = Vec::new();
        let (winner, changed) = match primaries.split_first() {
            None => (self.insert(input, None), true),
            Some((&winner, others)) => {
                for &other in others {
                    if let Some(queue) = self.kept_apart(winner, other) {
                        refused.push(Refusal {
                            reason: Refused::KeepApart { queue },
                            other: Some(self.nodes[other].reference),
                        });
                        continue;
                    }
                    let merged = self.size(winner).plus(self.size(other));
                    if let Some(cap) = self.limits.exceeded_by(merged) {
                        refused.push(Refusal {
                            reason: Refused::Cap(cap),
                            other: Some(self.nodes[other].reference),
                        });
                        continue;
                    }
                    let via = self.holders(input);
                    let moved = self.absorb(winner, other);
                    self.nodes[other].version += 1;
                    absorbed.push(Absorbed {
                        primary: self.nodes[other].reference,
                        version: self.nodes[other].version,
                        moved,
                        watermark: self.newest(winner),
                        via,
                    });
                }
                // A value the index does not know is new to every cluster. (An input
                // that meets two clusters brings nothing new: each of its values is
                // known to one of them; so a refused merge never leads to an insert.)
                let new_email = input
                    .email()
                    .is_some_and(|e| !self.by_email.contains_key(e));
                let new_phone = input
                    .phone()
                    .is_some_and(|p| !self.by_phone.contains_key(p));
                let mut grew = false;
                if new_email || new_phone {
                    let growth = Size {
                        emails: usize::from(new_email),
                        phones: usize::from(new_phone),
                        contacts: 1,
                    };
                    match self.limits.exceeded_by(self.size(winner).plus(growth)) {
                        Some(cap) => refused.push(Refusal {
                            reason: Refused::Cap(cap),
                            other: None,
                        }),
                        None => {
                            self.insert(input, Some(winner));
                            grew = true;
                        }
                    }
                }
                (winner, grew || !absorbed.is_empty())
            }
        };
        if changed || record_unchanged {
            self.nodes[winner].version += 1;
        }
        Outcome {
            identity: self.identity(winner),
            version: self.nodes[winner].version,
            changed,
            absorbed,
            refused,
            bridge,
        }
    }

    /// The first contacts holding the input's email and its phone.
    fn holders(&self, input: &ContactInput) -> Vec<ContactRef> {
        let email = input.email().and_then(|e| self.by_email.get(e));
        let phone = input.phone().and_then(|p| self.by_phone.get(p));
        [email, phone]
            .into_iter()
            .flatten()
            .filter_map(|holders| holders.first())
            .map(|&n| self.nodes[n].reference)
            .collect()
    }

    /// An input whose identifiers are all quarantined: answered as the oldest identity
    /// holding one of them, linking nothing. Only when none holds them (all erased
    /// since) does it create a primary, as any unmatched input does.
    fn answer_only(&mut self, input: &ContactInput, record_unchanged: bool) -> Outcome {
        let holders = input
            .email()
            .and_then(|e| self.by_email.get(e))
            .into_iter()
            .chain(input.phone().and_then(|p| self.by_phone.get(p)))
            .flatten();
        let oldest = holders
            .map(|&n| self.nodes[n].primary)
            .min_by_key(|&p| self.nodes[p].age);
        let (primary, changed) = match oldest {
            Some(p) => (p, false),
            None => (self.insert(input, None), true),
        };
        if changed || record_unchanged {
            self.nodes[primary].version += 1;
        }
        Outcome {
            identity: self.identity(primary),
            version: self.nodes[primary].version,
            changed,
            absorbed: Vec::new(),
            refused: Vec::new(),
            bridge: None,
        }
    }

    /// Whether a keep-apart decision holds between the clusters of the primaries
    /// `winner` and `other` as they are now (after any merge earlier in the plan):
    /// `Some(queue)` when one does, `queue` false when one of them is final.
    fn kept_apart(&self, winner: usize, other: usize) -> Option<bool> {
        let primary_of = |id: i64| self.stored.get(&id).map(|&n| self.nodes[n].primary);
        let mut queue = None;
        for decision in &self.keep_apart {
            let (Some(a), Some(b)) = (primary_of(decision.a), primary_of(decision.b)) else {
                continue;
            };
            if (a, b) == (winner, other) || (a, b) == (other, winner) {
                queue = Some(queue.unwrap_or(true) && !decision.is_final);
            }
        }
        queue
    }

    /// The contacts holding the input's email and phone, when both are known but no
    /// one contact holds both.
    fn bridge(&self, input: &ContactInput) -> Option<(ContactRef, ContactRef)> {
        let email_holders = self.by_email.get(input.email()?)?;
        let phone_holders = self.by_phone.get(input.phone()?)?;
        if email_holders.iter().any(|n| phone_holders.contains(n)) {
            return None;
        }
        Some((
            self.nodes[email_holders[0]].reference,
            self.nodes[phone_holders[0]].reference,
        ))
    }

    /// The primary and the secondaries of the cluster of `primary`.
    fn cluster(&self, primary: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(primary).chain(self.members.get(&primary).into_iter().flatten().copied())
    }

    fn size(&self, primary: usize) -> Size {
        let mut emails = HashSet::new();
        let mut phones = HashSet::new();
        let mut contacts = 0;
        for n in self.cluster(primary) {
            let node = &self.nodes[n];
            emails.extend(node.email.as_ref());
            phones.extend(node.phone.as_ref());
            contacts += 1;
        }
        Size {
            emails: emails.len(),
            phones: phones.len(),
            contacts,
        }
    }

    /// The contact of the cluster with the highest id: contacts a plan inserts get ids
    /// above every stored one, in plan order.
    fn newest(&self, primary: usize) -> ContactRef {
        let id_order = |r: &ContactRef| match *r {
            ContactRef::Stored(id) => (0, id),
            ContactRef::New(n) => (1, n as i64),
        };
        self.cluster(primary)
            .map(|n| self.nodes[n].reference)
            .max_by_key(id_order)
            .expect("a cluster has its primary")
    }

    /// Makes `other` and all its secondaries secondaries of `winner`; returns the
    /// secondaries re-pointed.
    fn absorb(&mut self, winner: usize, other: usize) -> Vec<ContactRef> {
        let moved = self.members.remove(&other).unwrap_or_default();
        for &m in moved.iter().chain([&other]) {
            self.nodes[m].primary = winner;
        }
        let references = moved.iter().map(|&m| self.nodes[m].reference).collect();
        let members = self.members.entry(winner).or_default();
        members.extend(moved);
        members.push(other);
        references
    }

    fn identity(&self, primary: usize) -> Identity<ContactRef> {
        let mut secondaries: Vec<usize> = self.members.get(&primary).cloned().unwrap_or_default();
        secondaries.sort_by_key(|&n| self.nodes[n].age);
        let mut emails: Vec<String> = Vec::new();
        let mut phone_numbers: Vec<String> = Vec::new();
        for &n in std::iter::once(&primary).chain(&secondaries) {
            let node = &self.nodes[n];
            if let Some(email) = &node.email {
                if !emails.iter().any(|e| e == email.as_str()) {
                    emails.push(email.as_str().to_owned());
                }
            }
            if let Some(phone) = &node.phone {
                if !phone_numbers.iter().any(|p| p == phone.as_str()) {
                    phone_numbers.push(phone.as_str().to_owned());
                }
            }
        }
        Identity {
            primary_id: self.nodes[primary].reference,
            emails,
            phone_numbers,
            secondary_ids: secondaries
                .iter()
                .map(|&n| self.nodes[n].reference)
                .collect(),
        }
    }

    fn finish(self, outcomes: Vec<Outcome>) -> Plan {
        let link =
            |node: &Node, i: usize| (node.primary != i).then(|| self.nodes[node.primary].reference);
        let mut plan = Plan {
            outcomes,
            ..Plan::default()
        };
        for (i, node) in self.nodes.iter().enumerate() {
            match node.reference {
                ContactRef::New(_) => plan.inserts.push(NewContact {
                    email: node.email.clone(),
                    phone: node.phone.clone(),
                    linked_id: link(node, i),
                    version: node.version,
                    input: node.input,
                }),
                ContactRef::Stored(id) => {
                    if node.stored_primary != Some(node.primary)
                        || node.stored_version != node.version
                    {
                        plan.updates.push(StoredUpdate {
                            id,
                            linked_id: link(node, i),
                            version: node.version,
                        });
                    }
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::Normalization;
    use chrono::TimeZone;

    /// An event's request: every event gets a record.
    fn input(email: Option<&str>, phone: Option<&str>) -> Request {
        let mode = Normalization::Standard;
        let input = ContactInput::new(
            email.and_then(|e| Email::parse(e, mode).unwrap()),
            phone.and_then(|p| Phone::parse(p, mode).unwrap()),
        )
        .unwrap();
        let key = format!("{input:?}");
        Request {
            input,
            origin: Origin::Event {
                event_id: Some(key.clone()),
                order_id: None,
                ledger_key: key,
            },
        }
    }

    fn stored(
        id: i64,
        email: Option<&str>,
        phone: Option<&str>,
        linked_id: Option<i64>,
    ) -> StoredContact {
        StoredContact {
            id,
            email: email.map(|e| Email::from_stored(e.into())),
            phone: phone.map(|p| Phone::from_stored(p.into())),
            linked_id,
            created_at: Utc.timestamp_opt(1_700_000_000 + id, 0).unwrap(),
            version: 1,
        }
    }

    #[test]
    fn two_primaries_met_by_one_input_merge_into_the_older_and_insert_nothing() {
        let snapshot = vec![
            stored(11, Some("george@hillvalley.edu"), Some("919191"), None),
            stored(27, Some("biffsucks@hillvalley.edu"), Some("717171"), None),
        ];
        let plan = plan(
            snapshot,
            &[input(Some("george@hillvalley.edu"), Some("717171"))],
            Limits::default(),
            &Decisions::default(),
        )
        .unwrap();
        assert!(plan.inserts.is_empty());
        let outcome = &plan.outcomes[0];
        assert_eq!(outcome.identity.primary_id, ContactRef::Stored(11));
        assert_eq!(outcome.identity.secondary_ids, vec![ContactRef::Stored(27)]);
        assert_eq!(outcome.identity.phone_numbers, vec!["919191", "717171"]);
        assert_eq!(
            outcome.absorbed,
            vec![Absorbed {
                primary: ContactRef::Stored(27),
                version: 2,
                moved: vec![],
                watermark: ContactRef::Stored(27),
                via: vec![ContactRef::Stored(11), ContactRef::Stored(27)],
            }]
        );
        assert!(plan.updates.contains(&StoredUpdate {
            id: 27,
            linked_id: Some(ContactRef::Stored(11)),
            version: 2
        }));
    }

    #[test]
    fn a_cap_refuses_the_merge_and_the_growth_but_the_input_still_gets_an_answer() {
        let snapshot = vec![
            stored(1, Some("a1@x.io"), Some("1"), None),
            stored(2, Some("a2@x.io"), None, Some(1)),
            stored(3, Some("b1@x.io"), Some("3"), None),
        ];
        let limits = Limits {
            max_emails: 2,
            ..Limits::default()
        };
        let plan = plan(
            snapshot,
            &[
                // Would merge 3 into 1: three emails.
                input(Some("a1@x.io"), Some("3")),
                // Would add a third email to 1.
                input(Some("a3@x.io"), Some("1")),
                // Fits: 3 grows to two emails.
                input(Some("b2@x.io"), Some("3")),
            ],
            limits,
            &Decisions::default(),
        )
        .unwrap();
        let [merge, grow, fits] = &plan.outcomes[..] else {
            panic!("three outcomes")
        };
        assert_eq!(
            merge.refused,
            vec![Refusal {
                reason: Refused::Cap(Cap::Emails),
                other: Some(ContactRef::Stored(3))
            }]
        );
        assert!(merge.absorbed.is_empty() && !merge.changed);
        assert_eq!(merge.identity.primary_id, ContactRef::Stored(1));
        assert_eq!(
            grow.refused,
            vec![Refusal {
                reason: Refused::Cap(Cap::Emails),
                other: None
            }]
        );
        assert_eq!(grow.identity.emails, vec!["a1@x.io", "a2@x.io"]);
        assert!(fits.refused.is_empty() && fits.changed);
        assert_eq!(plan.inserts.len(), 1);
        assert!(plan.updates.iter().all(|u| u.linked_id.is_none()));
    }

    #[test]
    fn a_merge_records_what_it_moved_and_the_newest_contact() {
        let snapshot = vec![
            stored(1, Some("a@x.io"), None, None),
            stored(5, Some("b@x.io"), Some("5"), None),
            stored(6, Some("c@x.io"), Some("5"), Some(5)),
        ];
        let plan = plan(
            snapshot,
            &[input(Some("a@x.io"), Some("5"))],
            Limits::default(),
            &Decisions::default(),
        )
        .unwrap();
        let absorbed = &plan.outcomes[0].absorbed[0];
        assert_eq!(absorbed.primary, ContactRef::Stored(5));
        assert_eq!(absorbed.moved, vec![ContactRef::Stored(6)]);
        assert_eq!(absorbed.watermark, ContactRef::Stored(6));
    }

    #[test]
    fn a_batch_sees_its_own_inserts() {
        let plan = plan(
            vec![],
            &[
                input(Some("a@x.io"), None),
                input(Some("a@x.io"), Some("1")),
                input(None, Some("1")),
            ],
            Limits::default(),
            &Decisions::default(),
        )
        .unwrap();
        assert_eq!(plan.inserts.len(), 2);
        assert_eq!(plan.inserts[1].linked_id, Some(ContactRef::New(0)));
        let last = &plan.outcomes[2];
        assert!(!last.changed);
        assert_eq!(last.version, 3);
        assert_eq!(last.identity.secondary_ids, vec![ContactRef::New(1)]);
    }

    #[test]
    fn a_chain_in_the_snapshot_is_refused() {
        let snapshot = vec![
            stored(1, Some("a@x.io"), None, None),
            stored(2, Some("b@x.io"), None, Some(1)),
            stored(3, Some("c@x.io"), None, Some(2)),
        ];
        assert!(plan(
            snapshot,
            &[input(Some("c@x.io"), None)],
            Limits::default(),
            &Decisions::default()
        )
        .is_err());
    }

    #[test]
    fn a_keep_apart_decision_refuses_the_merge_of_the_clusters_however_they_grew() {
        // 11 and 27 were kept apart; 27 has since gained secondary 30, and 40 joined
        // 11's side as a secondary of 11 through a merge.
        let snapshot = vec![
            stored(11, Some("george@hillvalley.edu"), Some("919191"), None),
            stored(27, Some("biffsucks@hillvalley.edu"), Some("717171"), None),
            stored(30, Some("biff@hillvalley.edu"), Some("717171"), Some(27)),
            stored(40, Some("g2@hillvalley.edu"), Some("999"), Some(11)),
            stored(50, Some("other@x.io"), Some("555"), None),
        ];
        let decisions = Decisions {
            keep_apart: vec![KeepApart {
                a: 11,
                b: 27,
                is_final: false,
            }],
            ..Decisions::default()
        };
        let plan = plan(
            snapshot,
            &[
                // Both sides, through contacts other than the decided ones.
                input(Some("g2@hillvalley.edu"), Some("717171")),
                // A third identity may join either side.
                input(Some("other@x.io"), Some("717171")),
                // Now 50 is part of 27's side: 50 with 11's side is refused too.
                input(Some("george@hillvalley.edu"), Some("555")),
            ],
            Limits::default(),
            &decisions,
        )
        .unwrap();
        let [first, second, third] = &plan.outcomes[..] else {
            panic!("three outcomes")
        };
        let refused = |other| {
            vec![Refusal {
                reason: Refused::KeepApart { queue: true },
                other: Some(ContactRef::Stored(other)),
            }]
        };
        assert_eq!(first.refused, refused(27));
        assert_eq!(first.identity.primary_id, ContactRef::Stored(11));
        assert!(!first.changed && first.absorbed.is_empty());
        assert!(second.refused.is_empty());
        assert_eq!(second.identity.primary_id, ContactRef::Stored(27));
        assert_eq!(third.refused, refused(27));
        assert!(plan.inserts.is_empty());
    }

    #[test]
    fn an_input_with_only_quarantined_identifiers_is_answered_by_the_oldest_holder() {
        let snapshot = vec![
            stored(1, Some("a@x.io"), Some("555"), None),
            stored(2, Some("b@x.io"), Some("555"), None),
        ];
        let decisions = Decisions {
            answer_only: HashSet::from([0]),
            ..Decisions::default()
        };
        let plan = plan(
            snapshot,
            &[input(None, Some("555"))],
            Limits::default(),
            &decisions,
        )
        .unwrap();
        let outcome = &plan.outcomes[0];
        assert_eq!(outcome.identity.primary_id, ContactRef::Stored(1));
        assert!(outcome.absorbed.is_empty() && !outcome.changed);
        assert!(plan.inserts.is_empty());
    }

    fn http(request: Request) -> Request {
        Request {
            origin: Origin::Http { request_id: None },
            ..request
        }
    }

    #[test]
    fn http_requests_publish_only_what_they_change_and_events_publish_every_input() {
        let snapshot = vec![stored(1, Some("a@x.io"), Some("1"), None)];
        let known = input(Some("a@x.io"), Some("1"));
        let new = input(Some("b@x.io"), None);
        let limits = Limits::default();
        let decisions = Decisions::default();

        let from_http = plan(
            snapshot.clone(),
            &[http(known.clone()), http(new.clone())],
            limits,
            &decisions,
        )
        .unwrap();
        let from_events = plan(snapshot, &[known, new], limits, &decisions).unwrap();

        assert_eq!(from_http.records, vec![Publish::Identity { input: 1 }]);
        assert_eq!(
            from_events.records,
            vec![
                Publish::Identity { input: 0 },
                Publish::Identity { input: 1 }
            ]
        );
    }

    #[test]
    fn a_merge_publishes_the_survivor_then_a_record_under_each_absorbed_primary() {
        let snapshot = vec![
            stored(11, Some("a@x.io"), Some("1"), None),
            stored(27, Some("b@x.io"), Some("2"), None),
        ];
        let plan = plan(
            snapshot,
            &[http(input(Some("a@x.io"), Some("2")))],
            Limits::default(),
            &Decisions::default(),
        )
        .unwrap();
        assert_eq!(
            plan.records,
            vec![
                Publish::Identity { input: 0 },
                Publish::Merge {
                    input: 0,
                    absorbed: 0
                }
            ]
        );

        let identities = vec![plan.outcomes[0].identity.clone().map_ids(|r| match r {
            ContactRef::Stored(id) => id,
            ContactRef::New(_) => unreachable!("nothing is inserted"),
        })];
        let resolve = |r: ContactRef| match r {
            ContactRef::Stored(id) => id,
            ContactRef::New(_) => unreachable!("nothing is inserted"),
        };
        let origin = Origin::Http { request_id: None };
        let (key, identity) = plan.records[0].render(&plan, &identities, resolve, &origin);
        let (merged_key, merge) = plan.records[1].render(&plan, &identities, resolve, &origin);
        assert_eq!(key, 11);
        assert_eq!(identity["contact"]["primaryContatctId"], 11);
        assert_eq!(merged_key, 27);
        assert_eq!(merge["mergedInto"], 11);
    }
}
