//! Every statement of the hot path, in one place: the store runs them and the
//! query-plan test EXPLAINs exactly these strings.

/// Primaries of the live contacts matching any of the identifiers ($1 emails, $2 phones).
pub const HIT_PRIMARIES: &str = include_str!("sql/hit_primaries.sql");

/// A read-only lookup in one statement ($1 emails, $2 phones): every primary hit,
/// and the cluster of the one when there is exactly one.
pub const LOOKUP: &str = include_str!("sql/lookup.sql");

/// Ledger entries of a batch: kinds ($1), keys ($2) and content digests ($3), in
/// (kind, key) order; returns the (kind, key) of those not seen before.
pub const CLAIM_LEDGER_KEYS: &str = include_str!("sql/claim_ledger_keys.sql");

/// Stored content digests of `eventId` keys ($1).
pub const LEDGER_DIGESTS: &str = include_str!("sql/ledger_digests.sql");

/// Deletes at most $2 ledger rows processed more than $1 seconds ago, oldest first;
/// returns how many it deleted.
pub const PRUNE_LEDGER: &str = include_str!("sql/prune_ledger.sql");

/// Deletes at most $2 counterpart pairs last seen more than $1 seconds ago (the
/// quarantine window: they no longer count), oldest first; returns how many it
/// deleted. A step of the same retention task as [`PRUNE_LEDGER`].
pub const PRUNE_COUNTERPARTS: &str = include_str!("sql/prune_counterparts.sql");

/// The ledger's size, as the planner's estimate (exact after ANALYZE): `count(*)`
/// would read the whole table.
pub const LEDGER_SIZE: &str = include_str!("sql/ledger_size.sql");

/// Transaction-scoped advisory locks on identifier keys ($1, sorted).
pub const LOCK_IDENTIFIERS: &str = include_str!("sql/lock_identifiers.sql");

/// Tries the identifier locks ($1) without waiting; true when all were granted (an
/// aggregate evaluates every row: each key is tried, granted ones are held).
pub const TRY_LOCK_IDENTIFIERS: &str = include_str!("sql/try_lock_identifiers.sql");

/// Locks the primaries the identifiers hit, as the statement's snapshot sees them, in
/// ascending id order; returns them.
pub const LOCK_HIT_PRIMARIES: &str = include_str!("sql/lock_hit_primaries.sql");

/// Locks more primaries by id ($1, sorted); returns them.
pub const LOCK_PRIMARIES: &str = include_str!("sql/lock_primaries.sql");

/// Every live contact of the clusters of the primaries $1.
pub const LOAD_CLUSTERS: &str = include_str!("sql/load_clusters.sql");

/// Draws $1 contact ids from the table's sequence, ascending.
pub const DRAW_CONTACT_IDS: &str = include_str!("sql/draw_contact_ids.sql");

/// Inserts new contacts with their drawn ids ($1) and resolved links ($4), stamped
/// `greatest(now, $6)`.
pub const INSERT_CONTACTS: &str = include_str!("sql/insert_contacts.sql");

/// Counterparts of the identifier hashes $1 seen within the last $2 seconds (the
/// quarantine window), and whether within the last $3 (fresh: not written again).
pub const COUNTERPARTS: &str = include_str!("sql/counterparts.sql");

/// Suppression hashes ($1) of erased identifiers among those given.
pub const SUPPRESSED: &str = include_str!("sql/suppressed.sql");

/// Re-links and re-versions stored contacts ($1-$3), writes the merge journal
/// ($4-$12), refused links ($13-$17) and the outbox ($18, $19); the file's comment
/// names each parameter.
pub const UPDATE_CONTACTS_AND_WRITE_OUTBOX: &str =
    include_str!("sql/update_contacts_and_write_outbox.sql");

/// The relay's round: deletes the rows the broker has taken ($1) and reads the next
/// at most $2, leaving out the deleted ones.
pub const OUTBOX_ROUND: &str = include_str!("sql/outbox_round.sql");

/// Deletes published outbox rows ($1).
pub const OUTBOX_DELETE: &str = include_str!("sql/outbox_delete.sql");

/// Upper bound of the outbox backlog from two index probes.
pub const OUTBOX_BACKLOG: &str = include_str!("sql/outbox_backlog.sql");
