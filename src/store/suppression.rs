//! Erased identifiers: their salted hashes, and inputs that carry one.

use super::{Store, StoreError};
use crate::domain::ContactInput;
use sqlx::{Postgres, Transaction};
use std::collections::HashSet;

impl Store {
    /// The salt of suppression hashes, read once: it never changes.
    pub(super) async fn suppression_salt(&self) -> Result<&str, StoreError> {
        let salt = self
            .salt
            .get_or_try_init(|| async {
                sqlx::query_scalar!("SELECT salt FROM suppression_salt")
                    .fetch_one(&self.pool)
                    .await
            })
            .await?;
        Ok(salt)
    }
}

/// The suppression-list hash of an identifier (`kind` `e` or `p`, value as stored).
pub(super) fn suppression_hash(salt: &str, kind: char, value: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(format!("{salt}:{kind}:{value}")).to_vec()
}

/// Which of `inputs` carry an erased identifier.
pub(super) async fn suppressed_inputs(
    tx: &mut Transaction<'_, Postgres>,
    salt: &str,
    inputs: &[&ContactInput],
) -> Result<Vec<bool>, StoreError> {
    let hashes_of = |input: &ContactInput| {
        let email = input
            .email()
            .map(|e| suppression_hash(salt, 'e', e.as_str()));
        let phone = input
            .phone()
            .map(|p| suppression_hash(salt, 'p', p.as_str()));
        email.into_iter().chain(phone)
    };
    let all: Vec<Vec<u8>> = inputs.iter().flat_map(|i| hashes_of(i)).collect();
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let found: HashSet<Vec<u8>> = sqlx::query_file_scalar!("src/store/sql/suppressed.sql", &all)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    Ok(inputs
        .iter()
        .map(|i| hashes_of(i).any(|h| found.contains(&h)))
        .collect())
}
