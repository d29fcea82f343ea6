//! Undoing a merge: which contacts of a merged identity go back to the absorbed side.
//!
//! At the time of the merge the two sides shared no email and no phone (§2), and the
//! merging input brought nothing new. So the absorbed side is the absorbed primary and
//! the secondaries re-pointed with it, plus every contact added since that is
//! connected to them by a shared email or phone: without the merge, those contacts
//! would have joined the absorbed identity.
//!
//! The sides are tied when an input since used identifiers of both together (a
//! *bridge*, in the journal): without the merge, that input would have merged them
//! anyway. Then nothing can be split without guessing, and the undo is refused. (A
//! contact added since can never tie them by itself: it brought a new value, so at
//! most one of its values was known to either side.)
//!
//! Splitting what a quarantined identifier linked ([`quarantine_groups`]) is the same
//! reasoning with the identifier struck out of the evidence instead of one merge.

use super::input::{Email, Phone};
use super::reconcile::StoredContact;
use std::collections::HashMap;

/// A merge as the journal recorded it.
#[derive(Clone, Debug)]
pub(crate) struct RecordedMerge<'a> {
    pub(crate) survivor: i64,
    pub(crate) absorbed: i64,
    /// The absorbed primary's secondaries at the time of the merge.
    pub(crate) moved: &'a [i64],
    /// The highest contact id of the merged identity right after the merge.
    pub(crate) watermark: i64,
    /// Pairs of contacts whose identifiers inputs used together since the merge.
    pub(crate) bridges: &'a [(i64, i64)],
}

/// Since the merge, inputs used identifiers of both sides together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "since the merge, inputs used identifiers of both sides together (contacts {contacts:?}); \
     without the merge they would have merged the identities anyway"
)]
pub(crate) struct Tied {
    /// The contacts of the bridges that tie the sides.
    pub(crate) contacts: Vec<i64>,
}

/// The contacts of `cluster` (the merged identity, whole) that go back to the
/// absorbed primary, in ascending id order; the absorbed primary is among them.
pub(crate) fn absorbed_side(
    cluster: &[StoredContact],
    merge: &RecordedMerge,
) -> Result<Vec<i64>, Tied> {
    let mut sets = DisjointSets::new(cluster.len());
    let mut holders: HashMap<(char, &str), usize> = HashMap::new();
    let index = |id: i64| cluster.iter().position(|c| c.id == id);
    let mut absorbed_seed = None;
    let mut survivor_seed = None;
    for (i, contact) in cluster.iter().enumerate() {
        let values = [
            contact.email.as_ref().map(|e| ('e', e.as_str())),
            contact.phone.as_ref().map(|p| ('p', p.as_str())),
        ];
        for value in values.into_iter().flatten() {
            let first = *holders.entry(value).or_insert(i);
            sets.union(first, i);
        }
        let on_absorbed_side = contact.id == merge.absorbed || merge.moved.contains(&contact.id);
        let seed = if on_absorbed_side {
            &mut absorbed_seed
        } else if contact.id <= merge.watermark {
            &mut survivor_seed
        } else {
            continue;
        };
        match *seed {
            Some(s) => sets.union(s, i),
            None => *seed = Some(i),
        }
    }
    let absorbed = index(merge.absorbed).expect("the absorbed primary is in the cluster");
    let survivor = index(merge.survivor).expect("the survivor is in the cluster");
    let mut contacts = Vec::new();
    for &(a, b) in merge.bridges {
        let (Some(a), Some(b)) = (index(a), index(b)) else {
            continue;
        };
        // A bridge between the two sides as they stand ties them.
        let sides = [sets.find(absorbed), sets.find(survivor)];
        if sides.contains(&sets.find(a))
            && sides.contains(&sets.find(b))
            && sets.find(a) != sets.find(b)
        {
            contacts.extend([cluster[a].id, cluster[b].id]);
        }
        sets.union(a, b);
    }
    let side = sets.find(absorbed);
    if sets.find(survivor) == side {
        contacts.sort_unstable();
        contacts.dedup();
        return Err(Tied { contacts });
    }
    let mut ids: Vec<i64> = (0..cluster.len())
        .filter(|&i| sets.find(i) == side)
        .map(|i| cluster[i].id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// An email or a phone, as a quarantine names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Identifier {
    Email(Email),
    Phone(Phone),
}

impl Identifier {
    /// Whether `contact` holds this identifier in its field.
    fn held_by(&self, contact: &StoredContact) -> bool {
        match self {
            Identifier::Email(e) => contact.email.as_ref() == Some(e),
            Identifier::Phone(p) => contact.phone.as_ref() == Some(p),
        }
    }
}

/// An input the merge journal recorded as using contacts together: a merge not
/// undone, or a bridge.
#[derive(Clone, Debug)]
pub(crate) struct JournalLink<'a> {
    /// The contacts holding the input's email and its phone, in that order (a merge's
    /// `via_ids`, a bridge's `contact_ids`); one contact when the input met only one
    /// value (it was then held by both sides); empty for a merge journalled before
    /// `via_ids` was recorded.
    pub(crate) holders: &'a [i64],
    /// For a merge, the survivor and the absorbed primary: the evidence when
    /// `holders` is empty.
    pub(crate) ends: Option<(i64, i64)>,
}

