//! Normalisation (§7 v2) through the real sidecar and PostgreSQL: no invisible variant
//! of a blocked or erased value gets in, and a Unicode domain is its IDNA form.

mod support;

use proptest::prelude::*;
use serde_json::{json, Value};
use support::app::TestApp;

const ADMIN: &str = "normalisation-admin";

/// Format characters (Cf) the issue names, and a few more.
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
    '\u{202e}',
    '\u{2066}',
    '\u{2069}',
    '\u{061c}',
    '\u{e0041}',
];

fn insert(value: &str, insertions: &[(usize, usize)]) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    for &(at, which) in insertions {
        let at = at % (chars.len() + 1);
        chars.insert(at, INVISIBLE[which % INVISIBLE.len()]);
    }
    chars.into_iter().collect()
}

async fn spawn() -> TestApp {
    TestApp::spawn_http(|s| s.http.admin_token = Some(ADMIN.to_owned().into())).await
}

async fn identify(app: &TestApp, body: Value) -> (u16, Value) {
    app.post_identify(&body.to_string()).await
}

async fn forget(app: &TestApp, body: Value) -> u16 {
    app.http
        .post(format!("{}/forget", app.base_url))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn contacts(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM contact").await
}

#[tokio::test]
async fn the_reproductions_of_the_issue_are_refused() {
    let app = spawn().await;
    // Blocked placeholder behind a zero-width space.
    let (status, body) = identify(&app, json!({"email": "test@test.com\u{200b}"})).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("blocked")));

    // An erased person behind invisible characters.
    let (status, _) = identify(
        &app,
        json!({"email": "erase.me@x.io", "phoneNumber": "5550199"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(forget(&app, json!({"email": "erase.me@x.io"})).await, 200);
    for variant in [
        "erase.me@x.io\u{200b}",
        "erase.me\u{00ad}@x.io",
        "\u{2060}erase.me@x.io",
        "\u{feff}erase.me@x.io",
        "erase.me@x.io\u{202e}",
    ] {
        let (status, body) = identify(&app, json!({ "email": variant })).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (410, &json!("forgotten")),
            "{variant:?}"
        );
    }

    // More than one @, or an empty local part.
    for email in ["@@a", "a@b@c"] {
        let (status, body) = identify(&app, json!({ "email": email })).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_value")),
            "{email}"
        );
    }
    let erased_and_refused = contacts(&app).await;

    // A Unicode domain and its IDNA ASCII form are one email.
    let (_, unicode) = identify(&app, json!({"email": "user@bücher.de"})).await;
    let (_, ascii) = identify(&app, json!({"email": "user@xn--bcher-kva.de"})).await;
    assert_eq!(unicode, ascii);
    assert_eq!(
        unicode["contact"]["emails"],
        json!(["user@xn--bcher-kva.de"])
    );
    assert_eq!(
        contacts(&app).await,
        erased_and_refused + 1,
        "one contact for both"
    );
    app.stop().await;
}

/// For any insertion of invisible characters (and any case), an erased email or phone
/// stays refused and a blocked one stays blocked, through `POST /identify` and
/// `GET /identify`; nothing is stored.
#[test]
fn no_invisible_variant_of_an_erased_or_blocked_value_gets_in() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(async {
        let app = spawn().await;
        let (status, _) = identify(
            &app,
            json!({"email": "erase.me@x.io", "phoneNumber": "+1 555 0199"}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(forget(&app, json!({"email": "erase.me@x.io"})).await, 200);
        app
    });
    let before = runtime.block_on(contacts(&app));

    proptest!(ProptestConfig::with_cases(48), |(
        insertions in prop::collection::vec((0usize..40, 0usize..40), 1..8),
        upper in any::<bool>(),
        which in 0usize..3,
    )| {
        let (value, field) = [
            ("erase.me@x.io", "email"),
            ("+1 555 0199", "phoneNumber"),
            ("test@test.com", "email"),
        ][which];
        let value = if upper { value.to_uppercase() } else { value.to_owned() };
        let variant = insert(&value, &insertions);
        let (expected_status, expected_code) = if which == 2 { (400, "blocked") } else { (410, "forgotten") };
        runtime.block_on(async {
            let (status, body) = identify(&app, json!({ field: variant })).await;
            assert_eq!((status, body["error"]["code"].as_str()), (expected_status, Some(expected_code)), "{variant:?}");
            let query = serde_json::to_string(&json!({ field: variant })).unwrap();
            let object: serde_json::Map<String, Value> = serde_json::from_str(&query).unwrap();
            let lookup = app
                .http
                .get(format!("{}/identify", app.base_url))
                .query(&object.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect::<Vec<_>>())
                .send()
                .await
                .unwrap();
            let status = lookup.status().as_u16();
            assert_eq!(status, if which == 2 { 400 } else { 404 }, "lookup of {variant:?}");
        });
    });

    assert_eq!(
        runtime.block_on(contacts(&app)),
        before,
        "nothing was stored"
    );
    runtime.block_on(app.stop());
}
