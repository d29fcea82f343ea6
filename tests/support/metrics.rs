//! What the HTTP sidecar of a running service exposes, scraped from outside.

use std::time::Duration;

/// Sums the samples of a Prometheus metric (all label sets) from `/metrics`.
pub async fn metric(base_url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /readyz` status code, or `None` when the sidecar does not answer.
pub async fn readiness(base_url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("{base_url}/readyz"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}