/// The identities the contacts of `cluster` (one cluster, whole) fall into once
/// `quarantined` no longer links anything: contacts stay together only when tied by
/// evidence that does not use it, that is a shared email or phone other than it, or
/// an input of the journal (`links`) whose values do not include it. A merge
/// journalled without its holders cannot be checked and is kept.
///
/// Each group lists its contact ids oldest first (`created_at`, then id): the first
/// is its primary. Groups are ordered by their primaries' age, so the first holds the
/// cluster's primary.
pub(crate) fn quarantine_groups(
    cluster: &[StoredContact],
    links: &[JournalLink],
    quarantined: &Identifier,
) -> Vec<Vec<i64>> {
    let mut sets = DisjointSets::new(cluster.len());
    let index: HashMap<i64, usize> = cluster.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let mut holders: HashMap<Identifier, usize> = HashMap::new();
    for (i, contact) in cluster.iter().enumerate() {
        let values = [
            contact.email.clone().map(Identifier::Email),
            contact.phone.clone().map(Identifier::Phone),
        ];
        for value in values.into_iter().flatten() {
            if &value == quarantined {
                continue;
            }
            let first = *holders.entry(value).or_insert(i);
            sets.union(first, i);
        }
    }
    for link in links {
        let carried_quarantined = match link.holders {
            // The first holder held the input's email, the second its phone.
            [email, phone] => index
                .get(email)
                .zip(index.get(phone))
                .is_some_and(|(&e, &p)| {
                    let (e, p) = (&cluster[e], &cluster[p]);
                    match quarantined {
                        Identifier::Email(x) => e.email.as_ref() == Some(x),
                        Identifier::Phone(x) => p.phone.as_ref() == Some(x),
                    }
                }),
            // One value met both sides: a shared value, which the loop above counts
            // unless it is the quarantined one.
            [only] => index
                .get(only)
                .is_some_and(|&o| quarantined.held_by(&cluster[o])),
            _ => false,
        };
        if carried_quarantined {
            continue;
        }
        let ends = link.ends.map(|(a, b)| [a, b]);
        let tied: &[i64] = match (link.holders, &ends) {
            ([], Some(ends)) => ends,
            (holders, _) => holders,
        };
        let present: Vec<usize> = tied
            .iter()
            .filter_map(|id| index.get(id).copied())
            .collect();
        if present.len() == tied.len() {
            for pair in present.windows(2) {
                sets.union(pair[0], pair[1]);
            }
        }
    }
    let mut order: Vec<usize> = (0..cluster.len()).collect();
    order.sort_by_key(|&i| (cluster[i].created_at, cluster[i].id));
    let mut groups: Vec<Vec<i64>> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for i in order {
        let root = sets.find(i);
        let g = *group_of_root.entry(root).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(cluster[i].id);
    }
    groups
}

/// Union-find over `0..n`.
struct DisjointSets(Vec<usize>);

