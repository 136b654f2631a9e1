//! The control loop: measure the model arm's notification ROI, compare it with the
//! target, move the model arm's score threshold; and guard the canary.
//!
//! - [`pi`]: the controller's step, a pure function of settings, state and measurement.
//! - [`guardrail`]: the canary-versus-control tests, pure functions of the KPIs.
//! - [`kpi`]: per-arm KPIs of the decision log and events (the `kpi.arms` SQL).
//! - [`tick`]: the I/O edge. One tick at a time `at`, in one transaction under an
//!   advisory lock: guardrails, then the controller if due; state and history in
//!   Postgres, so a restart continues where it stopped and one replica acts per tick.
//! - [`closed_loop`]: the simulator with nudge-serve as its notification policy.
//! - [`churn_watch`]: the demo's check of the served churn bands against the truth.
//! - [`calibration`]: the logged churn scores against what the users then did.

pub mod calibration;
pub mod churn_watch;
pub mod closed_loop;
pub mod guardrail;
pub mod kpi;
pub mod pi;
pub mod tick;
