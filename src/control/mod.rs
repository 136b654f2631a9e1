//! The control loop: measure the model arm's notification ROI, compare it with the
//! target, move the model arm's score threshold; and guard the canary.
//!
//! [`pi`] is the controller's step, a pure function; the state and every step's history
//! live in Postgres so a restart continues where it stopped.

pub mod pi;
