//! The schemas of what clients send: request bodies and the identifiers in them.
//!
//! Bodies are parsed by hand ([`crate::domain::ContactInput`]), not by a derived
//! deserialiser, so their schemas are written from the parser's own rules here: the
//! character classes come from the predicates the parser uses
//! ([`char::is_whitespace`] for trimming, [`is_invisible`] for stripping,
//! [`PHONE_SEPARATORS`]) and the bounds from its constants. A test checks, value by
//! value, that each pattern accepts exactly what the parser accepts.

use crate::domain::input::{
    is_invisible, MAX_EMAIL_LEN, MAX_PHONE_LEN, MAX_RAW_PHONE_LEN, PHONE_SEPARATORS,
};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt::Write;
use utoipa::openapi::{ObjectBuilder, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Marker types that name these schemas in operations; [`schemas`] gives their content.
macro_rules! named_schemas {
    ($($name:ident),*) => {$(
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                // Replaced by [`schemas`] in the finished document.
                ObjectBuilder::new().build().into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

named_schemas!(
    IdentifyRequest,
    ForgetRequest,
    Email,
    PhoneString,
    PhoneInteger,
    BlockedPhone,
    Blank,
    BlankEmail,
    QueryEmail,
    QueryPhone
);

/// A regex character class of the BMP characters `keep` holds, plus `extra` (already
/// escaped). Characters beyond the BMP are left out: JSON Schema validators disagree on
/// how to write them.
fn class_of(keep: impl Fn(char) -> bool, extra: &str) -> String {
    let mut class = String::from("[");
    class.push_str(extra);
    let mut chars = (0..=0xFFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| keep(c));
    let mut range: Option<(char, char)> = None;
    let flush = |class: &mut String, (first, last): (char, char)| {
        write!(class, "\\u{:04x}", first as u32).expect("writes to a String");
        if last != first {
            write!(class, "-\\u{:04x}", last as u32).expect("writes to a String");
        }
    };
    for c in chars.by_ref() {
        range = match range {
            Some((first, last)) if last as u32 + 1 == c as u32 => Some((first, c)),
            Some(done) => {
                flush(&mut class, done);
                Some((c, c))
            }
            None => Some((c, c)),
        };
    }
    if let Some(done) = range {
        flush(&mut class, done);
    }
    class.push(']');
    class
}

/// Trimmed (whitespace) or stripped (invisible): allowed around any value.
fn around() -> String {
    class_of(|c| c.is_whitespace() || is_invisible(c), "")
}

fn invisible() -> String {
    class_of(is_invisible, "")
}

/// Between the digits of a phone number: separators and invisible characters.
fn separators() -> String {
    class_of(|c| PHONE_SEPARATORS.contains(&c) || is_invisible(c), "")
}

/// A phone number as sent, digits checked by `digits` (a lookahead).
fn phone_pattern(digits: &str) -> String {
    let (around, sep) = (around(), separators());
    let most = MAX_PHONE_LEN;
    format!(
        "^{digits}{around}*{sep}*(?:\\+{sep}*(?:[0-9]{sep}*){{1,{}}}|(?:[0-9]{sep}*){{1,{most}}}){around}*$",
        most - 1
    )
}

fn email_pattern() -> String {
    let (around, invisible) = (around(), invisible());
    // The local part: anything but `@`, whitespace, invisible and control characters.
    let local = class_of(
        |c| c == '@' || c.is_whitespace() || is_invisible(c) || c.is_control(),
        "^",
    );
    // The domain, as described here: printable ASCII but `@` (a Unicode domain is
    // accepted too when IDNA can convert it).
    format!("^{around}*(?:{local}{invisible}*)+@{invisible}*(?:[!-?A-~]{invisible}*)+{around}*$")
}

fn blank(max_length: usize, what: &str) -> Value {
    json!({
        "type": "string",
        "maxLength": max_length,
        "pattern": format!("^{}*$", around()),
        "description": format!("Only whitespace and invisible characters, at most {max_length} as {what}: the same as absent."),
    })
}

/// `(name, schema)` of every input schema, for `components.schemas`.
pub(crate) fn schemas() -> Vec<(&'static str, Value)> {
    let email = || json!({"$ref": "#/components/schemas/Email"});
    let phone = || {
        json!({"anyOf": [
            {"$ref": "#/components/schemas/PhoneString"},
            {"$ref": "#/components/schemas/PhoneInteger"},
        ]})
    };
    vec![
        (
            "IdentifyRequest",
            json!({
                "type": "object",
                "description": "At least one of email and phoneNumber must be given, not null and not blank. Unknown members are ignored. An identifier that the blocklist holds (by default test@test.com, noreply@..., phones of zeros) is dropped; an input left with none is refused (400 blocked).",
                "properties": {
                    "email": {"anyOf": [email(), {"$ref": "#/components/schemas/BlankEmail"}, {"type": "null"}]},
                    "phoneNumber": {"anyOf": [
                        {"$ref": "#/components/schemas/PhoneString"},
                        {"$ref": "#/components/schemas/PhoneInteger"},
                        {"$ref": "#/components/schemas/BlockedPhone"},
                        {"$ref": "#/components/schemas/Blank"},
                        {"type": "null"},
                    ]},
                },
                "anyOf": [
                    {"required": ["email"], "properties": {"email": email()}},
                    {"required": ["phoneNumber"], "properties": {"phoneNumber": phone()}},
                ],
                "examples": [{"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}],
            }),
        ),
        (
            "ForgetRequest",
            json!({
                "description": "Exactly one of email, phoneNumber and id, and no other member (400 wrong_type otherwise; nothing is erased).",
                "oneOf": [
                    {"type": "object", "properties": {"email": email()}, "required": ["email"], "additionalProperties": false},
                    {"type": "object", "properties": {"phoneNumber": phone()}, "required": ["phoneNumber"], "additionalProperties": false},
                    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": i64::MAX}}, "required": ["id"], "additionalProperties": false},
                ],
            }),
        ),
        (
            "Email",
            json!({
                "type": "string",
                "maxLength": MAX_EMAIL_LEN,
                "pattern": email_pattern(),
                "description": format!("An email address as sent: exactly one @, a non-empty local part and domain, no spaces or control characters inside; surrounding whitespace and invisible (Unicode format) characters anywhere are removed; at most {MAX_EMAIL_LEN} characters as sent and once normalised. A Unicode domain is also accepted when IDNA can convert it (it is compared and stored in its ASCII form); this document describes ASCII domains only."),
            }),
        ),
        (
            "PhoneString",
            json!({
                "type": "string",
                "maxLength": MAX_RAW_PHONE_LEN,
                "pattern": phone_pattern("(?=[^1-9]*[1-9])"),
                "description": format!("Digits with an optional leading +, and spaces, dashes, dots or parentheses (removed under standard normalisation); surrounding whitespace and invisible characters are removed; at most {MAX_PHONE_LEN} characters once normalised, {MAX_RAW_PHONE_LEN} as sent. A number made only of zeros is a blocked placeholder (see BlockedPhone)."),
            }),
        ),
        (
            "PhoneInteger",
            json!({
                "type": "integer",
                "minimum": 1,
                "maximum": u64::MAX,
                "description": "A phone number as a JSON integer (0 is a blocked placeholder).",
            }),
        ),
        (
            "BlockedPhone",
            json!({
                "description": "A phone number made only of zeros (with an optional +, separators and invisible characters), as a string or the integer 0: a placeholder the default blocklist drops, as if absent.",
                "anyOf": [
                    {"type": "string", "maxLength": MAX_RAW_PHONE_LEN, "pattern": phone_pattern("(?=[^1-9]*$)")},
                    {"const": 0},
                ],
            }),
        ),
        ("Blank", blank(MAX_RAW_PHONE_LEN, "a phone number")),
        ("BlankEmail", blank(MAX_EMAIL_LEN, "an email")),
        (
            "QueryEmail",
            json!({
                "description": "An email as a query parameter; a blank one is absent.",
                "anyOf": [email(), {"$ref": "#/components/schemas/BlankEmail"}],
            }),
        ),
        (
            "QueryPhone",
            json!({
                "description": "A phone number as a query parameter; a blank or blocked one is absent.",
                "anyOf": [
                    {"$ref": "#/components/schemas/PhoneString"},
                    {"$ref": "#/components/schemas/BlockedPhone"},
                    {"$ref": "#/components/schemas/Blank"},
                ],
            }),
        ),
    ]
}
