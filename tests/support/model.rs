//! A plain in-memory model of docs/contract.md §3, written for clarity, not speed: the
//! reference the database is compared with. It shares no code with the service.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashSet};

#[derive(Clone, Debug)]
struct Contact {
    id: i64,
    email: Option<String>,
    phone: Option<String>,
    /// None for a primary.
    linked: Option<i64>,
}

/// The answer of §4, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    pub primary: i64,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub secondaries: Vec<i64>,
}

impl ModelIdentity {
    /// The `{"contact": ...}` body the service must answer with.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"contact": {
            "primaryContatctId": self.primary,
            "primaryContactId": self.primary,
            "emails": self.emails,
            "phoneNumbers": self.phones,
            "secondaryContactIds": self.secondaries,
        }})
    }
}

#[derive(Default)]
pub struct Model {
    /// In creation order; ids ascend from 1.
    contacts: Vec<Contact>,
    /// Pairs of contacts whose clusters must never be joined (docs/contract.md §8).
    keep_apart: Vec<(i64, i64)>,
}

impl Model {
    fn primary_of(&self, c: &Contact) -> i64 {
        c.linked.unwrap_or(c.id)
    }

    fn primary_of_id(&self, id: i64) -> i64 {
        self.primary_of(&self.contacts[(id - 1) as usize])
    }

    /// Records that the clusters of contacts `a` and `b` must stay apart.
    pub fn keep_apart(&mut self, a: i64, b: i64) {
        self.keep_apart.push((a, b));
    }

    /// Whether two contact ids are in one cluster now.
    pub fn same_cluster(&self, a: i64, b: i64) -> bool {
        self.primary_of_id(a) == self.primary_of_id(b)
    }

    /// A keep-apart pair has one contact in each of the two clusters.
    fn kept_apart(&self, p: i64, q: i64) -> bool {
        self.keep_apart.iter().any(|&(a, b)| {
            let (a, b) = (self.primary_of_id(a), self.primary_of_id(b));
            (a, b) == (p, q) || (a, b) == (q, p)
        })
    }

    /// Applies one request (already normalised); `None` for both is not allowed.
    pub fn identify(&mut self, email: Option<&str>, phone: Option<&str>) -> ModelIdentity {
        assert!(email.is_some() || phone.is_some());
        let matching: Vec<&Contact> = self
            .contacts
            .iter()
            .filter(|c| {
                (email.is_some() && c.email.as_deref() == email)
                    || (phone.is_some() && c.phone.as_deref() == phone)
            })
            .collect();
        let mut primaries: Vec<i64> = matching.iter().map(|c| self.primary_of(c)).collect();
        primaries.sort();
        primaries.dedup();
        let primary = match primaries.first() {
            None => {
                let id = self.contacts.len() as i64 + 1;
                self.contacts.push(Contact {
                    id,
                    email: email.map(str::to_owned),
                    phone: phone.map(str::to_owned),
                    linked: None,
                });
                return self.identity(id);
            }
            // Ids ascend with creation, so the smallest primary id is the oldest.
            Some(&oldest) => oldest,
        };
        for other in &primaries[1..] {
            // The oldest cluster the input meets is the one it answers as; a cluster
            // kept apart from it is left alone.
            if self.kept_apart(primary, *other) {
                continue;
            }
            for c in self.contacts.iter_mut() {
                if c.id == *other || c.linked == Some(*other) {
                    c.linked = Some(primary);
                }
            }
        }
        let known_emails: HashSet<String> = self
            .contacts
            .iter()
            .filter_map(|c| c.email.clone())
            .collect();
        let known_phones: HashSet<String> = self
            .contacts
            .iter()
            .filter_map(|c| c.phone.clone())
            .collect();
        let new_email = email.is_some_and(|e| !known_emails.contains(e));
        let new_phone = phone.is_some_and(|p| !known_phones.contains(p));
        if new_email || new_phone {
            let id = self.contacts.len() as i64 + 1;
            self.contacts.push(Contact {
                id,
                email: email.map(str::to_owned),
                phone: phone.map(str::to_owned),
                linked: Some(primary),
            });
        }
        self.identity(primary)
    }

    pub fn identity(&self, primary: i64) -> ModelIdentity {
        let members: Vec<&Contact> = self
            .contacts
            .iter()
            .filter(|c| c.id == primary || c.linked == Some(primary))
            .collect();
        let mut emails = Vec::new();
        let mut phones = Vec::new();
        for c in &members {
            if let Some(e) = &c.email {
                if !emails.contains(e) {
                    emails.push(e.clone());
                }
            }
            if let Some(p) = &c.phone {
                if !phones.contains(p) {
                    phones.push(p.clone());
                }
            }
        }
        ModelIdentity {
            primary,
            emails,
            phones,
            secondaries: members
                .iter()
                .filter(|c| c.id != primary)
                .map(|c| c.id)
                .collect(),
        }
    }

    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// The clusters as sets of identifiers ("e:..." / "p:..."): independent of the order
    /// in which unrelated inputs were applied, so comparable across runs.
    pub fn clusters(&self) -> BTreeSet<BTreeSet<String>> {
        let mut clusters = std::collections::BTreeMap::<i64, BTreeSet<String>>::new();
        for c in &self.contacts {
            let set = clusters.entry(self.primary_of(c)).or_default();
            set.extend(c.email.iter().map(|e| format!("e:{e}")));
            set.extend(c.phone.iter().map(|p| format!("p:{p}")));
        }
        clusters.into_values().collect()
    }
}

/// The database's clusters in the same form as [`Model::clusters`].
pub async fn database_clusters(pool: &sqlx::PgPool) -> BTreeSet<BTreeSet<String>> {
    let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(linked_id, id), email, phone_number FROM contact WHERE deleted_at IS NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut clusters = std::collections::BTreeMap::<i64, BTreeSet<String>>::new();
    for (primary, email, phone) in rows {
        let set = clusters.entry(primary).or_default();
        set.extend(email.map(|e| format!("e:{e}")));
        set.extend(phone.map(|p| format!("p:{p}")));
    }
    clusters.into_values().collect()
}
