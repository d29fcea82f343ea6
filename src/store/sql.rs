//! Every statement of the hot path, in one place: the store runs them and the
//! query-plan test EXPLAINs exactly these strings.

/// Primaries of the live contacts matching any of the identifiers ($1 emails, $2 phones).
macro_rules! hit_primaries {
    () => {
        "SELECT coalesce(linked_id, id) FROM contact \
         WHERE deleted_at IS NULL AND (email = ANY($1) OR phone_number = ANY($2))"
    };
}

macro_rules! select_contact {
    () => {
        "SELECT id, email, phone_number, linked_id, created_at, version FROM contact"
    };
}

pub const HIT_PRIMARIES: &str = hit_primaries!();

/// Ledger entries of a batch: kinds ($1), keys ($2) and content digests ($3), in
/// (kind, key) order; returns the (kind, key) of those not seen before.
pub const CLAIM_LEDGER_KEYS: &str = "INSERT INTO processed_event (kind, key, digest) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
     ON CONFLICT DO NOTHING RETURNING kind, key";

/// Stored content digests of `eventId` keys ($1).
pub const LEDGER_DIGESTS: &str =
    "SELECT key, digest FROM processed_event WHERE kind = 'event' AND key = ANY($1)";

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
pub const LOCK_IDENTIFIERS: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";

/// Tries the identifier locks ($1) without waiting; true when all were granted (an
/// aggregate evaluates every row: each key is tried, granted ones are held).
pub const TRY_LOCK_IDENTIFIERS: &str =
    "SELECT coalesce(bool_and(pg_try_advisory_xact_lock(k)), true) FROM unnest($1::bigint[]) AS k";

/// The advisory lock of primary `p`: the two-`int4` form, a key space apart from the
/// identifier locks' single `bigint` keys (ids up to 2^62).
macro_rules! lock_primary {
    () => {
        "pg_advisory_xact_lock((p >> 31)::int, (p & 2147483647)::int)"
    };
}

/// Locks the primaries the identifiers hit, as the statement's snapshot sees them, in
/// ascending id order; returns them.
pub const LOCK_HIT_PRIMARIES: &str = concat!(
    "SELECT p, ",
    lock_primary!(),
    " FROM (SELECT DISTINCT coalesce(linked_id, id) AS p FROM contact \
     WHERE deleted_at IS NULL AND (email = ANY($1) OR phone_number = ANY($2)) ORDER BY 1) hit"
);

/// Locks more primaries by id ($1, sorted); returns them.
pub const LOCK_PRIMARIES: &str = concat!(
    "SELECT p, ",
    lock_primary!(),
    " FROM unnest($1::bigint[]) AS p"
);

/// Every live contact of the clusters of the primaries $1.
pub const LOAD_CLUSTERS: &str = concat!(
    select_contact!(),
    " WHERE deleted_at IS NULL AND (id = ANY($1) OR linked_id = ANY($1))"
);

/// Draws $1 contact ids from the table's sequence, ascending.
pub const DRAW_CONTACT_IDS: &str = "SELECT nextval(s.seq) FROM \
     (SELECT pg_get_serial_sequence('contact', 'id')::regclass AS seq) s, generate_series(1, $1::int)";

/// Inserts new contacts with their drawn ids ($1) and resolved links ($4), stamped
/// `greatest(now, $6)`.
pub const INSERT_CONTACTS: &str = "INSERT INTO contact \
         (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version) \
     SELECT u.id, u.email, u.phone, u.link, \
            CASE WHEN u.link IS NULL THEN 'primary' ELSE 'secondary' END, t.ts, t.ts, u.version \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
            AS u(id, email, phone, link, version), \
          (SELECT greatest(clock_timestamp(), $6::timestamptz) AS ts) t";

/// Suppression hashes ($1) of erased identifiers among those given.
pub const SUPPRESSED: &str = "SELECT hash FROM suppression WHERE hash = ANY($1)";

/// Re-links and re-versions stored contacts ($1-$3), writes the outbox ($4, $5), the
/// merge journal ($6-$11 and $17, the contacts that bridged a merge; contact ids as array literals; no absorbed id for a bridge) and refused links ($12-$16;
/// one pending review entry per refused link: a link refused again while its entry is
/// pending adds none).
pub const UPDATE_CONTACTS_AND_WRITE_OUTBOX: &str = "WITH u AS (UPDATE contact c SET \
             linked_id = u.linked_id, \
             link_precedence = CASE WHEN u.linked_id IS NULL THEN 'primary' ELSE 'secondary' END, \
             version = u.version, \
             updated_at = CASE WHEN c.linked_id IS DISTINCT FROM u.linked_id THEN clock_timestamp() ELSE c.updated_at END \
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, linked_id, version) \
           WHERE c.id = u.id), \
         j AS (INSERT INTO merge_journal (kind, primary_id, absorbed_id, contact_ids, watermark_id, event_key, source, via_ids) \
           SELECT CASE WHEN absorbed IS NULL THEN 'bridge' ELSE 'merge' END, \
                  primary_id, absorbed, contact_ids::bigint[], watermark, event_key, source, via::bigint[] \
           FROM unnest($6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::text[], $11::text[], $17::text[]) \
             AS j(primary_id, absorbed, contact_ids, watermark, event_key, source, via)), \
         r AS (INSERT INTO link_review (reason, primary_id, other_primary_id, event_key, source) \
           SELECT DISTINCT ON (r.reason, r.primary_id, r.other_primary_id) r.* \
           FROM unnest($12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::text[]) \
             AS r(reason, primary_id, other_primary_id, event_key, source) \
           WHERE NOT EXISTS (SELECT 1 FROM link_review l WHERE l.status = 'pending' \
             AND l.reason = r.reason AND l.primary_id = r.primary_id \
             AND l.other_primary_id IS NOT DISTINCT FROM r.other_primary_id)) \
         INSERT INTO outbox (key, payload) SELECT * FROM unnest($4::text[], $5::text[])";

/// The relay's next rows, leaving out those in flight ($1), at most $2.
pub const OUTBOX_NEXT_ROWS: &str =
    "SELECT id, key, payload, created_at FROM outbox WHERE id <> ALL($1) ORDER BY id LIMIT $2";

/// Deletes published outbox rows ($1).
pub const OUTBOX_DELETE: &str = "DELETE FROM outbox WHERE id = ANY($1)";

/// Upper bound of the outbox backlog from two index probes.
pub const OUTBOX_BACKLOG: &str = "SELECT coalesce(max(id) - min(id) + 1, 0) FROM outbox";
