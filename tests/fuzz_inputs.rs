//! Fuzz smoke test of everything that parses untrusted input: arbitrary bytes and
//! arbitrary JSON through `parse_json_object`, `ContactInput::from_json_object` and
//! the event parser. None may panic, and no error may repeat what it was given
//! (the input may be personal data, and errors end up in logs, DLQ headers and HTTP
//! bodies).
//!
//! Every generated string that could be echoed carries a marker that appears nowhere
//! else, so "the error contains the marker" means "the error echoed the input".
//! (cargo-fuzz needs a nightly toolchain; this runs everywhere, in a few seconds.)

use identity_reconciler::domain::{
    parse_json_object, Blocklist, ContactInput, InputError, InputRules, Normalization,
};

/// The default blocklist: parsing goes through it in the service.
fn rules(normalization: Normalization) -> InputRules<'static> {
    static BLOCKLIST: std::sync::LazyLock<Blocklist> = std::sync::LazyLock::new(|| {
        identity_reconciler::config::Settings::load(None)
            .expect("the default settings load")
            .reconcile
            .blocklist
    });
    InputRules {
        normalization,
        blocklist: &BLOCKLIST,
    }
}
use identity_reconciler::worker::event::{parse_event, Source};
use proptest::prelude::*;
use serde_json::{Map, Value};

const MARKER: &str = "Qz7mark9Xw";

fn source() -> Source {
    Source {
        topic: "order-contacts".into(),
        partition: 0,
        offset: 42,
    }
}

fn assert_not_echoed(error: &InputError) {
    let shown = format!("{error} {error:?} {}", error.code());
    assert!(
        !shown.contains(MARKER),
        "the error echoes its input: {shown}"
    );
}

/// Strings as they arrive: arbitrary text, text shaped like identifiers, and both
/// with the marker inside.
fn text() -> impl Strategy<Value = String> {
    let shaped = "[a-zA-Z0-9@.+() _-]{0,40}";
    prop_oneof![
        ".{0,40}",
        shaped,
        (".{0,10}", ".{0,10}").prop_map(|(a, b)| format!("{a}{MARKER}{b}")),
        (shaped, shaped).prop_map(|(a, b)| format!("{a}{MARKER}{b}")),
        ("[a-z]{0,10}", "[a-z]{1,10}").prop_map(|(a, b)| format!("{a}{MARKER}@{b}.test")),
        "[0-9]{0,5}".prop_map(|d| format!("+44 {d}{MARKER}")),
        // Longer than every limit.
        (0usize..700).prop_map(|n| format!("{MARKER}{}", "9".repeat(n))),
    ]
}

/// The members the parsers look at, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("email".to_owned()),
        Just("phoneNumber".to_owned()),
        Just("eventId".to_owned()),
        Just("orderId".to_owned()),
        Just("occurredAt".to_owned()),
        "[a-zA-Z]{1,8}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
        Just(Value::String("2026-11-24T12:00:00Z".into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            object(inner),
        ]
    })
}

fn object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), values, 0..6)
        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>()))
}

/// Bytes that are mostly not JSON, or broken JSON, with the marker somewhere.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            prop::collection::vec(any::<u8>(), 0..50),
            prop::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(a, b)| [a, MARKER.as_bytes().to_vec(), b].concat()),
        (json(), 0usize..64).prop_map(|(v, cut)| {
            let text = v.to_string();
            let cut = text.len().saturating_sub(cut);
            text.as_bytes()[..cut].to_vec()
        }),
        json().prop_map(|v| format!(r#"{{"email": "{MARKER}", {v}"#).into_bytes()),
    ]
}

fn check_input(result: &Result<ContactInput, InputError>) {
    match result {
        Ok(input) => {
            assert!(input.email().is_some() || input.phone().is_some());
            if let Some(email) = input.email() {
                assert!(email.as_str().contains('@'));
            }
            if let Some(phone) = input.phone() {
                assert!(phone.as_str().chars().any(|c| c.is_ascii_digit()));
            }
        }
        Err(e) => assert_not_echoed(e),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_never_echo_them(bytes in bytes()) {
        match parse_json_object(&bytes) {
            Ok(object) => {
                for mode in [Normalization::Standard, Normalization::Exact] {
                    check_input(&ContactInput::from_json_object(&object, rules(mode)));
                }
            }
            Err(e) => assert_not_echoed(&e),
        }
        if let Err(e) = parse_event(Some(&bytes), &source(), rules(Normalization::Standard)) {
            assert_not_echoed(&e);
        }
    }

    #[test]
    fn arbitrary_json_objects_never_panic_and_errors_never_echo_them(value in object(json())) {
        let bytes = value.to_string().into_bytes();
        let object = parse_json_object(&bytes).expect("a serialised object parses");
        for mode in [Normalization::Standard, Normalization::Exact] {
            check_input(&ContactInput::from_json_object(&object, rules(mode)));
            match parse_event(Some(&bytes), &source(), rules(mode)) {
                Ok(request) => check_input(&Ok(request.input)),
                Err(e) => assert_not_echoed(&e),
            }
        }
    }

    #[test]
    fn arbitrary_json_values_are_refused_unless_objects(value in json()) {
        let bytes = value.to_string().into_bytes();
        match parse_event(Some(&bytes), &source(), rules(Normalization::Standard)) {
            Ok(_) => prop_assert!(value.is_object()),
            Err(e) => assert_not_echoed(&e),
        }
    }
}
