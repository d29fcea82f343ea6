//! `docker compose up` without Docker: the setup of `docker-compose.yml`, replayed on
//! the same Apache Kafka version with automatic topic creation as compose sets it
//! (off), only the topics its own init step creates (its command, run with its
//! environment), and the worker with its environment, addresses replaced by the
//! test's. The pipeline works only if an event produced to the input topic comes
//! out on the output topic as an identity.
//!
//! What is replayed is read from the compose file, so the two cannot drift.

mod support;

use identity_reconciler::config::Settings;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::broker::{producer, send_events};
use support::db::TestDb;
use support::eventually;
use support::private::{free_port, PrivateBroker};
use support::processes::Service;
use support::readers::TopicReader;
use yaml_rust2::{Yaml, YamlLoader};

const WAIT: Duration = Duration::from_secs(120);

fn compose() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("read docker-compose.yml");
    YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is YAML")
        .remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(
        !service.is_badvalue(),
        "docker-compose.yml has no service {name}"
    );
    service
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's `environment` (the map form).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    service["environment"]
        .as_hash()
        .expect("an environment map")
        .iter()
        .map(|(k, v)| (scalar(k), scalar(v)))
        .collect()
}

/// A service's `command` (the list form), the arguments of the image's entrypoint.
fn command(service: &Yaml) -> Vec<String> {
    service["command"]
        .as_vec()
        .expect("a command list")
        .iter()
        .map(scalar)
        .collect()
}

/// The Kafka version every other test runs (`scripts/services.sh` reads it there).
fn tested_kafka_version() -> String {
    let pom = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kafka/pom.xml"
    ))
    .unwrap();
    pom.split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("scripts/kafka/pom.xml names kafka.version")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_goes_through_the_pipeline_compose_sets_up() {
    // Arrange: the broker compose runs, its version the tests', with topic creation
    // as compose sets it.
    let compose = compose();
    let kafka = service(&compose, "kafka");
    assert_eq!(
        kafka["image"].as_str(),
        Some(format!("apache/kafka:{}", tested_kafka_version()).as_str()),
        "compose runs another Kafka than the tests"
    );
    let auto_create = environment(kafka)
        .get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
        .cloned()
        .unwrap_or_else(|| "true".to_owned());
    let broker = tokio::task::spawn_blocking(move || {
        PrivateBroker::start_with(&[("IR_KAFKA_AUTO_CREATE_TOPICS", &auto_create)])
    })
    .await
    .unwrap();
    let brokers = broker.brokers();

    // Arrange: compose's init step, from the service's image: its command and its
    // environment, the broker's address replaced.
    let topics = service(&compose, "topics");
    assert_eq!(
        topics["image"],
        service(&compose, "worker")["image"],
        "the init step runs the service's image"
    );
    let mut env = environment(topics);
    env.insert("KAFKA_BROKERS".to_owned(), brokers.clone());
    let init = Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(command(topics))
        .env_clear()
        .envs(&env)
        .output()
        .expect("run compose's init step");
    assert!(
        init.status.success(),
        "compose's init step failed: {}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );

    // Arrange: the worker with compose's environment, addresses replaced.
    let worker = service(&compose, "worker");
    let db = TestDb::new().await;
    let port = free_port();
    let mut env = environment(worker);
    for (key, value) in [
        ("DATABASE_URL", db.url.clone()),
        ("KAFKA_BROKERS", brokers.clone()),
        ("HTTP_ADDR", format!("127.0.0.1:{port}")),
    ] {
        assert!(env.contains_key(key), "compose's worker sets no {key}");
        env.insert(key.to_owned(), value);
    }
    let args = command(worker);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(String, String)> = env.into_iter().collect();
    let _service = Service::start("compose-worker", &args, &env);

    // Act: once compose's healthcheck would pass, an event arrives.
    let check = worker["healthcheck"]["test"]
        .as_vec()
        .and_then(|test| test.last())
        .map(scalar)
        .expect("the worker has a healthcheck");
    let path = &check[check.find("/readyz").expect("the healthcheck asks /readyz")..];
    let url = format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::new();
    eventually(WAIT, "the worker's healthcheck to pass", || async {
        let response = http.get(&url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let defaults = Settings::load(None).unwrap().kafka;
    let email = "marty@compose.test";
    send_events(
        &producer(&brokers),
        &defaults.input_topic,
        None,
        &[json!({"eventId": "compose-1", "email": email, "phoneNumber": "5551955"})],
    )
    .await;

    // Assert: it comes out as an identity.
    let mut output = TopicReader::open(&brokers, &defaults.output_topic).await;
    let records = output
        .read_until(WAIT, "the event's identity", |records| {
            records.iter().any(|r| r.value.is_some())
        })
        .await;
    let identity = records.iter().find(|r| r.value.is_some()).unwrap().json();
    assert_eq!(identity["contact"]["emails"], json!([email]), "{identity}");
    assert_eq!(
        identity["contact"]["phoneNumbers"],
        json!(["5551955"]),
        "{identity}"
    );
}
