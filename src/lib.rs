//! nudge: trains and serves EverReach's growth models.
//!
//! The library holds every piece of logic; `src/bin/` holds thin entry points.
//! See `ARCHITECTURE.md` for the modules, what each owns and the invariants between them.

#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod evaluation;
pub mod features;
pub mod ingest;
pub mod models;
pub mod policy;
pub mod rollout;
pub mod serving;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod training;
