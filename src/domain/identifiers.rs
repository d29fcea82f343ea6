//! Identifier kinds beyond email and phone (docs/contract.md §9): the catalogue the
//! operator configures under `[identifiers.<kind>]`, the checked value of one
//! identifier, and the parse of an input's `"identifiers"` object.
//!
//! Email and phone are not kinds of this catalogue: they keep their columns, their
//! rules and their JSON members. A kind may reuse their parsers (`format = "email"`
//! or `"phone"`); any other value is opaque text, normalised as every identifier is
//! (invisible characters out, NFC, trimmed) and bounded in length, but never folded
//! in case: account ids and card numbers are what the shop wrote.
//!
//! Not wired yet: the store, the HTTP handlers and the worker still read email and
//! phone only (docs/design/identifier-kinds.md says what the wiring adds).

use super::input::{json_u64, Email, InputError, Phone};
use super::kind::NameFault;
pub use super::kind::{KindName, MAX_KIND_NAME_LEN};
use super::normalize::{longer_than, strip_invisible, Normalization};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Longest opaque value by default, in characters.
pub const DEFAULT_MAX_LENGTH: usize = 128;
/// The most `max_length` may be: 512 characters of at most 4 bytes each stay below
/// what a PostgreSQL B-tree index entry can hold (about 2,700 bytes).
pub const MAX_MAX_LENGTH: usize = 512;
/// Most values of one kind in one input, for kinds without `max_per_identity`: an
/// input is one order, and this bounds the work one message can ask for.
pub const MAX_VALUES_PER_INPUT: usize = 50;

/// How the values of a kind are parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// Text, trimmed, without invisible characters, NFC, at most `max_length`
    /// characters; compared exactly (case included).
    #[default]
    Opaque,
    /// An email address, parsed and normalised as `email` is.
    Email,
    /// A phone number, parsed and normalised as `phoneNumber` is.
    Phone,
}

/// One `[identifiers.<kind>]` table as written in the settings (`Default` is what
/// an empty table means).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KindSettings {
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub max_per_identity: Option<usize>,
    #[serde(default = "yes")]
    pub links: bool,
    #[serde(default)]
    pub format: ValueFormat,
    #[serde(default)]
    pub max_length: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Default for KindSettings {
    fn default() -> KindSettings {
        KindSettings {
            unique: false,
            max_per_identity: None,
            links: yes(),
            format: ValueFormat::default(),
            max_length: None,
        }
    }
}

/// Why the `[identifiers]` settings were refused at start. Kind names are the
/// operator's own words, not personal data: messages name them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KindSettingsError {
    #[error(
        "identifier kind {0:?}: a kind's name is ASCII letters and digits, starting with a \
         letter, at most {MAX_KIND_NAME_LEN} characters"
    )]
    BadName(String),
    #[error(
        "identifier kind {0:?}: `email` and `phoneNumber` are built in; a kind that takes \
         email addresses or phone numbers says `format = \"email\"` or `\"phone\"`"
    )]
    Reserved(String),
    #[error(
        "identifier kinds {0:?} and {1:?} differ only in case: environment variables and \
         people would confuse them"
    )]
    SameName(String, String),
    #[error("identifier kind {0:?}: max_per_identity must be at least 1")]
    ZeroLimit(String),
    #[error(
        "identifier kind {0:?}: unique = true means one value per identity, which \
         contradicts max_per_identity = {1}"
    )]
    UniqueWithLimit(String, usize),
    #[error("identifier kind {0:?}: max_length must be between 1 and {MAX_MAX_LENGTH}")]
    BadMaxLength(String),
    #[error(
        "identifier kind {0:?}: max_length applies to opaque values; email and phone \
         formats have their own bounds"
    )]
    MaxLengthWithFormat(String),
}

/// A configured kind and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifierKind {
    name: KindName,
    unique: bool,
    max_per_identity: Option<usize>,
    links: bool,
    format: ValueFormat,
    max_length: usize,
}

