//! Untrusted bytes through every input parser: the HTTP body parser, the contact
//! input (both normalisations) and the Kafka event parser. Must never panic, and an
//! error must never repeat its input (it may be personal data).

#![no_main]

use identity_reconciler::domain::{parse_json_object, Blocklist, ContactInput, InputRules, Normalization};
use identity_reconciler::worker::event::{parse_event, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source = Source {
        topic: "order-contacts".into(),
        partition: 0,
        offset: 0,
    };
    let blocklist = Blocklist::default();
    for normalization in [Normalization::Standard, Normalization::Exact] {
        let rules = InputRules {
            normalization,
            blocklist: &blocklist,
        };
        if let Ok(object) = parse_json_object(data) {
            let _ = ContactInput::from_json_object(&object, rules);
        }
        if let Err(error) = parse_event(Some(data), &source, rules) {
            // A message built from more than a few bytes of input would be an echo.
            let message = error.to_string();
            if data.len() >= 16 {
                if let Ok(text) = std::str::from_utf8(data) {
                    assert!(!message.contains(text), "the error echoes the input");
                }
            }
        }
    }
});
