//! The JSON views of answers, for the HTTP API and the CLI alike (neither imports
//! the other): the routes' answers that have no domain type of their own. Each is the
//! type that is serialised and the source of its schema in the OpenAPI document, so
//! the two cannot drift apart; the CLI prints the same shapes.

pub(crate) mod explain;
pub(crate) mod reviews;

pub use explain::explanation_json;
pub use reviews::{review_decision_json, review_page_json, ReviewQuery};

use crate::domain::vocabulary::Source;
use crate::store::{Forgotten, History, HistoryEntry, Unmerged};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub(crate) use crate::domain::IdentityResponse;

/// `GET /identities/{id}/history`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = History)]
pub(crate) struct HistoryAnswer {
    /// The identity's current primary.
    #[schema(minimum = 1)]
    primary_contact_id: i64,
    /// Oldest first.
    entries: Vec<HistoryLine>,
}

/// One change of the identity, oldest first. `added`: a contact was created (the
/// identity's first, a secondary it brought, or a contact of an identity it absorbed).
/// `merged`: `absorbedId` and its secondaries (`movedContactIds`) joined `survivorId`,
/// by the event with idempotency key `eventKey` (null for an HTTP request).
/// `unmerged`: that merge was undone (by an operator, or by a split). `split`: a
/// quarantined identifier (`quarantineId`) was all that linked `primaryId` and its
/// secondaries (`movedContactIds`) to the identity of `fromPrimaryId`; they became an
/// identity of their own.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[schema(as = HistoryEntry)]
pub(crate) enum HistoryLine {
    #[serde(rename_all = "camelCase")]
    Added { at: DateTime<Utc>, contact_id: i64 },
    #[serde(rename_all = "camelCase")]
    Merged {
        at: DateTime<Utc>,
        survivor_id: i64,
        absorbed_id: i64,
        moved_contact_ids: Vec<i64>,
        #[schema(required = true)]
        event_key: Option<String>,
        source: Source,
    },
    #[serde(rename_all = "camelCase")]
    Unmerged {
        at: DateTime<Utc>,
        survivor_id: i64,
        absorbed_id: i64,
    },
    #[serde(rename_all = "camelCase")]
    Split {
        at: DateTime<Utc>,
        from_primary_id: i64,
        primary_id: i64,
        moved_contact_ids: Vec<i64>,
        /// The quarantine that caused it (kept after an erasure of its value).
        #[schema(required = true)]
        quarantine_id: Option<i64>,
    },
}

impl From<&History> for HistoryAnswer {
    fn from(history: &History) -> HistoryAnswer {
        let line = |entry: &HistoryEntry| match entry.clone() {
            HistoryEntry::Added { at, contact_id } => HistoryLine::Added { at, contact_id },
            HistoryEntry::Merged {
                at,
                survivor_id,
                absorbed_id,
                moved_contact_ids,
                event_key,
                source,
            } => HistoryLine::Merged {
                at,
                survivor_id,
                absorbed_id,
                moved_contact_ids,
                event_key,
                source,
            },
            HistoryEntry::Unmerged {
                at,
                survivor_id,
                absorbed_id,
            } => HistoryLine::Unmerged {
                at,
                survivor_id,
                absorbed_id,
            },
            HistoryEntry::Split {
                at,
                from_primary_id,
                primary_id,
                moved_contact_ids,
                quarantine_id,
            } => HistoryLine::Split {
                at,
                from_primary_id,
                primary_id,
                moved_contact_ids,
                quarantine_id,
            },
        };
        HistoryAnswer {
            primary_contact_id: history.primary_id,
            entries: history.entries.iter().map(line).collect(),
        }
    }
}

/// `POST /identities/{id}/unmerge`: the restored identity and the identity it had been
/// merged into, as they are now.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UnmergeResponse)]
pub(crate) struct UnmergeAnswer<'a> {
    restored: IdentityResponse<'a>,
    survivor: IdentityResponse<'a>,
}

impl<'a> From<&'a Unmerged> for UnmergeAnswer<'a> {
    fn from(unmerged: &'a Unmerged) -> UnmergeAnswer<'a> {
        UnmergeAnswer {
            restored: unmerged.restored.response(),
            survivor: unmerged.survivor.response(),
        }
    }
}

/// `POST /forget`: what was forgotten.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ForgetResponse)]
pub(crate) struct ForgetAnswer<'a> {
    forgotten: ForgottenContacts<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ForgottenContacts<'a> {
    #[schema(minimum = 1)]
    primary_contact_id: i64,
    contact_ids: &'a [i64],
}

impl<'a> From<&'a Forgotten> for ForgetAnswer<'a> {
    fn from(forgotten: &'a Forgotten) -> ForgetAnswer<'a> {
        ForgetAnswer {
            forgotten: ForgottenContacts {
                primary_contact_id: forgotten.primary_id,
                contact_ids: &forgotten.contact_ids,
            },
        }
    }
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: Alive,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Alive {
    Ok,
}

impl Health {
    pub(crate) const ALIVE: Health = Health { status: Alive::Ok };
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    pub(crate) status: ReadyStatus,
    pub(crate) database: Dependency,
    /// not_used in `http` mode.
    pub(crate) kafka: Dependency,
    /// Why it is not ready, where somebody must act: e.g. the outbox relay cannot
    /// publish, with the topic that is missing or the authorisation that is refused,
    /// and what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dependency {
    Up,
    Down,
    NotUsed,
}

pub fn history_json(history: &History) -> Value {
    to_json(HistoryAnswer::from(history))
}

pub fn unmerged_json(unmerged: &Unmerged) -> Value {
    to_json(UnmergeAnswer::from(unmerged))
}

pub fn forgotten_json(forgotten: &Forgotten) -> Value {
    to_json(ForgetAnswer::from(forgotten))
}

fn to_json(answer: impl serde::Serialize) -> Value {
    serde_json::to_value(answer).expect("plain data serialises")
}
