//! Parsed inputs: the only way an email or a phone number gets past the boundary.
//!
//! Wire bodies (HTTP JSON, Kafka event values) are parsed into a `serde_json::Value`
//! first and then field by field here, so that every error message is ours and none
//! of them echoes the value it rejects: emails and phones are personal data.

use super::kind::KindName;
use super::normalize::{self, longer_than, EmailFault};
pub(crate) use super::normalize::{is_invisible, MAX_EMAIL_LEN, PHONE_SEPARATORS};
pub use super::normalize::{strip_invisible, Normalization};
use super::quality::Blocklist;
use serde_json::{Map, Value};
use std::fmt;

/// Longest phone number accepted after normalisation (E.164 needs 16 with the `+`).
pub(crate) const MAX_PHONE_LEN: usize = 32;
/// Longest phone number accepted as sent, separators, whitespace and invisible
/// characters included (an email as sent is bounded by [`MAX_EMAIL_LEN`] too). These
/// bounds on the raw text are what the OpenAPI document states as `maxLength`.
pub(crate) const MAX_RAW_PHONE_LEN: usize = 64;

/// Why an input was refused. The `code` is stable and appears in HTTP error bodies,
/// dead-letter headers and metrics; the message never contains the rejected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    WrongType(String),
    #[error("at least one of `email` and `phoneNumber` must be given")]
    NoIdentifier,
    /// Every identifier given is on the blocklist (a placeholder such as test@test.com).
    #[error("every identifier given is a blocked placeholder value")]
    Blocked(Blocked),
    #[error("`{field}` is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("`{field}` is not {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
    // The errors of the `identifiers` member (docs/contract.md §9). Not produced by
    // any input path yet: the wiring adds their codes to the HTTP error catalogue
    // and the dead-letter headers' description, where the new ones are not listed.
    /// A kind that is not configured. `kind` is `None` when the key is not even
    /// shaped like a kind's name (it may be anything, a value included: not echoed).
    #[error("{}", unknown_kind(.kind.as_ref()))]
    UnknownIdentifierKind { kind: Option<KindName> },
    /// A value that is not a string (or a list of them where the kind allows it).
    #[error("`identifiers.{kind}` must be {expected}")]
    IdentifierWrongType {
        kind: KindName,
        expected: &'static str,
    },
    /// A list for a kind of which an identity holds one value.
    #[error("`identifiers.{kind}` is a unique kind: it takes one string, not a list")]
    ListForUniqueKind { kind: KindName },
    /// More values of a kind than one identity may hold.
    #[error("`identifiers.{kind}` has more than {max} distinct values")]
    TooManyIdentifiers { kind: KindName, max: usize },
    #[error("`identifiers.{kind}` holds an empty value")]
    EmptyIdentifier { kind: KindName },
    #[error("`identifiers.{kind}` holds a value longer than {max} characters")]
    IdentifierTooLong { kind: KindName, max: usize },
    #[error("`identifiers.{kind}` holds a value that is not {expected}")]
    InvalidIdentifier {
        kind: KindName,
        expected: &'static str,
    },
}

fn unknown_kind(kind: Option<&KindName>) -> String {
    match kind {
        Some(kind) => format!("`identifiers.{kind}`: no identifier kind of that name is configured"),
        None => "`identifiers` names a kind that is not configured (a kind's name is ASCII letters and digits)".into(),
    }
}

impl InputError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            InputError::MalformedJson(_) => "malformed_json",
            InputError::WrongType(_) => "wrong_type",
            InputError::NoIdentifier => "no_identifier",
            InputError::Blocked(_) => "blocked",
            InputError::TooLong { .. } => "too_long",
            InputError::Invalid { .. } => "invalid_value",
            InputError::UnknownIdentifierKind { .. } => "unknown_identifier_kind",
            InputError::IdentifierWrongType { .. } | InputError::ListForUniqueKind { .. } => {
                "wrong_type"
            }
            InputError::TooManyIdentifiers { .. } => "too_many_identifiers",
            InputError::EmptyIdentifier { .. } | InputError::InvalidIdentifier { .. } => {
                "invalid_value"
            }
            InputError::IdentifierTooLong { .. } => "too_long",
        }
    }
}

