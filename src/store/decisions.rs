//! Operators' decisions on the reconcile path: keep-apart decisions and quarantined
//! identifiers (docs/contract.md §8).
//!
//! Both run inside the reconcile transaction, after the identifier locks (step 2 of
//! `reconcile.rs`):
//! - [`screen`] leaves quarantined identifiers out of the inputs, counts the distinct
//!   counterparts each identifier was seen with, and quarantines those past
//!   `reconcile.quarantine.max_counterparts`. The counting is sequential over the
//!   batch, input by input, so the outcome is the same however the inputs were cut
//!   into batches; it cannot race another batch because both hold the identifier
//!   locks of the identifiers they count.
//! - [`load`] reads the keep-apart decisions between contacts of the loaded clusters.
//!   A decision names two contacts; a merge is refused when it would put them in one
//!   cluster. Both contacts are in the snapshot whenever an input touches both
//!   clusters, since the snapshot holds whole clusters.

use super::journal::journal_origin;
use super::suppression::suppression_hash;
use super::StoreError;
use crate::config::QuarantineSettings;
use crate::domain::vocabulary::DecisionSource;
use crate::domain::{ContactInput, Decisions, KeepApart, Origin, StoredContact};
use sqlx::{Postgres, Transaction};
use std::collections::{HashMap, HashSet};

/// The inputs as they are matched, quarantined identifiers left out.
pub(super) struct Screened {
    pub(crate) inputs: Vec<ContactInput>,
    /// Inputs whose every identifier is quarantined; kept whole, answered only.
    pub(crate) answer_only: HashSet<usize>,
    /// Quarantines this batch made: what their identifiers linked is split once the
    /// batch commits (see `quarantine.rs`).
    pub(crate) tripped: Vec<i64>,
}

/// An identifier as the quarantine table holds it: kind (`e`/`p`) and stored value.
type Identifier = (char, String);

