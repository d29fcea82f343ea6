-- A read-only lookup in one statement, so one snapshot by construction and no
-- transaction to open or close. $1: emails, $2: phone numbers.
-- Always at least one row: `hits` holds every primary whose cluster has a live
-- contact with one of the identifiers (ascending, empty when none); when there is
-- exactly one, the rows carry that cluster's live contacts, otherwise the contact
-- columns are null (several hits: the caller settles quarantined identifiers).
WITH hit AS (
  SELECT DISTINCT coalesce(linked_id, id) AS id FROM contact
  WHERE deleted_at IS NULL AND (email = ANY($1) OR phone_number = ANY($2))
), answer AS (
  SELECT coalesce(array_agg(id ORDER BY id), '{}') AS hits,
         CASE WHEN count(*) = 1 THEN min(id) END AS one
  FROM hit
)
SELECT answer.hits AS "hits!", c.id AS "id?", c.email, c.phone_number, c.linked_id,
       c.created_at AS "created_at?", c.version AS "version?"
FROM answer
LEFT JOIN contact c
  ON c.deleted_at IS NULL AND (c.id = answer.one OR c.linked_id = answer.one)