/// A normalised, checked email address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// A normalised, checked phone number. Always a string, even when sent as a JSON number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

// Debug must not print personal data into logs by accident.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(..)")
    }
}
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(..)")
    }
}

impl Email {
    /// Parses a raw email; `Ok(None)` when it is empty after trimming. The steps
    /// (invisible characters out, trim, case, one `@`, IDNA for a Unicode domain) are
    /// `normalize.rs`'s, which the blocklist's entries go through too.
    pub fn parse(raw: &str, mode: Normalization) -> Result<Option<Email>, InputError> {
        let field = "email";
        match normalize::email(raw, mode) {
            Ok(value) => Ok(value.map(Email)),
            Err(EmailFault::TooLong) => Err(InputError::TooLong {
                field,
                max: MAX_EMAIL_LEN,
            }),
            Err(EmailFault::Invalid) => Err(InputError::Invalid {
                field,
                expected: "an email address (local@domain: one @, no spaces)",
            }),
        }
    }

    /// Wraps a value read back from the database, where only parsed values are written.
    pub(crate) fn from_stored(value: String) -> Email {
        Email(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Phone {
    /// Parses a raw phone number; `Ok(None)` when it is empty after trimming.
    pub fn parse(raw: &str, mode: Normalization) -> Result<Option<Phone>, InputError> {
        let field = "phoneNumber";
        if longer_than(raw, MAX_RAW_PHONE_LEN) {
            return Err(InputError::TooLong {
                field,
                max: MAX_RAW_PHONE_LEN,
            });
        }
        let cleaned = strip_invisible(raw);
        let trimmed = cleaned.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let separator = |c: char| PHONE_SEPARATORS.contains(&c);
        let value: String = match mode {
            Normalization::Standard => trimmed.chars().filter(|&c| !separator(c)).collect(),
            Normalization::Exact => trimmed.to_owned(),
        };
        if value.chars().count() > MAX_PHONE_LEN {
            return Err(InputError::TooLong {
                field,
                max: MAX_PHONE_LEN,
            });
        }
        let digits = value.strip_prefix('+').unwrap_or(&value);
        let well_formed = digits.chars().any(|c| c.is_ascii_digit())
            && digits.chars().all(|c| c.is_ascii_digit() || separator(c));
        if !well_formed {
            return Err(InputError::Invalid {
                field,
                expected: "a phone number (digits, an optional leading +, spaces, dashes, dots, parentheses)",
            });
        }
        Ok(Some(Phone(value)))
    }

    /// Wraps a value read back from the database, where only parsed values are written.
    pub(crate) fn from_stored(value: String) -> Phone {
        Phone(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How raw identifiers become an input: normalisation, then the blocklist.
#[derive(Clone, Copy, Debug)]
pub struct InputRules<'a> {
    pub normalization: Normalization,
    pub blocklist: &'a Blocklist,
}

/// Which identifiers of an input the blocklist dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    pub(crate) email: bool,
    pub(crate) phone: bool,
}

impl Blocked {
    pub(crate) fn any(self) -> bool {
        self.email || self.phone
    }

    /// The wire names of the fields dropped: `email`, `phoneNumber`.
    pub(crate) fn fields(self) -> impl Iterator<Item = &'static str> {
        [(self.email, "email"), (self.phone, "phoneNumber")]
            .into_iter()
            .filter_map(|(dropped, field)| dropped.then_some(field))
    }
}

/// One reconciliation input: at least one of email and phone is present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactInput {
    email: Option<Email>,
    phone: Option<Phone>,
    blocked: Blocked,
}

impl ContactInput {
    pub fn new(email: Option<Email>, phone: Option<Phone>) -> Result<ContactInput, InputError> {
        ContactInput::screened(email, phone, Blocked::default())
    }

    /// An input whose blocked identifiers were already dropped.
    fn screened(
        email: Option<Email>,
        phone: Option<Phone>,
        blocked: Blocked,
    ) -> Result<ContactInput, InputError> {
        match (&email, &phone) {
            (None, None) if blocked.any() => Err(InputError::Blocked(blocked)),
            (None, None) => Err(InputError::NoIdentifier),
            _ => Ok(ContactInput {
                email,
                phone,
                blocked,
            }),
        }
    }

    /// An input from raw query-string values, as `GET /identify` receives them.
    pub(crate) fn from_raw(
        email: Option<&str>,
        phone: Option<&str>,
        rules: InputRules<'_>,
    ) -> Result<ContactInput, InputError> {
        let mut blocked = Blocked::default();
        let email = email
            .map(|e| screen_email(e, rules, &mut blocked))
            .transpose()?
            .flatten();
        let phone = phone
            .map(|p| screen_phone(p, rules, &mut blocked))
            .transpose()?
            .flatten();
        ContactInput::screened(email, phone, blocked)
    }

    /// Parses the `email` and `phoneNumber` members of a JSON object (HTTP body or event).
    pub fn from_json_object(
        object: &Map<String, Value>,
        rules: InputRules<'_>,
    ) -> Result<ContactInput, InputError> {
        let mut blocked = Blocked::default();
        let email = match object.get("email") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => screen_email(s, rules, &mut blocked)?,
            Some(_) => {
                return Err(InputError::WrongType(
                    "`email` must be a string or null".into(),
                ))
            }
        };
        let phone = match object.get("phoneNumber") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => screen_phone(s, rules, &mut blocked)?,
            Some(Value::Number(n)) if json_u64(n).is_some() => {
                let digits = json_u64(n).expect("checked").to_string();
                screen_phone(&digits, rules, &mut blocked)?
            }
            Some(Value::Number(_)) => {
                return Err(InputError::Invalid {
                    field: "phoneNumber",
                    expected: "a phone number (a number must be a non-negative integer)",
                })
            }
            Some(_) => {
                return Err(InputError::WrongType(
                    "`phoneNumber` must be a string, a number or null".into(),
                ))
            }
        };
        ContactInput::screened(email, phone, blocked)
    }

    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    pub fn phone(&self) -> Option<&Phone> {
        self.phone.as_ref()
    }

