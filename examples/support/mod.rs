//! The load driver shared by the load clients: `--concurrency` workers send requests
//! until `requests` are done, either as fast as answers come back (closed loop) or at a
//! fixed rate (open loop). Latency runs from the moment a request is sent; in open loop
//! the report also gives how late sends left against their schedule (tokio's timer ticks
//! in milliseconds), so a generator that fell behind shows instead of hiding the queue.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Latencies and failures of a run.
pub struct LoadReport {
    /// Sorted ascending.
    pub latencies: Vec<Duration>,
    /// Open loop: how late each send left against its schedule, sorted ascending.
    pub lateness: Vec<Duration>,
    /// Requests that failed or were not answered with success.
    pub failures: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// The `p` quantile (0..=1) of the latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        quantile(&self.latencies, p)
    }

    /// `p50=… p90=… p99=… max=…` in milliseconds.
    pub fn latency_line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms",
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        ) + &if self.lateness.is_empty() {
            String::new()
        } else {
            format!(
                " (sends late against schedule: p50={:.3}ms p99={:.3}ms)",
                ms(quantile(&self.lateness, 0.50)),
                ms(quantile(&self.lateness, 0.99))
            )
        }
    }
}

fn quantile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

/// Sends requests `0..requests` through `send` (true = success) from `concurrency`
/// workers; with `rate` (requests/s), request `i` is due at `i / rate` seconds.
pub async fn drive<F, Fut>(
    requests: usize,
    concurrency: usize,
    rate: Option<f64>,
    send: F,
) -> anyhow::Result<LoadReport>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, send) = (next.clone(), send.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut lateness = Vec::new();
            let mut failures = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    lateness.push(due.elapsed());
                }
                let sent = Instant::now();
                let ok = send(i).await;
                latencies.push(sent.elapsed());
                failures += usize::from(!ok);
            }
            (latencies, lateness, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut lateness = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (l, late, f) = worker.await?;
        latencies.extend(l);
        lateness.extend(late);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    lateness.sort_unstable();
    Ok(LoadReport {
        latencies,
        lateness,
        failures,
        elapsed,
    })
}
