//! The invariants of docs/contract.md §2, as SQL over the tables: the tests and the
//! benchmark check exactly the same.

use sqlx::PgPool;

/// SQL checks of every invariant of §2; returns how many checks ran.
pub async fn assert_invariants(pool: &PgPool) -> usize {
    let checks: [(&str, &str); 6] = [
        (
            "a secondary links to a missing contact or to a secondary",
            "SELECT count(*) FROM contact s LEFT JOIN contact p ON p.id = s.linked_id \
             WHERE s.link_precedence = 'secondary' AND (p.id IS NULL OR p.linked_id IS NOT NULL)",
        ),
        (
            "link_precedence disagrees with linked_id",
            "SELECT count(*) FROM contact WHERE (link_precedence = 'primary') <> (linked_id IS NULL)",
        ),
        // A quarantined identifier links nothing: the identities it had linked were
        // split, and each keeps it.
        (
            "two clusters share an email",
            "SELECT count(*) FROM (SELECT email FROM contact WHERE email IS NOT NULL AND deleted_at IS NULL \
             AND email NOT IN (SELECT value FROM quarantine WHERE kind = 'e' AND released_at IS NULL) \
             GROUP BY email HAVING count(DISTINCT coalesce(linked_id, id)) > 1) x",
        ),
        (
            "two clusters share a phone number",
            "SELECT count(*) FROM (SELECT phone_number FROM contact WHERE phone_number IS NOT NULL AND deleted_at IS NULL \
             AND phone_number NOT IN (SELECT value FROM quarantine WHERE kind = 'p' AND released_at IS NULL) \
             GROUP BY phone_number HAVING count(DISTINCT coalesce(linked_id, id)) > 1) x",
        ),
        (
            "a secondary is older than its primary",
            "SELECT count(*) FROM contact s JOIN contact p ON p.id = s.linked_id \
             WHERE (s.created_at, s.id) < (p.created_at, p.id)",
        ),
        (
            "a secondary brought no email or phone its cluster lacked",
            "SELECT count(*) FROM contact s WHERE s.link_precedence = 'secondary' AND s.deleted_at IS NULL              AND NOT (coalesce(s.email NOT IN (SELECT c.email FROM contact c WHERE (c.id = s.linked_id OR c.linked_id = s.linked_id)                         AND c.email IS NOT NULL AND (c.created_at, c.id) < (s.created_at, s.id)), false)                    OR coalesce(s.phone_number NOT IN (SELECT c.phone_number FROM contact c WHERE (c.id = s.linked_id OR c.linked_id = s.linked_id)                         AND c.phone_number IS NOT NULL AND (c.created_at, c.id) < (s.created_at, s.id)), false))",
        ),
    ];
    for (what, sql) in checks {
        let violations: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        assert_eq!(violations, 0, "invariant broken: {what}");
    }
    checks.len()
}