    /// The identifiers the blocklist dropped from this input.
    pub(crate) fn blocked(&self) -> Blocked {
        self.blocked
    }
}

/// Parses an email and drops it when blocked. A blocked placeholder that is not even
/// an email address ("null", "n/a") is dropped too, rather than refused as invalid.
fn screen_email(
    raw: &str,
    rules: InputRules<'_>,
    blocked: &mut Blocked,
) -> Result<Option<Email>, InputError> {
    let parsed = Email::parse(raw, rules.normalization);
    screen(raw, parsed, Email::as_str, &mut blocked.email, |v| {
        rules.blocklist.blocks_email(v)
    })
}

/// Parses a phone number and drops it when blocked (see [`screen_email`]).
fn screen_phone(
    raw: &str,
    rules: InputRules<'_>,
    blocked: &mut Blocked,
) -> Result<Option<Phone>, InputError> {
    let parsed = Phone::parse(raw, rules.normalization);
    screen(raw, parsed, Phone::as_str, &mut blocked.phone, |v| {
        rules.blocklist.blocks_phone(v)
    })
}

/// `parsed`, unless the blocklist `blocks` its value (or, when it did not parse for
/// another reason than its length, the raw text without invisible characters,
/// trimmed): then `None`, and `blocked` is set.
fn screen<T>(
    raw: &str,
    parsed: Result<Option<T>, InputError>,
    value: fn(&T) -> &str,
    blocked: &mut bool,
    blocks: impl Fn(&str) -> bool,
) -> Result<Option<T>, InputError> {
    let cleaned;
    let candidate = match &parsed {
        Ok(Some(v)) => value(v),
        Ok(None) => return Ok(None),
        // Length bounds hold for every value, blocked or not.
        Err(InputError::TooLong { .. }) => return parsed,
        Err(_) => {
            cleaned = strip_invisible(raw);
            cleaned.trim()
        }
    };
    if blocks(candidate) {
        *blocked = true;
        return Ok(None);
    }
    parsed
}

