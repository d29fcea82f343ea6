//! The linking rules of identifier kinds (docs/contract.md §9), as a pure function:
//! given the identities an input meets and the identifiers it carries, which of
//! them may merge, which links are refused and why, and which of the input's values
//! the merged identity takes.
//!
//! The rules, in the order they outrank each other:
//! 1. A unique kind outranks every shared identifier. The input belongs to the
//!    oldest identity it meets that holds one of its unique values; failing that, to
//!    the oldest that holds no *other* value of the input's unique kinds; failing
//!    that, to a new identity. Every identity met that would bring a second value of
//!    a unique kind is kept apart: `unique_conflict`.
//! 2. No identity holds more values of a kind than its `max_per_identity`: a merge
//!    that would, and the input's new values of a kind that would not fit, are
//!    refused: `identifier_limit`.
//! 3. Whatever the caller refuses besides (keep-apart decisions, caps: the `veto`).
//!
//! Merges are decided one identity at a time, oldest first, each against what the
//! identities accepted so far hold together, exactly as `reconcile.rs` decides caps
//! and keep-apart decisions; the oldest identity accepted stays primary. With no
//! identifier values anywhere, the input merges every identity it meets that the
//! veto lets through, into the oldest: today's rule (§3), unchanged.
//!
//! Invariant (a property test checks it over random streams of inputs): if every
//! identity met respects the rules, so does every identity after the decision.

use super::identifiers::{IdentifierKinds, IdentifierSet, KindName};

/// Why the identifier rules refused a link; the review queue's reasons
/// `unique_conflict` and `identifier_limit` once the queue takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IdentifierRule {
    /// The link would give one identity two values of a unique kind.
    UniqueConflict,
    /// The link would give one identity more values of a kind than its
    /// `max_per_identity`.
    IdentifierLimit,
}

impl IdentifierRule {
    /// The code in the review queue and in metrics.
    pub(crate) fn code(self) -> &'static str {
        match self {
            IdentifierRule::UniqueConflict => "unique_conflict",
            IdentifierRule::IdentifierLimit => "identifier_limit",
        }
    }
}

/// An identity an input meets: `identity` is the caller's handle on it (a node, an
/// id), `age` orders identities by their primary's creation, oldest first.
#[derive(Clone, Debug)]
pub(crate) struct Met<I, A> {
    pub identity: I,
    pub age: A,
    /// The values of the configured kinds that the identity holds.
    pub identifiers: IdentifierSet,
}

/// Why a link was refused: by an identifier rule, or by the caller's veto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal<V> {
    Rule(IdentifierRule),
    Veto(V),
}

/// A refused merge with an identity met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefusedMerge<I, V> {
    pub other: I,
    pub reason: Refusal<V>,
}

/// Values of one kind that the input carried and the identity did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefusedValues {
    pub kind: KindName,
    pub reason: IdentifierRule,
}

/// The decision for one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Linking<I, V> {
    /// The identity the input belongs to (rule 1); `None`: a new identity.
    pub home: Option<I>,
    /// The identities that end up as one, oldest first: the first is the survivor
    /// (its primary stays primary), the others are absorbed into it. Empty when the
    /// input starts a new identity.
    pub merged: Vec<I>,
    /// Identities met and kept apart, oldest first.
    pub refused: Vec<RefusedMerge<I, V>>,
    /// The input's values that the (merged) identity did not hold and takes.
    pub added: IdentifierSet,
    /// Kinds whose new values the identity does not take (none of that kind).
    pub refused_values: Vec<RefusedValues>,
}

