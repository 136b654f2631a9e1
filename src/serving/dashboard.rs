//! `GET /dashboard`: one HTML page for the growth lead. It shows:
//! - the rollout in force and who set it;
//! - the controller's threshold and latest steps;
//! - the latest guardrail checks, and each guardrail's z over the checks before, so a
//!   drift towards a breach shows before it trips;
//! - the per-arm KPIs of the decision log's last seven days, and of the latest seven days
//!   whose users' D7 is known.
//!
//! It holds aggregates only, never a user, like `/metrics`: it is read-only and needs
//! no token. Keep it on the internal network as `/metrics` is kept. It refreshes every
//! 30 seconds; the KPIs, which read two weeks of the decision log, are computed at most
//! once per `--dashboard-kpi-secs` however many pages are open, and in the background
//! once a page has been shown ([`KpiCache`]).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::Html;
use chrono::{DateTime, Duration, Utc};

use super::ApiContext;
use super::admin::rollout_view;
use super::error::ApiError;
use crate::control::{guardrail, kpi, tick};
use crate::rollout::Comparison;

/// Controller steps shown.
const STEPS: i64 = 14;

/// Guardrail checks whose z is shown per metric (12 h at the default hourly interval).
const Z_CHECKS: i64 = 12;

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A titled section holding preformatted `text`.
fn section(out: &mut String, title: &str, text: &str) {
    let _ = write!(
        out,
        "<h2>{}</h2>\n<pre>{}</pre>\n",
        escape(title),
        escape(text)
    );
}

/// The KPI section as last computed.
#[derive(Clone)]
struct KpiSection {
    /// When it was computed (shown on the page).
    computed_at: DateTime<Utc>,
    /// When it was computed, for its age.
    computed: Instant,
    /// The section's text.
    text: String,
}

/// The dashboard's KPI section, kept between page loads. The queries behind it read two
/// weeks of decisions and their outcomes (seconds on a large log, more than a request
/// may take), so:
/// - an open page refreshing every 30 seconds does not run them each time: a section is
///   answered as it is for `every` after its computation;
/// - past that, the kept section is still answered at once, with the time it was
///   computed, while one new computation runs in the background; only a load with
///   nothing kept waits for one;
/// - one computation runs at a time, on its own task, so one that outlasts its request
///   still leaves its result for the next load; a failed one keeps what was kept.
#[derive(Default)]
pub struct KpiCache {
    /// The latest section computed.
    kept: Arc<std::sync::Mutex<Option<KpiSection>>>,
    /// Held across a computation.
    computing: Arc<tokio::sync::Mutex<()>>,
}

impl KpiCache {
    /// The section and when it was computed: the kept one, computing a new one from
    /// `compute` in the background once it is older than `every`; with nothing kept, a
    /// new one, waited for. A failed computation keeps nothing new and, waited for,
    /// reports the error.
    async fn get<F>(
        &self,
        every: std::time::Duration,
        compute: F,
    ) -> Result<(DateTime<Utc>, String), ApiError>
    where
        F: Future<Output = Result<String, ApiError>> + Send + 'static,
    {
        if let Some(section) = kept_section(&self.kept) {
            // Past its interval, and unless a computation already runs, a new one starts.
            if section.computed.elapsed() >= every
                && let Ok(computing) = self.computing.clone().try_lock_owned()
            {
                let kept = self.kept.clone();
                tokio::spawn(async move {
                    let _computing = computing;
                    if let Err(e) = Self::compute_into(&kept, compute).await {
                        tracing::warn!(error = %e, "dashboard KPIs not refreshed; showing the last");
                    }
                });
            }
            return Ok((section.computed_at, section.text));
        }
        let kept = self.kept.clone();
        let computing = self.computing.clone();
        let task = tokio::spawn(async move {
            let _computing = computing.lock_owned().await;
            // Loads that waited together share the first one's computation.
            if let Some(section) = kept_section(&kept) {
                return Ok((section.computed_at, section.text));
            }
            Self::compute_into(&kept, compute).await
        });
        task.await.map_err(|_| ApiError::Internal)?
    }

    /// Runs `compute` and keeps its section.
    async fn compute_into<F>(
        kept: &std::sync::Mutex<Option<KpiSection>>,
        compute: F,
    ) -> Result<(DateTime<Utc>, String), ApiError>
    where
        F: Future<Output = Result<String, ApiError>>,
    {
        let (computed, computed_at) = (Instant::now(), Utc::now());
        let text = compute.await?;
        *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(KpiSection {
            computed_at,
            computed,
            text: text.clone(),
        });
        Ok((computed_at, text))
    }
}

