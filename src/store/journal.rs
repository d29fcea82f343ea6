//! How the merge journal and the review queue record where an input came from. Both
//! the reconcile path's writes (`writes.rs`) and its quarantines (`decisions.rs`)
//! write these columns; neither module imports the other for it.

use crate::domain::vocabulary::InputSource;
use crate::domain::Origin;

/// The journal's view of an origin: the event's idempotency key and the source.
pub(super) fn journal_origin(origin: &Origin) -> (Option<String>, InputSource) {
    let key = match origin {
        Origin::Event { ledger_key, .. } => Some(ledger_key.clone()),
        Origin::Http { .. } | Origin::Admin { .. } => None,
    };
    (key, InputSource::of(origin))
}