/// A JSON number that is a non-negative integer that fits in a `u64`, as JSON Schema
/// counts integers: `417503.0` is one (a fraction part of zero), `1.5` is not.
pub(crate) fn json_u64(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            // 2^64 is exactly representable; every integral f64 below it converts exactly.
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    })
}

/// Parses bytes that must hold one JSON object.
pub fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(InputError::WrongType(
            "the body must be a JSON object".into(),
        )),
        // serde_json's syntax errors name a position, never the content.
        Err(e) => Err(InputError::MalformedJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Result<ContactInput, InputError> {
        let blocklist = Blocklist::default();
        let rules = InputRules {
            normalization: Normalization::Standard,
            blocklist: &blocklist,
        };
        ContactInput::from_json_object(v.as_object().unwrap(), rules)
    }

    fn screened(v: Value) -> Result<ContactInput, InputError> {
        let blocklist = crate::config::Settings::load(None)
            .unwrap()
            .reconcile
            .blocklist;
        let rules = InputRules {
            normalization: Normalization::Standard,
            blocklist: &blocklist,
        };
        ContactInput::from_json_object(v.as_object().unwrap(), rules)
    }

    #[test]
    fn blocked_values_are_dropped_and_an_input_left_empty_is_refused() {
        let i = screened(json!({"email": " Test@Test.com ", "phoneNumber": "555 0101"})).unwrap();
        assert!(i.email().is_none());
        assert_eq!(i.phone().unwrap().as_str(), "5550101");
        assert_eq!(
            i.blocked(),
            Blocked {
                email: true,
                phone: false
            }
        );
        // "null" is not an email address at all, but a known placeholder: dropped.
        let i = screened(json!({"email": "null", "phoneNumber": "(000) 000-0000"}));
        assert_eq!(
            i.unwrap_err(),
            InputError::Blocked(Blocked {
                email: true,
                phone: true
            })
        );
        let i = screened(json!({"email": "a@test.com", "phoneNumber": "111111"})).unwrap();
        assert!(!i.blocked().any());
        // A value that is neither valid nor blocked is still refused as invalid.
        assert_eq!(
            screened(json!({"email": "nobody"})).unwrap_err().code(),
            "invalid_value"
        );
    }

    #[test]
    fn standard_normalisation_folds_case_and_separators() {
        let i =
            input(json!({"email": "  Doc@HillValley.EDU ", "phoneNumber": "+1 (555) 010-12.34"}))
                .unwrap();
        assert_eq!(i.email().unwrap().as_str(), "doc@hillvalley.edu");
        assert_eq!(i.phone().unwrap().as_str(), "+15550101234");
    }

    #[test]
    fn exact_normalisation_only_trims() {
        let object = json!({"email": " Doc@X.io ", "phoneNumber": " 555-01 "});
        let blocklist = Blocklist::default();
        let rules = InputRules {
            normalization: Normalization::Exact,
            blocklist: &blocklist,
        };
        let i = ContactInput::from_json_object(object.as_object().unwrap(), rules).unwrap();
        assert_eq!(i.email().unwrap().as_str(), "Doc@X.io");
        assert_eq!(i.phone().unwrap().as_str(), "555-01");
    }

    #[test]
    fn a_phone_may_be_a_json_number_but_not_a_fraction() {
        assert_eq!(
            input(json!({"phoneNumber": 123456}))
                .unwrap()
                .phone()
                .unwrap()
                .as_str(),
            "123456"
        );
        assert_eq!(
            input(json!({"phoneNumber": 1.5})).unwrap_err().code(),
            "invalid_value"
        );
        // JSON Schema's integers include a zero fraction part.
        // Parsed from text exactly (serde_json's float_roundtrip), so no fraction
        // part appears that the text does not have.
        let text = parse_json_object(br#"{"phoneNumber": 2167824987268619.0}"#).unwrap();
        let rules = InputRules {
            normalization: Normalization::Standard,
            blocklist: &Blocklist::default(),
        };
        let big = ContactInput::from_json_object(&text, rules).unwrap();
        assert_eq!(big.phone().unwrap().as_str(), "2167824987268619");
        let whole = input(json!({"phoneNumber": 417503.0})).unwrap();
        assert_eq!(whole.phone().unwrap().as_str(), "417503");
        assert_eq!(
            input(json!({"phoneNumber": 1e20})).unwrap_err().code(),
            "invalid_value"
        );
        assert_eq!(
            input(json!({"phoneNumber": -3})).unwrap_err().code(),
            "invalid_value"
        );
    }

    #[test]
    fn empty_strings_are_absent() {
        assert_eq!(
            input(json!({"email": "  ", "phoneNumber": ""})).unwrap_err(),
            InputError::NoIdentifier
        );
        assert!(input(json!({"email": "", "phoneNumber": "1"}))
            .unwrap()
            .email()
            .is_none());
    }

    #[test]
    fn wrong_types_and_bad_values_are_refused_without_echoing_them() {
        for (body, code) in [
            (json!({"email": 5}), "wrong_type"),
            (json!({"email": ["a@b"]}), "wrong_type"),
            (json!({"phoneNumber": {"n": 1}}), "wrong_type"),
            (json!({"phoneNumber": true}), "wrong_type"),
            (json!({"email": "secret-no-at"}), "invalid_value"),
            (json!({"phoneNumber": "call-me-secret"}), "invalid_value"),
            (
                json!({"email": format!("{}@x.io", "a".repeat(300))}),
                "too_long",
            ),
            (json!({"phoneNumber": "1".repeat(40)}), "too_long"),
            // A blocked placeholder is bounded like any value.
            (
                json!({"email": "a@b.co", "phoneNumber": format!("0{}", " ".repeat(64))}),
                "too_long",
            ),
            (json!({}), "no_identifier"),
        ] {
            let err = input(body).unwrap_err();
            assert_eq!(err.code(), code);
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn malformed_json_and_non_objects_are_refused() {
        assert_eq!(
            parse_json_object(b"{").unwrap_err().code(),
            "malformed_json"
        );
        assert_eq!(parse_json_object(b"[1]").unwrap_err().code(), "wrong_type");
    }

    #[test]
    fn invisible_characters_are_removed_in_both_modes() {
        for mode in [Normalization::Standard, Normalization::Exact] {
            for raw in [
                "erase.me@x.io\u{200b}",
                "erase.me\u{00ad}@x.io",
                "\u{feff}erase.me@x.io",
                "erase\u{2060}.me@x.io",
                "erase.me@\u{202e}x.io",
                "e\u{200c}rase\u{200d}.me@x\u{200e}.io\u{2066}",
            ] {
                let email = Email::parse(raw, mode).unwrap().unwrap();
                assert_eq!(email.as_str(), "erase.me@x.io", "{mode:?}");
            }
            let phone = Phone::parse("555\u{200b}0101\u{feff}", mode)
                .unwrap()
                .unwrap();
            assert_eq!(phone.as_str(), "5550101");
        }
    }

    #[test]
    fn unicode_is_nfc_and_a_domain_is_compared_in_its_idna_ascii_form() {
        let parse = |raw: &str| Email::parse(raw, Normalization::Standard).unwrap().unwrap();
        assert_eq!(parse("user@bücher.de").as_str(), "user@xn--bcher-kva.de");
        assert_eq!(
            parse("user@xn--bcher-kva.de").as_str(),
            "user@xn--bcher-kva.de"
        );
        assert_eq!(parse("user@BÜCHER.de").as_str(), "user@xn--bcher-kva.de");
        // Precomposed é and e + combining acute accent are one letter.
        assert_eq!(parse("ren\u{e9}@x.io"), parse("rene\u{301}@x.io"));
        let exact = Email::parse("Ren\u{e9}@B\u{fc}cher.de", Normalization::Exact);
        assert_eq!(exact.unwrap().unwrap().as_str(), "René@xn--bcher-kva.de");
    }

    #[test]
    fn an_email_needs_exactly_one_at_and_a_local_part_and_a_domain() {
        for raw in [
            "@@a",
            "a@b@c",
            "@x.io",
            "a@",
            "a@@x.io",
            "@",
            "a\u{200b}@\u{200b}",
        ] {
            let err = Email::parse(raw, Normalization::Standard).unwrap_err();
            assert_eq!(err.code(), "invalid_value", "{raw:?}");
        }
    }

    #[test]
    fn blocked_values_stay_blocked_behind_invisible_characters() {
        for email in [
            "test@test.com\u{200b}",
            "te\u{00ad}st@test.com",
            "nu\u{200b}ll",
        ] {
            assert_eq!(
                screened(json!({ "email": email })).unwrap_err().code(),
                "blocked",
                "{email:?}"
            );
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Format characters (Cf) of every kind the issue names, and a few more.
        const INVISIBLE: &[char] = &[
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{00ad}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{061c}',
            '\u{180e}',
            '\u{e0041}',
        ];

        /// `value` with invisible characters inserted at the given char positions.
        fn insert(value: &str, insertions: &[(usize, usize)]) -> String {
            let mut chars: Vec<char> = value.chars().collect();
            for &(at, which) in insertions {
                let at = at % (chars.len() + 1);
                chars.insert(at, INVISIBLE[which % INVISIBLE.len()]);
            }
            chars.into_iter().collect()
        }

        fn modes() -> impl Strategy<Value = Normalization> {
            prop_oneof![Just(Normalization::Standard), Just(Normalization::Exact)]
        }

        proptest! {
            #[test]
            fn invisible_insertions_never_change_a_parsed_email(
                value in "[ A-Za-z0-9.@éü\u{301}-]{0,40}",
                insertions in prop::collection::vec((0usize..64, 0usize..64), 0..12),
                mode in modes(),
            ) {
                let variant = insert(&value, &insertions);
                prop_assert_eq!(Email::parse(&variant, mode), Email::parse(&value, mode));
            }

            #[test]
            fn invisible_insertions_never_change_a_parsed_phone(
                value in "[ +0-9().-]{0,30}",
                insertions in prop::collection::vec((0usize..64, 0usize..64), 0..12),
                mode in modes(),
            ) {
                let variant = insert(&value, &insertions);
                prop_assert_eq!(Phone::parse(&variant, mode), Phone::parse(&value, mode));
            }

            #[test]
            fn normalising_a_normalised_email_changes_nothing(
                local in "[A-Za-z0-9.éü\u{301}]{1,20}",
                domain in "[a-zA-Zü\u{301}]{1,10}\\.[a-z]{2,3}",
                mode in modes(),
            ) {
                if let Ok(Some(email)) = Email::parse(&format!("{local}@{domain}"), mode) {
                    let again = Email::parse(email.as_str(), mode).unwrap().unwrap();
                    prop_assert_eq!(again, email);
                }
            }
        }
    }
}
