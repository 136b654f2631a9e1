//! Load client for the capture endpoint: sends pre-built batches of unique events from
//! `--concurrency` workers and reports sustained events/s and request latency percentiles.
//!
//! Run it through `benches/ingest_load.sh`, which starts a release nudge-serve first.

mod support;

use std::sync::Arc;

use clap::Parser;
use serde_json::json;

/// Sends capture API batches to a running nudge-serve and measures throughput and latency.
#[derive(Parser)]
struct Args {
    /// Capture endpoint URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/batch/")]
    url: String,
    /// Project token the server accepts.
    #[arg(long, env = "NUDGE_POSTHOG_TOKEN")]
    token: String,
    /// Number of requests to send.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
}

fn build_bodies(args: &Args) -> Vec<String> {
    let sources = ["push", "email", "organic"];
    (0..args.requests)
        .map(|r| {
            let batch: Vec<_> = (0..args.batch_size)
                .map(|i| {
                    let n = r * args.batch_size + i;
                    json!({
                        "uuid": uuid::Uuid::new_v4().to_string(),
                        "event": "app_opened",
                        "distinct_id": format!("u{}", n % args.users),
                        "timestamp": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n % 28, n % 24, n % 60),
                        "properties": {"source": sources[n % 3], "$lib": "load", "$ip": "203.0.113.1"},
                    })
                })
                .collect();
            json!({"api_key": args.token, "batch": batch}).to_string()
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bodies = Arc::new(build_bodies(&args));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = args.url.clone();
    let report = support::drive(args.requests, args.concurrency, None, move |i| {
        let (client, bodies, url) = (client.clone(), bodies.clone(), url.clone());
        async move {
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(bodies[i].clone())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    let events = args.requests * args.batch_size;
    println!(
        "requests={} batch={} concurrency={} failures={}\n\
         elapsed={:.2}s events/s={:.0}\n\
         latency per {}-event request: {}",
        args.requests,
        args.batch_size,
        args.concurrency,
        report.failures,
        report.elapsed.as_secs_f64(),
        events as f64 / report.elapsed.as_secs_f64(),
        args.batch_size,
        report.latency_line(),
    );
    anyhow::ensure!(report.failures == 0, "{} requests failed", report.failures);
    Ok(())
}