/// Decides one input (see the module doc). `met` may be in any order; `veto(group,
/// other)` is asked, once the identifier rules allow it, whether the identities
/// `group` (accepted so far, home first) may merge with `other`.
pub(crate) fn link<I, A, V>(
    kinds: &IdentifierKinds,
    input: &IdentifierSet,
    met: &[Met<I, A>],
    mut veto: impl FnMut(&[I], &I) -> Option<V>,
) -> Linking<I, V>
where
    I: Clone,
    A: Ord,
{
    let mut order: Vec<&Met<I, A>> = met.iter().collect();
    order.sort_by(|a, b| a.age.cmp(&b.age));

    let home = home(kinds, input, &order);
    let mut group: Vec<&Met<I, A>> = home.iter().map(|&h| order[h]).collect();
    let mut held = home.map_or_else(IdentifierSet::default, |h| order[h].identifiers.clone());
    // The input's unique values outrank every shared value: merges are checked as
    // if the identity held them already (those it cannot take are refused below).
    let claims = claims(kinds, &held, input);
    let mut refused: Vec<RefusedMerge<I, V>> = Vec::new();
    let mut known = IdentifierSet::default();
    for (i, other) in order.iter().enumerate() {
        if Some(i) == home {
            continue;
        }
        let mut bound = held.clone();
        bound.extend(&claims);
        let reason = match (home, merge_breaks(kinds, &bound, &other.identifiers)) {
            // Nothing to merge with: every identity met holds another unique value.
            (None, _) => Some(Refusal::Rule(IdentifierRule::UniqueConflict)),
            (_, Some(rule)) => Some(Refusal::Rule(rule)),
            (_, None) => {
                let handles: Vec<I> = group.iter().map(|m| m.identity.clone()).collect();
                veto(&handles, &other.identity).map(Refusal::Veto)
            }
        };
        match reason {
            Some(reason) => {
                known.extend(&other.identifiers);
                refused.push(RefusedMerge {
                    other: other.identity.clone(),
                    reason,
                });
            }
            None => {
                held.extend(&other.identifiers);
                group.push(other);
            }
        }
    }
    group.sort_by(|a, b| a.age.cmp(&b.age));

    // A value the input shares with an identity kept apart is that identity's: the
    // input's identity does not take it too (as in `reconcile.rs`, a refused merge
    // never leads to an insert). A new identity takes every value of its input.
    if home.is_none() {
        known = IdentifierSet::default();
    }
    let (added, refused_values) = growth(kinds, &held, &known, input);
    Linking {
        home: home.map(|h| order[h].identity.clone()),
        merged: group.iter().map(|m| m.identity.clone()).collect(),
        refused,
        added,
        refused_values,
    }
}

/// Rule 1: the position in `order` (oldest first) of the identity the input
/// belongs to, or `None` for a new one.
fn home<I, A>(
    kinds: &IdentifierKinds,
    input: &IdentifierSet,
    order: &[&Met<I, A>],
) -> Option<usize> {
    let unique: Vec<&KindName> = input
        .kinds()
        .filter(|k| kinds.get(k).is_some_and(|k| k.unique()))
        .collect();
    let holds_ours = |m: &Met<I, A>| {
        unique
            .iter()
            .any(|k| input.values(k).any(|v| m.identifiers.contains(k, v)))
    };
    let holds_other = |m: &Met<I, A>| {
        unique
            .iter()
            .any(|k| m.identifiers.values(k).any(|v| !input.contains(k, v)))
    };
    order
        .iter()
        .position(|m| holds_ours(m))
        .or_else(|| order.iter().position(|m| !holds_other(m)))
}

/// The input's values of unique kinds that an identity holding `held` can take:
/// of each unique kind, the input's value when `held` has none of that kind or that
/// very value.
fn claims(kinds: &IdentifierKinds, held: &IdentifierSet, input: &IdentifierSet) -> IdentifierSet {
    let mut claims = IdentifierSet::default();
    for name in input.kinds() {
        if !kinds.get(name).is_some_and(|k| k.unique()) {
            continue;
        }
        let compatible = held.values(name).all(|v| input.contains(name, v));
        if compatible {
            for value in input.values(name) {
                claims.insert(name.clone(), value.clone());
            }
        }
    }
    claims
}

/// Rules 1 and 2 for one merge: whether what an identity holding `held` and one
/// holding `other` would hold together breaks a kind's rule.
fn merge_breaks(
    kinds: &IdentifierKinds,
    held: &IdentifierSet,
    other: &IdentifierSet,
) -> Option<IdentifierRule> {
    let mut together = held.clone();
    together.extend(other);
    kinds.iter().find_map(|kind| {
        let max = kind.max_per_identity()?;
        (together.count(kind.name()) > max).then_some(if kind.unique() {
            IdentifierRule::UniqueConflict
        } else {
            IdentifierRule::IdentifierLimit
        })
    })
}