/// The kept section, if any (a poisoned lock only means a panic elsewhere while a plain
/// value was written whole: it is still sound).
fn kept_section(kept: &std::sync::Mutex<Option<KpiSection>>) -> Option<KpiSection> {
    kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Per-arm KPIs of the decision log's last seven days (with the adjusted D7 lift), as the
/// dashboard shows them, then those of the latest seven days whose users' D7 is known:
/// the last week's users have not reached the end of their 7th day.
async fn kpi_section(ctx: ApiContext) -> Result<String, ApiError> {
    let Some(span) = kpi::logged_span(&ctx.pool).await.map_err(unavailable)? else {
        return Ok("the decision log is empty".to_owned());
    };
    let week = Duration::days(7);
    let from = span.last - week;
    let cohort = kpi::d7_cohort(span.observed, week, None).filter(|c| span.first < c.to);
    // Each reads a week of the log: side by side, on two connections.
    let (last_week, with_d7) = tokio::try_join!(
        kpi::report(
            &ctx.pool,
            from,
            span.last + Duration::seconds(1),
            span.observed
        ),
        async {
            match cohort {
                Some(c) => kpi::report(&ctx.pool, c.from, c.to, span.observed)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
    )
    .map_err(unavailable)?;
    let mut text = format!(
        "decisions {} → {}, outcomes observed to {} (the newest refreshed event)\n{last_week}",
        from.to_rfc3339(),
        span.last.to_rfc3339(),
        span.observed.to_rfc3339(),
    );
    if let Some((c, table)) = cohort.zip(with_d7) {
        let _ = write!(
            text,
            "\ndecisions {} → {}, the latest week whose D7 is known for every user\n{table}",
            c.from.to_rfc3339(),
            c.to.to_rfc3339(),
        );
    }
    Ok(text)
}

/// A store error while gathering the page.
fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable(format!("dashboard data: {e}"))
}

/// `GET /dashboard`: rollout, controller, guardrails and KPIs on one page.
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, content_type = "text/html", body = String),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn dashboard(State(ctx): State<ApiContext>) -> Result<Html<String>, ApiError> {
    let rollout = rollout_view(&ctx)?;
    let loaded = ctx.current()?;
    let stored = tick::load(&ctx.pool).await.map_err(unavailable)?;
    let steps = tick::history(&ctx.pool, STEPS).await.map_err(unavailable)?;
    let checks = tick::latest_checks(&ctx.pool).await.map_err(unavailable)?;
    let recent_z = tick::recent_z(&ctx.pool, Z_CHECKS)
        .await
        .map_err(unavailable)?;

    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>nudge</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style>\
         </head><body>\n<h1>nudge</h1>\n",
    );

    let mut text = format!(
        "mode {} at {}% (from the {}), holdout {}%, kill switch {}\npolicy {}, salt {}\n",
        rollout.mode.as_str(),
        rollout.canary_percent,
        match rollout.source {
            crate::rollout::Source::Flag => "runtime flag",
            crate::rollout::Source::Policy => "policy file",
            crate::rollout::Source::Unread => "policy file, held at shadow: flags unreadable",
        },
        rollout.holdout_percent,
        if rollout.kill_switch { "ON" } else { "off" },
        rollout.policy.version,
        rollout.salt,
    );
    if let Some(flag) = &rollout.flag {
        let _ = writeln!(
            text,
            "flag set by {} at {}: {}",
            flag.set_by,
            flag.set_at.to_rfc3339(),
            flag.reason
        );
    }
    section(&mut out, "Rollout", &text);

    let policy = &loaded.policy;
    let mut text = format!(
        "threshold {:.3} (bounds {:.2}–{:.2}), target ROI {:.0}%, a step every {} h{}\n",
        tick::threshold_in_force(policy, stored.as_ref()),
        policy.threshold.min,
        policy.threshold.max,
        100.0 * policy.controller.target_roi,
        policy.controller.interval.num_hours(),
        if policy.controller.dry_run {
            " (dry run)"
        } else {
            ""
        },
    );
    for s in &steps {
        let _ = writeln!(
            text,
            "{}  {:>6} sends  ROI {:>6}  threshold {:.3} → {:.3}  {}{}",
            s.at.to_rfc3339(),
            s.sends,
            s.roi
                .map_or_else(|| "n/a".into(), |r| format!("{:.1}%", 100.0 * r)),
            s.output_before,
            s.step.next.output,
            s.step.outcome.as_str(),
            if s.dry_run { " (dry run)" } else { "" },
        );
    }
    section(&mut out, "Controller (latest steps first)", &text);

    let compared = match rollout.guardrails_compare {
        Comparison::NoModelArm => "nothing to check: the model decides for nobody".to_owned(),
        Comparison::NoControl => "NOT GUARDED: the model decides for every user and no \
                                  control is left to compare with (set \
                                  rollout.holdout_percent to keep one)"
            .to_owned(),
        Comparison::ModelArm(arm) => format!(
            "{} compared with control by {}",
            arm.as_str(),
            guardrail::test_summary(&policy.guardrails)
        ),
    };
    let mut text = match &checks {
        None => format!("{compared}\nno guardrail check yet\n"),
        Some(tick::LatestChecks { at, checks }) => format!(
            "{compared}\nlatest check at {}\n{}",
            at.to_rfc3339(),
            guardrail::lines(checks, &policy.guardrails)
        ),
    };
    if !recent_z.is_empty() {
        let _ = writeln!(
            text,
            "z at the latest {Z_CHECKS} checks, newest first (the latest bars are in the lines above):"
        );
        for (metric, z) in &recent_z {
            let values: Vec<String> = z
                .iter()
                .map(|z| z.map_or_else(|| "n/a".into(), |z| format!("{z:.2}")))
                .collect();
            let _ = writeln!(text, "  {:<13} {}", metric.as_str(), values.join("  "));
        }
    }
    section(&mut out, "Guardrails", &text);

    let (computed_at, text) = ctx
        .dashboard_kpis
        .get(ctx.dashboard_kpi_every, kpi_section(ctx.clone()))
        .await?;
    let text = format!(
        "computed at {} (at most every {} s)\n{text}",
        computed_at.to_rfc3339(),
        ctx.dashboard_kpi_every.as_secs()
    );
    section(&mut out, "KPIs by arm", &text);
    out.push_str("</body></html>\n");
    Ok(Html(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    fn text(text: &str) -> impl Future<Output = Result<String, ApiError>> + Send + 'static {
        std::future::ready(Ok(text.to_owned()))
    }

    fn failure() -> impl Future<Output = Result<String, ApiError>> + Send + 'static {
        std::future::ready(Err(ApiError::Unavailable("down".into())))
    }

    /// A computation of `text` that ends once the returned sender is used.
    fn gated(
        text: &str,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = Result<String, ApiError>> + Send + 'static,
    ) {
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let text = text.to_owned();
        (finish, async move {
            let _ = finished.await;
            Ok(text)
        })
    }

    /// Waits until no computation runs.
    async fn settled(cache: &KpiCache) {
        drop(cache.computing.lock().await);
    }

    #[tokio::test]
    async fn a_section_is_kept_for_its_interval_and_a_failure_waited_for_keeps_nothing() {
        let cache = KpiCache::default();
        assert!(cache.get(HOUR, failure()).await.is_err());
        let (at, first) = cache.get(HOUR, text("first")).await.unwrap();
        assert_eq!(first, "first", "the failure kept nothing");
        assert_eq!(cache.get(HOUR, failure()).await.unwrap(), (at, first));
    }

    #[tokio::test]
    async fn past_its_interval_the_kept_section_is_answered_at_once_while_one_new_is_computed() {
        let cache = KpiCache::default();
        let (at, _) = cache.get(HOUR, text("first")).await.unwrap();
        let (finish, second) = gated("second");
        // Answered before the new computation can end: a load that waited would time out.
        let stale = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            cache.get(std::time::Duration::ZERO, second),
        )
        .await
        .expect("the kept section is answered at once")
        .unwrap();
        assert_eq!(stale, (at, "first".to_owned()));
        // While it runs, no other starts: this one is dropped unrun.
        let (_, other) = cache
            .get(std::time::Duration::ZERO, text("other"))
            .await
            .unwrap();
        assert_eq!(other, "first");
        finish.send(()).unwrap();
        settled(&cache).await;
        assert_eq!(cache.get(HOUR, failure()).await.unwrap().1, "second");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_section() {
        let cache = KpiCache::default();
        let (at, _) = cache.get(HOUR, text("first")).await.unwrap();
        let stale = cache
            .get(std::time::Duration::ZERO, failure())
            .await
            .unwrap();
        assert_eq!(stale, (at, "first".to_owned()));
        settled(&cache).await;
        assert_eq!(
            cache.get(HOUR, failure()).await.unwrap(),
            (at, "first".to_owned())
        );
    }

    #[tokio::test]
    async fn a_computation_outlasting_its_request_is_kept_for_the_next_load() {
        let cache = KpiCache::default();
        let (finish, slow) = gated("slow");
        // The request gives up (its timeout) before the computation ends.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(20), cache.get(HOUR, slow)).await;
        assert!(gave_up.is_err());
        finish.send(()).unwrap();
        let (_, text) = cache.get(HOUR, failure()).await.unwrap();
        assert_eq!(text, "slow");
    }

    #[test]
    fn html_special_characters_are_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