/// See the module doc. `origins[i]` is where `inputs[i]` came from.
pub(super) async fn screen(
    tx: &mut Transaction<'_, Postgres>,
    salt: &str,
    settings: &QuarantineSettings,
    inputs: &[ContactInput],
    origins: &[&Origin],
) -> Result<Screened, StoreError> {
    let mut screened = Screened {
        inputs: inputs.to_vec(),
        answer_only: HashSet::new(),
        tripped: Vec::new(),
    };
    if inputs.is_empty() {
        return Ok(screened);
    }
    let ids = |input: &ContactInput| -> [Option<Identifier>; 2] {
        [
            input.email().map(|e| ('e', e.as_str().to_owned())),
            input.phone().map(|p| ('p', p.as_str().to_owned())),
        ]
    };
    let (emails, phones): (Vec<String>, Vec<String>) = (
        inputs
            .iter()
            .filter_map(|i| i.email().map(|e| e.as_str().to_owned()))
            .collect(),
        inputs
            .iter()
            .filter_map(|i| i.phone().map(|p| p.as_str().to_owned()))
            .collect(),
    );
    // Each quarantined identifier, with the first input it is left out of: 0 for one
    // quarantined before this batch, the tripping input for one this batch
    // quarantines (earlier inputs of the batch still carry it, as they would have one
    // batch at a time; the split after the commit undoes what they linked).
    let mut quarantined: HashMap<Identifier, usize> = sqlx::query!(
        "SELECT kind, value FROM quarantine WHERE released_at IS NULL \
         AND ((kind = 'e' AND value = ANY($1)) OR (kind = 'p' AND value = ANY($2)))",
        &emails,
        &phones
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| ((row.kind.chars().next().unwrap_or('e'), row.value), 0))
    .collect();

    let limit = settings.max_counterparts;
    let mut new_quarantines: Vec<(Identifier, usize, usize)> = Vec::new();
    if limit > 0 {
        let hash = |(kind, value): &Identifier| suppression_hash(salt, *kind, value);
        // Identifiers of inputs carrying both, not yet quarantined: those that count.
        let pairs: Vec<Option<(Identifier, Identifier)>> = inputs
            .iter()
            .map(|input| match ids(input) {
                [Some(e), Some(p)]
                    if !quarantined.contains_key(&e) && !quarantined.contains_key(&p) =>
                {
                    Some((e, p))
                }
                _ => None,
            })
            .collect();
        let hashes: Vec<Vec<u8>> = pairs
            .iter()
            .flatten()
            .flat_map(|(e, p)| [hash(e), hash(p)])
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let window = settings.window.as_secs_f64();
        // Pairs seen within the last sixteenth of the window are not written again:
        // a returning customer's known pair costs no write.
        let refresh = window / 16.0;
        let mut counterparts: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
        let mut fresh: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
        if !hashes.is_empty() {
            let rows =
                sqlx::query_file!("src/store/sql/counterparts.sql", &hashes, window, refresh)
                    .fetch_all(&mut **tx)
                    .await?;
            for row in rows {
                if row.fresh {
                    fresh.insert((row.identifier.clone(), row.other.clone()));
                }
                counterparts
                    .entry(row.identifier)
                    .or_default()
                    .insert(row.other);
            }
        }
        let mut written: (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        for (i, pair) in pairs.iter().enumerate() {
            let Some((e, p)) = pair else { continue };
            // An earlier input of the batch may have quarantined one of them.
            if quarantined.contains_key(e) || quarantined.contains_key(p) {
                continue;
            }
            let (he, hp) = (hash(e), hash(p));
            for (identifier, value, other) in [(&he, e, &hp), (&hp, p, &he)] {
                let seen = counterparts.entry(identifier.clone()).or_default();
                seen.insert(other.clone());
                if fresh.insert((identifier.clone(), other.clone())) {
                    written.0.push(identifier.clone());
                    written.1.push(other.clone());
                }
                if seen.len() > limit {
                    new_quarantines.push((value.clone(), seen.len(), i));
                }
            }
            for (value, _, at) in &new_quarantines {
                if *at == i {
                    quarantined.insert(value.clone(), i);
                }
            }
        }
        if !written.0.is_empty() {
            sqlx::query!(
                "INSERT INTO counterpart (identifier, other, seen_at) \
                 SELECT i, o, now() FROM unnest($1::bytea[], $2::bytea[]) AS u(i, o) \
                 ON CONFLICT (identifier, other) DO UPDATE SET seen_at = excluded.seen_at",
                &written.0,
                &written.1
            )
            .execute(&mut **tx)
            .await?;
        }
    }
    for ((kind, value), counterparts, at) in &new_quarantines {
        let (event_key, source) = journal_origin(origins[*at]);
        let tripped = sqlx::query_scalar!(
            "WITH q AS (INSERT INTO quarantine (kind, value, counterparts) VALUES ($1, $2, $3) \
               ON CONFLICT (kind, value) WHERE released_at IS NULL DO NOTHING RETURNING id) \
             INSERT INTO link_review (reason, quarantine_id, event_key, source) \
             SELECT 'quarantine', id, $4, $5 FROM q RETURNING quarantine_id",
            kind.to_string(),
            value,
            *counterparts as i32,
            event_key,
            source.as_str()
        )
        .fetch_optional(&mut **tx)
        .await?;
        screened.tripped.extend(tripped.flatten());
    }
    if quarantined.is_empty() {
        return Ok(screened);
    }
    for (i, input) in inputs.iter().enumerate() {
        let [email, phone] = ids(input);
        let keep = |id: &Option<Identifier>| {
            id.as_ref()
                .is_some_and(|v| quarantined.get(v).is_none_or(|&from| i < from))
        };
        let (keep_email, keep_phone) = (keep(&email), keep(&phone));
        if keep_email == email.is_some() && keep_phone == phone.is_some() {
            continue;
        }
        let email = input.email().filter(|_| keep_email).cloned();
        let phone = input.phone().filter(|_| keep_phone).cloned();
        match ContactInput::new(email, phone) {
            Ok(linking) => screened.inputs[i] = linking,
            Err(_) => {
                screened.answer_only.insert(i);
            }
        }
    }
    Ok(screened)
}

/// The keep-apart decisions between contacts of `snapshot`, with `answer_only` from
/// [`screen`]: what the planner must respect.
pub(super) async fn load(
    tx: &mut Transaction<'_, Postgres>,
    snapshot: &[StoredContact],
    answer_only: HashSet<usize>,
) -> Result<Decisions, StoreError> {
    let mut decisions = Decisions {
        keep_apart: Vec::new(),
        answer_only,
    };
    if snapshot.len() < 2 {
        return Ok(decisions);
    }
    let ids: Vec<i64> = snapshot.iter().map(|c| c.id).collect();
    decisions.keep_apart = sqlx::query_as!(
        KeepApart,
        r#"SELECT contact_a AS a, contact_b AS b, final AS is_final FROM keep_apart
           WHERE contact_a = ANY($1) AND contact_b = ANY($1)"#,
        &ids
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(decisions)
}

/// Records that the clusters of contacts `a` and `b` must stay apart.
pub(super) async fn keep_apart(
    tx: &mut Transaction<'_, Postgres>,
    a: i64,
    b: i64,
    is_final: bool,
    source: DecisionSource,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO keep_apart (contact_a, contact_b, final, source) VALUES ($1, $2, $3, $4)",
        a,
        b,
        is_final,
        source.as_str()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
