//! Load client for `GET /v1/features/{user_id}`: `--concurrency` connections ask for
//! random users among u0 … u<users-1>, as fast as answers come (closed loop) or at
//! `--rate` requests/s (open loop), and report throughput and latency percentiles.
//!
//! Run it through `benches/features_online.sh`, which prepares the data and the server.

mod support;

use clap::Parser;
use rand::Rng;

/// Reads online features from a running nudge-serve and measures throughput and latency.
#[derive(Parser)]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Number of requests to send.
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Fixed request rate (requests/s); unset = as fast as answers come back.
    #[arg(long)]
    rate: Option<f64>,
    /// Users the requests are spread over (all must have features).
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// The server's scheduler token.
    #[arg(long, env = "NUDGE_SCHEDULER_TOKEN")]
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rng();
    let urls: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        (0..args.requests)
            .map(|_| {
                format!(
                    "{}/v1/features/u{}",
                    args.url,
                    rng.random_range(0..args.users)
                )
            })
            .collect(),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", args.token).parse()?,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .default_headers(headers)
        .build()?;
    let report = support::drive(args.requests, args.concurrency, args.rate, move |i| {
        let (client, urls) = (client.clone(), urls.clone());
        async move {
            client
                .get(&urls[i])
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    println!(
        "requests={} concurrency={} rate={} failures={}\nelapsed={:.2}s throughput={:.0} req/s\nlatency: {}",
        args.requests,
        args.concurrency,
        args.rate
            .map_or_else(|| "max (closed loop)".to_owned(), |r| format!("{r:.0}/s")),
        report.failures,
        report.elapsed.as_secs_f64(),
        args.requests as f64 / report.elapsed.as_secs_f64(),
        report.latency_line(),
    );
    anyhow::ensure!(report.failures == 0, "{} requests failed", report.failures);
    Ok(())
}
