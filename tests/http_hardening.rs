//! The sidecar under hostile clients (§5 v2): writes need `application/json`, slow
//! clients are cut off with 408, connections are bounded (503 + Retry-After past the
//! bound), and every error answer, whoever produced it, has the JSON error body.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::app::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "hardening-admin";
/// Bound on waiting for any one answer in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

/// An answer read off a raw connection until the server closed it.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_answer(stream: &mut TcpStream) -> RawAnswer {
    let mut bytes = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes within the deadline")
        .expect("read the answer");
    let text = String::from_utf8(bytes).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base_url.trim_start_matches("http://"))
        .await
        .unwrap()
}

fn assert_error_shape(what: &str, status: u16, body: &Value, expected: (u16, &str)) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (expected.0, Some(expected.1)),
        "{what}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
    assert_eq!(
        body["error"].as_object().unwrap().len(),
        2,
        "{what}: {body}"
    );
}

#[tokio::test]
async fn a_write_without_application_json_is_refused_with_415_and_writes_nothing() {
    let app = TestApp::spawn_http(|s| s.http.admin_token = Some(ADMIN.to_owned().into())).await;
    let body = r#"{"email":"cross.site@x.io"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
        Some("application/jsonx"),
    ] {
        let mut request = app
            .http
            .post(format!("{}/identify", app.base_url))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_error_shape(
            &format!("{content_type:?}"),
            status,
            &answer,
            (415, "unsupported_media_type"),
        );
    }
    let forget = app
        .http
        .post(format!("{}/forget", app.base_url))
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body(r#"{"id":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forget.status().as_u16(), 415);
    assert_eq!(app.db.count("SELECT count(*) FROM contact").await, 0);

    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ] {
        let response = app
            .http
            .post(format!("{}/identify", app.base_url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{content_type}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_error_answer_from_handlers_and_middleware_has_the_json_error_body() {
    let app = TestApp::spawn_http(|s| {
        s.http.auth_token = Some("api-token".to_owned().into());
        s.http.body_limit_bytes = 1024;
        s.http.body_read_timeout = Duration::from_millis(300);
        s.http.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let url = |p: &str| format!("{}{p}", app.base_url);
    let json = |r: reqwest::RequestBuilder| {
        r.bearer_auth("api-token")
            .header("content-type", "application/json")
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, (u16, &str))> = vec![
        (
            "unknown route",
            app.http.get(url("/nowhere")),
            (404, "no_route"),
        ),
        (
            "wrong method",
            app.http.delete(url("/identify")),
            (405, "method_not_allowed"),
        ),
        (
            "no token",
            app.http.get(url("/identify?email=a@x.io")),
            (401, "unauthorized"),
        ),
        (
            "admin off",
            app.http.post(url("/forget")),
            (403, "admin_disabled"),
        ),
        (
            "not JSON",
            json(app.http.post(url("/identify"))).body("{"),
            (400, "malformed_json"),
        ),
        (
            "not an object",
            json(app.http.post(url("/identify"))).body("[]"),
            (400, "wrong_type"),
        ),
        (
            "no identifier",
            json(app.http.post(url("/identify"))).body("{}"),
            (400, "no_identifier"),
        ),
        (
            "too large",
            json(app.http.post(url("/identify")))
                .body(format!(r#"{{"email":"{}"}}"#, "a".repeat(2048))),
            (413, "payload_too_large"),
        ),
        (
            "text/plain",
            app.http
                .post(url("/identify"))
                .bearer_auth("api-token")
                .body("{}"),
            (415, "unsupported_media_type"),
        ),
        (
            "bad query",
            app.http
                .get(url("/identify?email=%FF"))
                .bearer_auth("api-token"),
            (400, "invalid_value"),
        ),
        (
            "bad path",
            app.http
                .get(url("/identities/abc/history"))
                .bearer_auth("api-token"),
            (400, "invalid_value"),
        ),
        (
            "id beyond i64",
            app.http
                .get(url("/identities/99999999999999999999/history"))
                .bearer_auth("api-token"),
            (400, "invalid_value"),
        ),
        (
            "not found",
            app.http
                .get(url("/identify?email=nobody@x.io"))
                .bearer_auth("api-token"),
            (404, "not_found"),
        ),
    ];
    for (what, request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(content_type, "application/json", "{what}");
        assert_error_shape(what, status, &body, expected);
    }

    // A body that does not arrive in time: 408, not 503 with an empty body.
    let started = Instant::now();
    let mut slow_body = connect(&app).await;
    slow_body
        .write_all(b"POST /identify HTTP/1.1\r\nhost: x\r\nauthorization: Bearer api-token\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\"")
        .await
        .unwrap();
    let answer = read_answer(&mut slow_body).await;
    assert_error_shape(
        "slow body",
        answer.status,
        &answer.body,
        (408, "request_timeout"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off in bounded time"
    );

    // Headers that do not arrive in time: 408 and closed.
    let started = Instant::now();
    let mut slow_headers = connect(&app).await;
    slow_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut slow_headers).await;
    assert_error_shape(
        "slow headers",
        answer.status,
        &answer.body,
        (408, "request_timeout"),
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off in bounded time"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM contact").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_its_time_gets_503_with_the_json_error_body() {
    // The body timeout is longer than the request's: the request timeout answers.
    let app = TestApp::spawn_http(|s| {
        s.http.request_timeout = Duration::from_millis(300);
        s.http.body_read_timeout = Duration::from_secs(10);
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /identify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_error_shape(
        "request timeout",
        answer.status,
        &answer.body,
        (503, "timeout"),
    );
    app.stop().await;
}

#[tokio::test]
async fn connections_past_the_bound_get_503_with_retry_after_and_are_closed() {
    let app = TestApp::spawn_http(|s| {
        s.http.max_connections = 3;
        s.http.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    // Three connections hold every slot; prove each is being served.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut first))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut over = connect(&app).await;
    over.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut over).await;
    assert_error_shape(
        "over the bound",
        answer.status,
        &answer.body,
        (503, "overloaded"),
    );
    assert_eq!(answer.header("retry-after"), Some("1"));

    // A freed slot serves again.
    drop(held.pop());
    let served = support::eventually(DEADLINE, "a freed connection slot", || async {
        let response = reqwest::Client::new()
            .get(format!("{}/healthz", app.base_url))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    assert_eq!(served, ());
    drop(held);
    app.stop().await;
}

/// A few hundred loopback connections, each sending one header byte per second,
/// while normal `POST /identify` requests are measured: every one of them succeeds
/// and each slow connection is cut off once its header time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_flood_leaves_normal_requests_served() {
    const SLOW_CLIENTS: usize = 300;
    const REQUESTS: usize = 300;
    let header_timeout = Duration::from_millis(1500);
    let app = TestApp::spawn_http(|s| {
        s.http.header_read_timeout = header_timeout;
    })
    .await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    // Slow clients that have connected, and that have been cut off, at least once.
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cut_once = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..SLOW_CLIENTS {
        let addr = addr.clone();
        let stop = stop.clone();
        let (connected, cut_once) = (connected.clone(), cut_once.clone());
        flood.spawn(async move {
            // (connections cut off, longest time one stayed open)
            let mut cut = (0usize, Duration::ZERO);
            while !stop.is_cancelled() {
                let Ok(mut stream) = TcpStream::connect(&addr).await else {
                    continue;
                };
                if cut.0 == 0 && cut.1.is_zero() {
                    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let opened = Instant::now();
                let mut ticks = tokio::time::interval(Duration::from_secs(1));
                let mut eof = [0u8; 256];
                let request = b"POST /identify HTTP/1.1\r\nhost: x\r\n";
                let mut at = 0;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        read = stream.read(&mut eof) => {
                            // The server's 408, then its close.
                            if matches!(read, Ok(n) if n > 0) {
                                assert!(eof.starts_with(b"HTTP/1.1 408"), "a slow client gets 408");
                                let _ = stream.read_to_end(&mut Vec::new()).await;
                            }
                            if cut.0 == 0 {
                                cut_once.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            cut = (cut.0 + 1, cut.1.max(opened.elapsed()));
                            break;
                        }
                        _ = ticks.tick() => {
                            let _ = stream.write_all(&request[at % request.len()..][..1]).await;
                            at += 1;
                        }
                    }
                }
            }
            cut
        });
    }

    // Let the flood build up: every slow client connected at least once.
    support::eventually(
        Duration::from_secs(30),
        "every slow client to connect",
        || async {
            (connected.load(std::sync::atomic::Ordering::Relaxed) >= SLOW_CLIENTS).then_some(())
        },
    )
    .await;
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let started = Instant::now();
        let response = client
            .post(format!("{}/identify", app.base_url))
            .header("content-type", "application/json")
            .body(format!(r#"{{"email":"flood-{i}@x.io"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "request {i} during the flood"
        );
        latencies.push(started.elapsed());
    }
    // The flood lasts until the server has cut off every slow client at least once.
    support::eventually(
        Duration::from_secs(30),
        "every slow client to be cut off",
        || async {
            (cut_once.load(std::sync::atomic::Ordering::Relaxed) >= SLOW_CLIENTS).then_some(())
        },
    )
    .await;
    stop.cancel();
    let mut cut_off = 0;
    let mut longest = Duration::ZERO;
    while let Some(joined) = flood.join_next().await {
        let (n, open) = joined.unwrap();
        cut_off += n;
        longest = longest.max(open);
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "slow-client flood: {SLOW_CLIENTS} slow clients, {cut_off} slow connections cut off (longest open {longest:?}); \
         {REQUESTS} POST /identify: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    assert!(cut_off >= SLOW_CLIENTS, "the slow connections were cut off");
    assert!(
        longest < header_timeout + Duration::from_secs(3),
        "no slow connection outlived its header time by much: {longest:?}"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM contact").await,
        REQUESTS as i64
    );
    app.stop().await;
}
