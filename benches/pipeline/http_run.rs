//! The HTTP run: the release binary in `http` mode on a fresh database, `POST
//! /identify` from `concurrency` keep-alive connections for a fixed time.

use crate::checks::{self, Check};
use crate::load::{closed_loop, Call, LoadReport};
use crate::services::{Database, Mode, Servers, Service};
use crate::workload::{Event, Mix};
use futures::FutureExt;
use std::sync::Arc;

pub async fn run(
    servers: &Servers,
    mix: &Mix,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<(LoadReport, Vec<Check>)> {
    let label = format!("http_{concurrency}");
    let db = Database::create(servers, &label).await?;
    let service = Service::start(servers, Mode::Http, &label, &[("DATABASE_URL", &db.url)]).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{}/identify", service.base_url);
    let call: Call = Arc::new(move |event: Event| {
        let request = client.post(&url).json(&event.identify_body());
        async move {
            match request.send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    // Read the body: the connection goes back to the pool only then.
                    response.bytes().await.is_ok() && ok
                }
                Err(_) => false,
            }
        }
        .boxed()
    });
    let report = closed_loop(mix, concurrency, seconds, call).await;
    let status = service.stop().await.ok();
    let checks = vec![checks::clean_exit(status), checks::invariants(&db).await];
    db.drop_database(servers).await?;
    Ok((report, checks))
}