impl DisjointSets {
    fn new(n: usize) -> DisjointSets {
        DisjointSets((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a.max(b)] = a.min(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Phone};
    use chrono::{TimeZone, Utc};

    fn contact(
        id: i64,
        email: Option<&str>,
        phone: Option<&str>,
        linked: Option<i64>,
    ) -> StoredContact {
        StoredContact {
            id,
            email: email.map(|e| Email::from_stored(e.into())),
            phone: phone.map(|p| Phone::from_stored(p.into())),
            linked_id: linked,
            created_at: Utc.timestamp_opt(1_700_000_000 + id, 0).unwrap(),
            version: 1,
        }
    }

    /// 1 (a, 1) absorbed 5 (b, 5) with its secondary 6 (c, 5); the watermark is 6.
    fn merged(later: Vec<StoredContact>) -> Vec<StoredContact> {
        let mut cluster = vec![
            contact(1, Some("a@x.io"), Some("1"), None),
            contact(2, Some("a2@x.io"), Some("1"), Some(1)),
            contact(5, Some("b@x.io"), Some("5"), Some(1)),
            contact(6, Some("c@x.io"), Some("5"), Some(1)),
        ];
        cluster.extend(later);
        cluster
    }

    const MERGE: RecordedMerge<'static> = RecordedMerge {
        survivor: 1,
        absorbed: 5,
        moved: &[6],
        watermark: 6,
        bridges: &[],
    };

    #[test]
    fn the_absorbed_side_takes_back_its_contacts_and_what_joined_it_since() {
        let cluster = merged(vec![
            // Joined through the absorbed side's phone, then through its new email.
            contact(9, Some("d@x.io"), Some("5"), Some(1)),
            contact(10, Some("d@x.io"), Some("7"), Some(1)),
            // Joined through the survivor's side.
            contact(11, Some("e@x.io"), Some("1"), Some(1)),
        ]);
        assert_eq!(absorbed_side(&cluster, &MERGE), Ok(vec![5, 6, 9, 10]));
    }

    fn shop() -> Identifier {
        Identifier::Phone(Phone::from_stored("+15550100".into()))
    }

    #[test]
    fn contacts_tied_only_by_the_quarantined_identifier_fall_apart() {
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            contact(2, Some("b@x.io"), Some("+15550100"), Some(1)),
            contact(3, Some("c@x.io"), Some("+15550100"), Some(1)),
        ];
        assert_eq!(
            quarantine_groups(&cluster, &[], &shop()),
            vec![vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn another_shared_value_keeps_contacts_together() {
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            contact(2, Some("b@x.io"), Some("+15550100"), Some(1)),
            // a's own phone, and later a's email with another phone.
            contact(3, Some("a@x.io"), Some("777"), Some(1)),
            contact(4, Some("d@x.io"), Some("777"), Some(1)),
        ];
        assert_eq!(
            quarantine_groups(&cluster, &[], &shop()),
            vec![vec![1, 3, 4], vec![2]]
        );
    }

    #[test]
    fn a_merge_bridged_by_the_quarantined_identifier_is_split() {
        // 1 (a, shop) absorbed 2 (b, 9) through the input (b, shop): via [2, 1].
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            contact(2, Some("b@x.io"), Some("9"), Some(1)),
        ];
        let links = [JournalLink {
            holders: &[2, 1],
            ends: Some((1, 2)),
        }];
        assert_eq!(
            quarantine_groups(&cluster, &links, &shop()),
            vec![vec![1], vec![2]]
        );
    }

    #[test]
    fn a_merge_bridged_by_another_value_is_kept() {
        // 1 (a, shop) absorbed 2 (b, 9) through the input (a, 9): via [1, 2]. That
        // input did not carry the shop's phone, although contact 1 holds it.
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            contact(2, Some("b@x.io"), Some("9"), Some(1)),
            contact(3, Some("c@x.io"), Some("+15550100"), Some(1)),
        ];
        let links = [JournalLink {
            holders: &[1, 2],
            ends: Some((1, 2)),
        }];
        assert_eq!(
            quarantine_groups(&cluster, &links, &shop()),
            vec![vec![1, 2], vec![3]]
        );
        // A bridge is evidence too: the input (c, 9) used 3 and 2 together.
        let links = [
            links[0].clone(),
            JournalLink {
                holders: &[3, 2],
                ends: None,
            },
        ];
        assert_eq!(
            quarantine_groups(&cluster, &links, &shop()),
            vec![vec![1, 2, 3]]
        );
    }

    #[test]
    fn a_merge_through_one_shared_value_counts_only_when_it_is_not_the_quarantined_one() {
        // A released identifier met two identities alone: via is its one holder.
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            contact(2, Some("b@x.io"), Some("+15550100"), Some(1)),
        ];
        let links = [JournalLink {
            holders: &[1],
            ends: Some((1, 2)),
        }];
        assert_eq!(
            quarantine_groups(&cluster, &links, &shop()),
            vec![vec![1], vec![2]]
        );
        // A merge journalled before its holders were recorded cannot be checked.
        let links = [JournalLink {
            holders: &[],
            ends: Some((1, 2)),
        }];
        assert_eq!(
            quarantine_groups(&cluster, &links, &shop()),
            vec![vec![1, 2]]
        );
    }

    #[test]
    fn the_oldest_contact_of_each_group_comes_first() {
        // Contact 5 is older than 3 although its id is higher.
        let mut late = contact(3, Some("c@x.io"), Some("+15550100"), Some(1));
        late.created_at = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        let cluster = vec![
            contact(1, Some("a@x.io"), Some("+15550100"), None),
            late,
            contact(5, Some("c@x.io"), Some("8"), Some(1)),
        ];
        assert_eq!(
            quarantine_groups(&cluster, &[], &shop()),
            vec![vec![1], vec![5, 3]]
        );
    }

    #[test]
    fn an_input_that_used_both_sides_together_since_ties_them() {
        let cluster = merged(vec![contact(9, Some("d@x.io"), Some("5"), Some(1))]);
        // (d@x.io, 1): known to 9 (absorbed side) and to 1 (survivor's side).
        let merge = RecordedMerge {
            bridges: &[(9, 1)],
            ..MERGE
        };
        assert_eq!(
            absorbed_side(&cluster, &merge),
            Err(Tied {
                contacts: vec![1, 9]
            })
        );
        // A bridge inside one side ties nothing.
        let merge = RecordedMerge {
            bridges: &[(9, 6), (2, 1)],
            ..MERGE
        };
        assert_eq!(absorbed_side(&cluster, &merge), Ok(vec![5, 6, 9]));
    }
}