/// Rules 1 and 2 for the input's own values: those neither `held` nor `elsewhere`
/// holds, kind by kind, all of a kind or none of it.
fn growth(
    kinds: &IdentifierKinds,
    held: &IdentifierSet,
    elsewhere: &IdentifierSet,
    input: &IdentifierSet,
) -> (IdentifierSet, Vec<RefusedValues>) {
    let mut added = IdentifierSet::default();
    let mut refused = Vec::new();
    for name in input.kinds() {
        let new: Vec<_> = input
            .values(name)
            .filter(|v| !held.contains(name, v) && !elsewhere.contains(name, v))
            .collect();
        if new.is_empty() {
            continue;
        }
        let rule = kinds.get(name).and_then(|kind| {
            let max = kind.max_per_identity()?;
            (held.count(name) + new.len() > max).then_some(if kind.unique() {
                IdentifierRule::UniqueConflict
            } else {
                IdentifierRule::IdentifierLimit
            })
        });
        match rule {
            Some(reason) => refused.push(RefusedValues {
                kind: name.clone(),
                reason,
            }),
            None => {
                for value in new {
                    added.insert(name.clone(), value.clone());
                }
            }
        }
    }
    (added, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identifiers::IdentifierValue;
    use crate::domain::Normalization;
    use serde_json::{json, Value};

    fn kinds() -> IdentifierKinds {
        let settings = json!({
            "customerId": {"unique": true},
            "deviceId": {"max_per_identity": 2},
            "mail": {},
        });
        serde_json::from_value(settings).unwrap()
    }

    fn set(values: Value) -> IdentifierSet {
        kinds()
            .parse(Some(&values), Normalization::Standard)
            .unwrap()
    }

    fn met(id: i64, values: Value) -> Met<i64, i64> {
        Met {
            identity: id,
            age: id,
            identifiers: set(values),
        }
    }

    fn no_veto(_: &[i64], _: &i64) -> Option<()> {
        None
    }

    fn rule(other: i64, rule: IdentifierRule) -> RefusedMerge<i64, ()> {
        RefusedMerge {
            other,
            reason: Refusal::Rule(rule),
        }
    }

    #[test]
    fn a_household_phone_shared_by_two_account_holders_leaves_two_identities() {
        // 1 and 2 hold different account ids; the input shares `mail` with both.
        let decision = link(
            &kinds(),
            &set(json!({"mail": ["m1", "m2"]})),
            &[
                met(2, json!({"customerId": "C-2", "mail": "m2"})),
                met(1, json!({"customerId": "C-1", "mail": "m1"})),
            ],
            no_veto,
        );
        assert_eq!(decision.home, Some(1));
        assert_eq!(decision.merged, [1]);
        assert_eq!(decision.refused, [rule(2, IdentifierRule::UniqueConflict)]);
        // The shared value m2 stays 2's alone.
        assert!(decision.added.is_empty() && decision.refused_values.is_empty());
    }

    #[test]
    fn an_input_belongs_to_the_identity_of_its_unique_value_even_when_younger() {
        // 1 shares the email but holds C-1; 2 holds the input's C-2.
        let decision = link(
            &kinds(),
            &set(json!({"customerId": "C-2", "mail": ["m1", "m3"]})),
            &[
                met(1, json!({"customerId": "C-1", "mail": "m1"})),
                met(2, json!({"customerId": "C-2"})),
                met(3, json!({"mail": "m3"})),
            ],
            no_veto,
        );
        assert_eq!(decision.home, Some(2));
        // 3 holds no account id: it joins; 2 is older, so 2 stays primary.
        assert_eq!(decision.merged, [2, 3]);
        assert_eq!(decision.refused, [rule(1, IdentifierRule::UniqueConflict)]);
        // m1 is 1's: the input's identity does not take it too.
        assert!(decision.added.is_empty());
    }

    #[test]
    fn a_new_unique_value_that_every_identity_met_contradicts_starts_a_new_identity() {
        let decision = link(
            &kinds(),
            &set(json!({"customerId": "C-2", "mail": "m1"})),
            &[met(1, json!({"customerId": "C-1", "mail": "m1"}))],
            no_veto,
        );
        assert_eq!(decision.home, None);
        assert!(decision.merged.is_empty());
        assert_eq!(decision.refused, [rule(1, IdentifierRule::UniqueConflict)]);
        assert_eq!(
            decision.added,
            set(json!({"customerId": "C-2", "mail": "m1"}))
        );
    }

    #[test]
    fn an_identity_without_the_unique_kind_takes_the_value_and_may_be_older() {
        let decision = link(
            &kinds(),
            &set(json!({"customerId": "C-1", "mail": "m1"})),
            &[
                met(1, json!({"mail": "m1"})),
                met(2, json!({"customerId": "C-1"})),
            ],
            no_veto,
        );
        assert_eq!(decision.home, Some(2));
        assert_eq!(decision.merged, [1, 2]);
        assert!(decision.refused.is_empty());
    }

    #[test]
    fn a_merge_or_a_growth_past_a_kinds_limit_is_refused() {
        let kinds = kinds();
        let merge = link(
            &kinds,
            &set(json!({"mail": ["m1", "m2"]})),
            &[
                met(1, json!({"deviceId": ["d1", "d2"], "mail": "m1"})),
                met(2, json!({"deviceId": "d3", "mail": "m2"})),
            ],
            no_veto,
        );
        assert_eq!(merge.refused, [rule(2, IdentifierRule::IdentifierLimit)]);
        let growth = link(
            &kinds,
            &set(json!({"deviceId": "d3", "mail": ["m1", "m4"]})),
            &[met(1, json!({"deviceId": ["d1", "d2"], "mail": "m1"}))],
            no_veto,
        );
        assert_eq!(growth.merged, [1]);
        assert_eq!(growth.added, set(json!({"mail": "m4"})));
        assert_eq!(
            growth.refused_values,
            [RefusedValues {
                kind: KindName::parse("deviceId").unwrap(),
                reason: IdentifierRule::IdentifierLimit,
            }]
        );
    }

    #[test]
    fn a_second_unique_value_is_refused_when_the_input_belongs_by_another_unique_kind() {
        let kinds: IdentifierKinds = serde_json::from_value(json!({
            "customerId": {"unique": true},
            "taxId": {"unique": true},
        }))
        .unwrap();
        let input = kinds
            .parse(
                Some(&json!({"customerId": "C-1", "taxId": "T-2"})),
                Normalization::Standard,
            )
            .unwrap();
        let holding = kinds
            .parse(
                Some(&json!({"customerId": "C-1", "taxId": "T-1"})),
                Normalization::Standard,
            )
            .unwrap();
        let decision = link(
            &kinds,
            &input,
            &[Met {
                identity: 1,
                age: 1,
                identifiers: holding,
            }],
            no_veto,
        );
        assert_eq!(decision.merged, [1]);
        assert_eq!(decision.refused_values.len(), 1);
        assert_eq!(
            decision.refused_values[0].reason,
            IdentifierRule::UniqueConflict
        );
    }

    #[test]
    fn the_veto_sees_the_group_accepted_so_far_and_its_refusals_are_reported() {
        let mut asked = Vec::new();
        let decision = link(
            &kinds(),
            &set(json!({"mail": ["m1", "m2", "m3"]})),
            &[
                met(3, json!({"mail": "m3"})),
                met(1, json!({"mail": "m1"})),
                met(2, json!({"mail": "m2"})),
            ],
            |group: &[i64], other: &i64| {
                asked.push((group.to_vec(), *other));
                (*other == 2).then_some("kept apart")
            },
        );
        assert_eq!(asked, [(vec![1], 2), (vec![1], 3)]);
        assert_eq!(decision.merged, [1, 3]);
        assert_eq!(
            decision.refused,
            [RefusedMerge {
                other: 2,
                reason: Refusal::Veto("kept apart"),
            }]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A model store: identities with their age and holdings, where an input
        /// meets every identity sharing a linking value with it. Each kind's
        /// rules are checked after every input.
        fn apply(kinds: &IdentifierKinds, inputs: &[IdentifierSet]) -> Vec<IdentifierSet> {
            let mut identities: Vec<(usize, IdentifierSet)> = Vec::new();
            for (n, input) in inputs.iter().enumerate() {
                let met: Vec<Met<usize, usize>> = identities
                    .iter()
                    .filter(|(_, held)| kinds.linking(input).any(|(k, v)| held.contains(k, v)))
                    .map(|(age, held)| Met {
                        identity: *age,
                        age: *age,
                        identifiers: held.clone(),
                    })
                    .collect();
                let decision = link(kinds, input, &met, |_: &[usize], _: &usize| None::<()>);
                let mut merged = IdentifierSet::default();
                for age in &decision.merged {
                    let at = identities.iter().position(|(a, _)| a == age).unwrap();
                    merged.extend(&identities.remove(at).1);
                }
                merged.extend(&decision.added);
                let age = decision.merged.first().copied().unwrap_or(n + 1_000);
                identities.push((age, merged));
                identities.sort_by_key(|(age, _)| *age);
            }
            identities.into_iter().map(|(_, held)| held).collect()
        }

        fn rules() -> IdentifierKinds {
            serde_json::from_value(json!({
                "customerId": {"unique": true},
                "deviceId": {"max_per_identity": 2},
                "mail": {},
                "tag": {"links": false, "max_per_identity": 3},
            }))
            .unwrap()
        }

        /// Inputs drawing from a few values of each kind, so that they meet often.
        fn inputs() -> impl Strategy<Value = Vec<IdentifierSet>> {
            let input = (
                prop::option::of(0..3u8),
                prop::collection::btree_set(0..4u8, 0..=2),
                prop::collection::btree_set(0..5u8, 0..=2),
                prop::collection::btree_set(0..4u8, 0..=3),
            )
                .prop_map(|(customer, devices, mails, tags)| {
                    let mut set = IdentifierSet::default();
                    let mut put = |kind: &str, value: String| {
                        set.insert(
                            KindName::parse(kind).unwrap(),
                            IdentifierValue::from_stored(value),
                        );
                    };
                    customer
                        .into_iter()
                        .for_each(|c| put("customerId", format!("C-{c}")));
                    devices
                        .into_iter()
                        .for_each(|d| put("deviceId", format!("d{d}")));
                    mails.into_iter().for_each(|m| put("mail", format!("m{m}")));
                    tags.into_iter().for_each(|t| put("tag", format!("t{t}")));
                    set
                });
            prop::collection::vec(input, 1..25)
        }

        proptest! {
            #[test]
            fn whatever_the_order_no_identity_breaks_a_kinds_rule(
                inputs in inputs().prop_shuffle(),
            ) {
                let kinds = rules();
                for held in apply(&kinds, &inputs) {
                    for kind in kinds.iter() {
                        if let Some(max) = kind.max_per_identity() {
                            prop_assert!(held.count(kind.name()) <= max, "{:?}: {}", kind.name(), held.count(kind.name()));
                        }
                    }
                }
            }

            #[test]
            fn without_identifier_values_the_oldest_absorbs_every_identity_the_veto_allows(
                ages in prop::collection::btree_set(0..1_000i64, 0..8),
                vetoed in prop::collection::btree_set(0..1_000i64, 0..4),
                shuffle in any::<u64>(),
            ) {
                let mut met: Vec<Met<i64, i64>> = ages
                    .iter()
                    .map(|&age| Met { identity: age, age, identifiers: IdentifierSet::default() })
                    .collect();
                let turn = usize::try_from(shuffle).unwrap_or(0) % met.len().max(1);
                met.rotate_left(turn);
                let decision = link(&rules(), &IdentifierSet::default(), &met, |group: &[i64], other: &i64| {
                    // Today's loop asks about the oldest and each younger one in order.
                    assert_eq!(group[0], *ages.first().unwrap());
                    vetoed.contains(other).then_some(())
                });
                // Today's rule: the oldest stays primary, the others merge unless refused.
                let oldest = ages.first().copied();
                prop_assert_eq!(decision.home, oldest);
                let expected: Vec<i64> = ages
                    .iter()
                    .copied()
                    .filter(|age| Some(*age) == oldest || !vetoed.contains(age))
                    .collect();
                prop_assert_eq!(&decision.merged, &expected);
                let refused: Vec<i64> = decision.refused.iter().map(|r| r.other).collect();
                let expected: Vec<i64> = ages
                    .iter()
                    .copied()
                    .filter(|age| Some(*age) != oldest && vetoed.contains(age))
                    .collect();
                prop_assert_eq!(refused, expected);
                prop_assert!(decision.refused_values.is_empty() && decision.added.is_empty());
            }
        }
    }
}