impl IdentifierKind {
    fn from_settings(name: &str, settings: KindSettings) -> Result<Self, KindSettingsError> {
        let name = match KindName::parse(name) {
            Ok(name) => name,
            Err(NameFault::Shape) => return Err(KindSettingsError::BadName(name.to_owned())),
            Err(NameFault::Reserved) => return Err(KindSettingsError::Reserved(name.to_owned())),
        };
        let named = || name.as_str().to_owned();
        match settings.max_per_identity {
            Some(0) => return Err(KindSettingsError::ZeroLimit(named())),
            Some(max) if settings.unique && max > 1 => {
                return Err(KindSettingsError::UniqueWithLimit(named(), max))
            }
            _ => {}
        }
        let max_length = match (settings.format, settings.max_length) {
            (ValueFormat::Opaque, None) => DEFAULT_MAX_LENGTH,
            (ValueFormat::Opaque, Some(max)) if (1..=MAX_MAX_LENGTH).contains(&max) => max,
            (ValueFormat::Opaque, Some(_)) => return Err(KindSettingsError::BadMaxLength(named())),
            (_, None) => 0,
            (_, Some(_)) => return Err(KindSettingsError::MaxLengthWithFormat(named())),
        };
        Ok(IdentifierKind {
            unique: settings.unique,
            // `unique` is the limit 1, whatever else is written.
            max_per_identity: if settings.unique {
                Some(1)
            } else {
                settings.max_per_identity
            },
            links: settings.links,
            format: settings.format,
            max_length,
            name,
        })
    }

    pub fn name(&self) -> &KindName {
        &self.name
    }

    /// An identity holds at most one value of this kind; an input carries one.
    pub fn unique(&self) -> bool {
        self.unique
    }

    /// Most distinct values of this kind one identity holds (1 for a unique kind).
    pub fn max_per_identity(&self) -> Option<usize> {
        self.max_per_identity
    }

    /// Whether a shared value of this kind links inputs (false: stored and shown only).
    pub fn links(&self) -> bool {
        self.links
    }

    pub fn format(&self) -> ValueFormat {
        self.format
    }

    /// Most values of this kind one input may carry.
    fn max_per_input(&self) -> usize {
        self.max_per_identity.unwrap_or(MAX_VALUES_PER_INPUT)
    }

    /// Parses one raw value of this kind. `field` names it in errors
    /// (`identifiers.customerId`).
    fn parse_value(
        &self,
        raw: &str,
        mode: Normalization,
    ) -> Result<IdentifierValue, IdentifierFault> {
        let parsed = match self.format {
            ValueFormat::Opaque => opaque(raw, self.max_length)?,
            ValueFormat::Email => Email::parse(raw, mode)
                .map_err(IdentifierFault::from_input)?
                .map(|e| e.as_str().to_owned()),
            ValueFormat::Phone => Phone::parse(raw, mode)
                .map_err(IdentifierFault::from_input)?
                .map(|p| p.as_str().to_owned()),
        };
        parsed.map(IdentifierValue).ok_or(IdentifierFault::Empty)
    }
}

