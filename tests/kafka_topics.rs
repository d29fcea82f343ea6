//! The topics the service needs: `identity-reconciler topics` creates them and
//! `topics --check` names what is missing or set up wrong, and how to fix it; the
//! relay's readiness says when a topic it writes is missing, and recovers once it
//! is there.

mod support;

use identity_reconciler::worker::topics;
use identity_reconciler::Mode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;
use std::process::{Command, Output};
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{kafka_brokers, partition_count, producer, send_events};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::readers::TopicReader;

const WAIT: Duration = Duration::from_secs(90);

/// `identity-reconciler topics <args>` for `topics`' names on `brokers`.
fn topics_command(topics: &Topics, brokers: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .arg("topics")
        .args(args)
        .envs(topics.env(brokers))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run identity-reconciler topics")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("create an admin client")
}

async fn cleanup_policy(brokers: &str, topic: &str) -> String {
    let described = admin(brokers)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe the topic's settings");
    let resource = described.into_iter().next().unwrap().expect("its settings");
    resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .expect("a cleanup.policy")
}

#[tokio::test]
async fn topics_creates_what_the_service_needs_and_check_names_what_is_wrong() {
    // Arrange: the output topic exists already, but not compacted; nothing else.
    let brokers = kafka_brokers().await;
    let names = Topics::unique("topics_cmd");
    let state = format!("{}.relay-state", names.output);
    let plain = NewTopic::new(&names.output, 1, TopicReplication::Fixed(-1));
    admin(&brokers)
        .create_topics(&[plain], &AdminOptions::new())
        .await
        .expect("create the output topic")
        .remove(0)
        .expect("the output topic is created");

    // Act: check.
    let checked = topics_command(&names, &brokers, &["--check"]);

    // Assert: it fails, naming each missing topic, the uncompacted one, and the fix.
    let said = text(&checked);
    assert!(!checked.status.success(), "{said}");
    for missing in [&names.input, &names.dlq, &state] {
        assert!(
            said.contains(&format!("topic {missing}: missing")),
            "{missing} is not named missing: {said}"
        );
    }
    assert!(said.contains("`identity-reconciler topics`"), "{said}");
    assert!(
        said.contains(&format!(
            "topic {}: cleanup.policy is \"delete\", but the output (identities) must be compacted",
            names.output
        )),
        "{said}"
    );
    assert!(
        said.contains("--add-config cleanup.policy=compact"),
        "{said}"
    );

    // Act: create.
    let created = topics_command(&names, &brokers, &[]);

    // Assert: the missing ones are created with the settings the service needs; the
    // existing output topic is left alone, and still named.
    let said = text(&created);
    assert!(!created.status.success(), "{said}");
    assert!(said.contains(&format!("created {state}")), "{said}");
    assert!(
        said.contains(&format!("topic {}: cleanup.policy", names.output)),
        "{said}"
    );
    assert_eq!(partition_count(&brokers, &state).await, 1);
    assert_eq!(cleanup_policy(&brokers, &state).await, "compact");
    assert_eq!(cleanup_policy(&brokers, &names.output).await, "delete");
    let missing = topics_command(&names, &brokers, &["--check"]);
    assert!(!text(&missing).contains("missing"), "{}", text(&missing));
}

#[tokio::test]
async fn topics_then_check_succeeds_on_a_fresh_cluster() {
    // Arrange
    let brokers = kafka_brokers().await;
    let names = Topics::unique("topics_fresh");

    // Act
    let created = topics_command(&names, &brokers, &[]);
    let checked = topics_command(&names, &brokers, &["--check"]);

    // Assert
    assert!(created.status.success(), "{}", text(&created));
    assert!(checked.status.success(), "{}", text(&checked));
    assert_eq!(
        cleanup_policy(&brokers, &names.output).await,
        "compact",
        "the output topic is compacted"
    );
    for topic in names.names() {
        assert_eq!(partition_count(&brokers, topic).await, 3, "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_missing_relay_state_topic_and_recovers_once_it_is_created() {
    // Arrange: every topic but the relay's state topic; the service creates none.
    let brokers = kafka_brokers().await;
    let names = Topics::unique("relay_ready");
    let state = format!("{}.relay-state", names.output);
    let db = TestDb::new().await;
    let mut settings = db.settings();
    names.apply(&mut settings, &brokers);
    settings.kafka.create_topics = false;
    let needed = topics::needed(&settings.kafka, settings.relay.mode);
    let (state_spec, others): (Vec<_>, Vec<_>) = needed.into_iter().partition(|t| t.name == state);
    topics::create(&settings.kafka, &brokers, &others)
        .await
        .expect("create the other topics");
    let kafka = settings.kafka.clone();
    let app = TestApp::spawn_on(db, Mode::Run, |s| s.kafka = kafka).await;

    // Assert: not ready, naming the topic and what to do.
    let answer = eventually(WAIT, "/readyz to name the missing state topic", || async {
        let (status, answer) = app.get("/readyz").await;
        (status == 503 && answer["reason"].is_string()).then_some(answer)
    })
    .await;
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("topic {state}: missing")),
        "{reason}"
    );
    assert!(reason.contains("identity-reconciler topics"), "{reason}");
    assert_eq!(answer["status"], "not_ready");
    assert_eq!(answer["kafka"], "down");

    // Act: an event arrives, then the topic is created.
    let email = "ready@relay-state.test";
    send_events(
        &producer(&brokers),
        &names.input,
        None,
        &[json!({"eventId": "relay-ready-1", "email": email, "phoneNumber": "5550001"})],
    )
    .await;
    topics::create(&settings.kafka, &brokers, &state_spec)
        .await
        .expect("create the state topic");

    // Assert: ready again, and the event comes out as an identity.
    eventually(WAIT, "/readyz to be ready again", || async {
        (app.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        app.get("/readyz").await.1,
        json!({"status": "ready", "database": "up", "kafka": "up"})
    );
    let mut output = TopicReader::open(&brokers, &names.output).await;
    output
        .read_until(WAIT, "the event's identity", |records| {
            records.iter().any(|r| {
                r.value.is_some() && r.json()["contact"]["emails"][0].as_str() == Some(email)
            })
        })
        .await;
    app.stop().await;
}