/// An opaque value: invisible characters out, NFC, trimmed; `None` when nothing is
/// left. Bounded as sent and once normalised (NFC can lengthen a few characters).
fn opaque(raw: &str, max: usize) -> Result<Option<String>, IdentifierFault> {
    if longer_than(raw, max) {
        return Err(IdentifierFault::TooLong(max));
    }
    let cleaned = strip_invisible(raw);
    let trimmed = cleaned.trim();
    if trimmed.chars().any(char::is_control) {
        return Err(IdentifierFault::Invalid("text without control characters"));
    }
    if trimmed.chars().count() > max {
        return Err(IdentifierFault::TooLong(max));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// What is wrong with one value, before the kind is named.
enum IdentifierFault {
    Empty,
    TooLong(usize),
    Invalid(&'static str),
}

impl IdentifierFault {
    /// The email and phone parsers' errors, for a kind that reuses them.
    fn from_input(error: InputError) -> IdentifierFault {
        match error {
            InputError::TooLong { max, .. } => IdentifierFault::TooLong(max),
            InputError::Invalid { expected, .. } => IdentifierFault::Invalid(expected),
            _ => IdentifierFault::Invalid("a value of the kind's format"),
        }
    }

    fn named(self, kind: &KindName) -> InputError {
        let kind = kind.clone();
        match self {
            IdentifierFault::Empty => InputError::EmptyIdentifier { kind },
            IdentifierFault::TooLong(max) => InputError::IdentifierTooLong { kind, max },
            IdentifierFault::Invalid(expected) => InputError::InvalidIdentifier { kind, expected },
        }
    }
}

/// A checked, normalised value of some kind. Its text is personal data as much as
/// an email is: `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifierValue(String);

impl IdentifierValue {
    /// Wraps a value read back from the database, where only parsed values are written.
    pub fn from_stored(value: String) -> IdentifierValue {
        IdentifierValue(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentifierValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentifierValue(..)")
    }
}

/// Identifier values by kind: what an input carries, or what an identity holds.
/// Kinds in name order, each kind's values distinct and in order (so that two sets
/// with the same values are equal, and locks taken in this order never cross).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifierSet(BTreeMap<KindName, BTreeSet<IdentifierValue>>);

impl IdentifierSet {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// The values of `kind` (none when absent).
    pub fn values(&self, kind: &KindName) -> impl Iterator<Item = &IdentifierValue> {
        self.0.get(kind).into_iter().flatten()
    }

    /// How many distinct values of `kind` there are.
    pub fn count(&self, kind: &KindName) -> usize {
        self.0.get(kind).map_or(0, BTreeSet::len)
    }

    /// Every (kind, value), kinds in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&KindName, &IdentifierValue)> {
        self.0
            .iter()
            .flat_map(|(kind, values)| values.iter().map(move |v| (kind, v)))
    }

    /// The kinds present, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &KindName> {
        self.0
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(kind, _)| kind)
    }

    /// Adds a value; false when it was there already.
    pub fn insert(&mut self, kind: KindName, value: IdentifierValue) -> bool {
        self.0.entry(kind).or_default().insert(value)
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &IdentifierSet) {
        for (kind, value) in other.iter() {
            self.insert(kind.clone(), value.clone());
        }
    }

    /// Whether `value` of `kind` is in the set.
    pub fn contains(&self, kind: &KindName, value: &IdentifierValue) -> bool {
        self.0
            .get(kind)
            .is_some_and(|values| values.contains(value))
    }
}

/// The configured kinds (`[identifiers]`), checked at start; none by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, KindSettings>")]
pub struct IdentifierKinds(BTreeMap<KindName, IdentifierKind>);

impl TryFrom<BTreeMap<String, KindSettings>> for IdentifierKinds {
    type Error = KindSettingsError;

    fn try_from(settings: BTreeMap<String, KindSettings>) -> Result<Self, KindSettingsError> {
        let mut kinds: BTreeMap<KindName, IdentifierKind> = BTreeMap::new();
        for (name, kind) in settings {
            let kind = IdentifierKind::from_settings(&name, kind)?;
            if let Some(other) = kinds
                .keys()
                .find(|k| k.as_str().eq_ignore_ascii_case(kind.name.as_str()))
            {
                return Err(KindSettingsError::SameName(other.as_str().to_owned(), name));
            }
            kinds.insert(kind.name.clone(), kind);
        }
        Ok(IdentifierKinds(kinds))
    }
}

impl IdentifierKinds {
    /// The kind named `name`, if configured.
    pub fn get(&self, name: &KindName) -> Option<&IdentifierKind> {
        self.0.get(name)
    }

    /// Every configured kind, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &IdentifierKind> {
        self.0.values()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of `set` that link (their kind is configured with `links = true`):
    /// what a store looks identities up by, and locks.
    pub fn linking<'a>(
        &'a self,
        set: &'a IdentifierSet,
    ) -> impl Iterator<Item = (&'a KindName, &'a IdentifierValue)> {
        set.iter()
            .filter(|(kind, _)| self.get(kind).is_some_and(IdentifierKind::links))
    }

    /// Parses the `identifiers` member of an input (HTTP body or event): absent or
    /// null is no identifiers; otherwise an object from kind names to a string (or,
    /// for a phone-format kind, a non-negative integer) or, for a kind that is not
    /// unique, a list of them.
    ///
    /// Refused, nothing kept: a kind that is not configured, a value of the wrong JSON
    /// type, a list for a unique kind, more values than the kind allows one identity
    /// (or [`MAX_VALUES_PER_INPUT`]), a value empty once normalised, too long, or not
    /// of its format. Errors name the kind, never the value. Values repeated in one
    /// input (once normalised) count once.
    pub fn parse(
        &self,
        member: Option<&Value>,
        mode: Normalization,
    ) -> Result<IdentifierSet, InputError> {
        let object = match member {
            None | Some(Value::Null) => return Ok(IdentifierSet::default()),
            Some(Value::Object(object)) => object,
            Some(_) => {
                return Err(InputError::WrongType(
                    "`identifiers` must be an object from kind names to values".into(),
                ))
            }
        };
        self.parse_object(object, mode)
    }

    fn parse_object(
        &self,
        object: &Map<String, Value>,
        mode: Normalization,
    ) -> Result<IdentifierSet, InputError> {
        let mut set = IdentifierSet::default();
        for (name, member) in object {
            let kind = KindName::parse(name)
                .ok()
                .and_then(|name| self.get(&name))
                .ok_or_else(|| InputError::UnknownIdentifierKind {
                    // A key of the right shape is a kind's name, not a value: say it.
                    kind: KindName::parse(name).ok(),
                })?;
            let raws: Vec<&Value> = match member {
                Value::Array(_) if kind.unique => {
                    return Err(InputError::ListForUniqueKind {
                        kind: kind.name.clone(),
                    })
                }
                Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            let mut values = BTreeSet::new();
            for raw in raws {
                let text = match raw {
                    Value::String(text) => text.clone(),
                    Value::Number(n) if kind.format == ValueFormat::Phone => json_u64(n)
                        .ok_or(InputError::InvalidIdentifier {
                            kind: kind.name.clone(),
                            expected: "a phone number (a number must be a non-negative integer)",
                        })?
                        .to_string(),
                    _ => {
                        return Err(InputError::IdentifierWrongType {
                            kind: kind.name.clone(),
                            expected: if kind.unique {
                                "a string"
                            } else {
                                "a string or a list of strings"
                            },
                        })
                    }
                };
                let value = kind
                    .parse_value(&text, mode)
                    .map_err(|fault| fault.named(&kind.name))?;
                values.insert(value);
            }
            if values.len() > kind.max_per_input() {
                return Err(InputError::TooManyIdentifiers {
                    kind: kind.name.clone(),
                    max: kind.max_per_input(),
                });
            }
            for value in values {
                set.insert(kind.name.clone(), value);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn kinds(settings: Value) -> Result<IdentifierKinds, KindSettingsError> {
        let settings: BTreeMap<String, KindSettings> = serde_json::from_value(settings).unwrap();
        IdentifierKinds::try_from(settings)
    }

    fn shop() -> IdentifierKinds {
        kinds(json!({
            "customerId": {"unique": true},
            "loyaltyCard": {"max_per_identity": 3},
            "deviceId": {"max_per_identity": 20, "links": false, "max_length": 8},
            "workEmail": {"format": "email"},
            "homePhone": {"format": "phone"},
        }))
        .unwrap()
    }

    fn parse(member: Value) -> Result<IdentifierSet, InputError> {
        shop().parse(Some(&member), Normalization::Standard)
    }

    fn name(name: &str) -> KindName {
        KindName::parse(name).unwrap()
    }

    fn texts(set: &IdentifierSet, kind: &str) -> Vec<String> {
        set.values(&name(kind))
            .map(|v| v.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_kind_reads_its_rules_with_their_defaults() {
        let kinds = shop();
        let customer = kinds.get(&name("customerId")).unwrap();
        assert!(customer.unique() && customer.links());
        assert_eq!(customer.max_per_identity(), Some(1));
        assert_eq!(customer.format(), ValueFormat::Opaque);
        let device = kinds.get(&name("deviceId")).unwrap();
        assert!(!device.unique() && !device.links());
        assert_eq!(device.max_per_identity(), Some(20));
        assert_eq!(
            kinds.iter().map(|k| k.name().as_str()).collect::<Vec<_>>(),
            [
                "customerId",
                "deviceId",
                "homePhone",
                "loyaltyCard",
                "workEmail"
            ]
        );
        assert!(IdentifierKinds::default().is_empty());
    }

    #[test]
    fn contradictory_or_misnamed_kinds_are_refused_with_a_reason() {
        for (settings, refused) in [
            (
                json!({"customerId": {"unique": true, "max_per_identity": 2}}),
                KindSettingsError::UniqueWithLimit("customerId".into(), 2),
            ),
            (
                json!({"card": {"max_per_identity": 0}}),
                KindSettingsError::ZeroLimit("card".into()),
            ),
            (
                json!({"email": {}}),
                KindSettingsError::Reserved("email".into()),
            ),
            (
                json!({"PhoneNumber": {}}),
                KindSettingsError::Reserved("PhoneNumber".into()),
            ),
            (
                json!({"customer-id": {}}),
                KindSettingsError::BadName("customer-id".into()),
            ),
            (json!({"1st": {}}), KindSettingsError::BadName("1st".into())),
            (json!({"": {}}), KindSettingsError::BadName("".into())),
            (
                json!({"customerId": {}, "customerid": {}}),
                KindSettingsError::SameName("customerId".into(), "customerid".into()),
            ),
            (
                json!({"card": {"max_length": 0}}),
                KindSettingsError::BadMaxLength("card".into()),
            ),
            (
                json!({"card": {"max_length": 513}}),
                KindSettingsError::BadMaxLength("card".into()),
            ),
            (
                json!({"mail": {"format": "email", "max_length": 10}}),
                KindSettingsError::MaxLengthWithFormat("mail".into()),
            ),
        ] {
            assert_eq!(kinds(settings).unwrap_err(), refused);
        }
        // One value per identity, said twice, is no contradiction.
        assert!(kinds(json!({"customerId": {"unique": true, "max_per_identity": 1}})).is_ok());
    }

    #[test]
    fn opaque_values_lose_invisible_characters_and_outer_space_but_keep_their_case() {
        let set = parse(json!({
            "customerId": " \u{feff}C-1\u{200b} ",
            "loyaltyCard": ["Card\u{00ad}A", "CardA", "carda", "Rene\u{301}"],
        }))
        .unwrap();
        assert_eq!(texts(&set, "customerId"), ["C-1"]);
        assert_eq!(texts(&set, "loyaltyCard"), ["CardA", "Ren\u{e9}", "carda"]);
    }

    #[test]
    fn email_and_phone_formats_reuse_their_parsers() {
        let set = parse(json!({
            "workEmail": " Doc@Bücher.DE ",
            "homePhone": ["+1 (555) 010-1234", 5550101],
        }))
        .unwrap();
        assert_eq!(texts(&set, "workEmail"), ["doc@xn--bcher-kva.de"]);
        assert_eq!(texts(&set, "homePhone"), ["+15550101234", "5550101"]);
    }

    #[test]
    fn absent_or_null_identifiers_are_none() {
        let kinds = shop();
        for member in [None, Some(&Value::Null)] {
            assert!(kinds
                .parse(member, Normalization::Standard)
                .unwrap()
                .is_empty());
        }
        assert!(parse(json!({})).unwrap().is_empty());
    }

    #[test]
    fn each_way_to_get_identifiers_wrong_has_its_own_error_that_names_the_kind_not_the_value() {
        let customer = || name("customerId");
        for (member, refused, code) in [
            (
                json!({"passport": "secret"}),
                InputError::UnknownIdentifierKind {
                    kind: Some(name("passport")),
                },
                "unknown_identifier_kind",
            ),
            (
                json!({"secret@mail.io": "x"}),
                InputError::UnknownIdentifierKind { kind: None },
                "unknown_identifier_kind",
            ),
            (
                json!({"customerId": ["secret"]}),
                InputError::ListForUniqueKind { kind: customer() },
                "wrong_type",
            ),
            (
                json!({"customerId": 17}),
                InputError::IdentifierWrongType {
                    kind: customer(),
                    expected: "a string",
                },
                "wrong_type",
            ),
            (
                json!({"loyaltyCard": ["secret", {"n": 1}]}),
                InputError::IdentifierWrongType {
                    kind: name("loyaltyCard"),
                    expected: "a string or a list of strings",
                },
                "wrong_type",
            ),
            (
                json!({"customerId": " \u{200b} "}),
                InputError::EmptyIdentifier { kind: customer() },
                "invalid_value",
            ),
            (
                json!({"deviceId": "secret-and-long"}),
                InputError::IdentifierTooLong {
                    kind: name("deviceId"),
                    max: 8,
                },
                "too_long",
            ),
            (
                json!({"customerId": "secret\nline"}),
                InputError::InvalidIdentifier {
                    kind: customer(),
                    expected: "text without control characters",
                },
                "invalid_value",
            ),
            (
                json!({"workEmail": "secret-no-at"}),
                InputError::InvalidIdentifier {
                    kind: name("workEmail"),
                    expected: "an email address (local@domain: one @, no spaces)",
                },
                "invalid_value",
            ),
            (
                json!({"loyaltyCard": ["secret1", "secret2", "secret3", "secret4"]}),
                InputError::TooManyIdentifiers {
                    kind: name("loyaltyCard"),
                    max: 3,
                },
                "too_many_identifiers",
            ),
            (
                json!(["secret"]),
                InputError::WrongType(
                    "`identifiers` must be an object from kind names to values".into(),
                ),
                "wrong_type",
            ),
        ] {
            let error = parse(member).unwrap_err();
            assert_eq!(error, refused);
            assert_eq!(error.code(), code);
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }

    #[test]
    fn a_value_repeated_in_one_input_counts_once() {
        let set = parse(json!({"loyaltyCard": ["A", " A", "A\u{200b}", "B", "C"]})).unwrap();
        assert_eq!(set.count(&name("loyaltyCard")), 3);
    }

    #[test]
    fn a_kind_without_a_limit_still_takes_a_bounded_list() {
        let kinds = kinds(json!({"orderRef": {}})).unwrap();
        let many: Vec<String> = (0..=MAX_VALUES_PER_INPUT).map(|i| i.to_string()).collect();
        let refused = kinds
            .parse(Some(&json!({ "orderRef": many })), Normalization::Standard)
            .unwrap_err();
        assert_eq!(refused.code(), "too_many_identifiers");
    }

    #[test]
    fn only_linking_kinds_are_looked_up() {
        let kinds = shop();
        let set = parse(json!({"customerId": "C-1", "deviceId": "d1"})).unwrap();
        let linking: Vec<&str> = kinds.linking(&set).map(|(k, _)| k.as_str()).collect();
        assert_eq!(linking, ["customerId"]);
    }

    #[test]
    fn a_value_never_shows_in_debug_output() {
        let set = parse(json!({"customerId": "secret"})).unwrap();
        assert!(!format!("{set:?}").contains("secret"));
    }
}
