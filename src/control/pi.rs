//! The PI controller's step: a pure function from settings, state and one measurement to
//! the next state.
//!
//! Measured: the model arm's notification ROI; actuator: the model arm's score threshold.
//! A higher threshold sends fewer, better notifications, so ROI below target raises it.
//!
//! The law works on the threshold's log-odds, with the error in percentage points:
//! `logit(threshold) = logit(bias) + Kp·e + Ki·I`, `e = 100 · (target − measured)`, the
//! bias being the policy's initial threshold. Scores are calibrated probabilities, and
//! how ROI answers a change of threshold is far more even across the range on the
//! log-odds scale than on the probability scale (near 0 almost everything is sent
//! whatever the threshold; near 1 a small change empties the arm), so one pair of gains
//! suits the whole range: with Kp 0.05, a 10-point shortfall moves a 0.30 threshold to
//! about 0.41. The result is then limited to at most `max_step` from the current
//! threshold, then to the policy's bounds, both in threshold units as the policy states
//! them.
//!
//! **Anti-windup by clamping (conditional integration):** the error is added to the
//! integral only when that does not push the output further into a limit (the bounds or
//! the step limit). Back-calculation would need a tracking time constant, one more gain
//! to tune against a plant that changes with every model; clamping needs none, and
//! because it also covers the step limit, a long slew at `max_step` builds no integral
//! that would later overshoot. After a long saturation the integral is the one held
//! when the limit was reached, so as soon as the error changes sign the proportional
//! term takes the output off the bound at the next step.

use serde::{Deserialize, Serialize};

/// Validated controller settings (from `policy.yaml`'s `controller` and `threshold`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Target ROI, a share in 0..1.
    pub target_roi: f64,
    /// Proportional gain: log-odds of the threshold per percentage point of error.
    pub kp: f64,
    /// Integral gain: log-odds of the threshold per accumulated point of error.
    pub ki: f64,
    /// Output with no error and no integral: the policy's initial threshold.
    pub bias: f64,
    /// Lowest threshold.
    pub min: f64,
    /// Highest threshold.
    pub max: f64,
    /// Most the threshold moves in one step.
    pub max_step: f64,
    /// Fewer model-arm sends than this in the window: hold.
    pub min_sends: u64,
}

/// What the controller carries from one step to the next.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct State {
    /// Accumulated error in percentage points (one term per step).
    pub integral: f64,
    /// The threshold in force.
    pub output: f64,
    /// ROI measured at the last step that had enough sends.
    pub last_measurement: Option<f64>,
}

impl State {
    /// The state before any step: no integral, the initial threshold.
    pub fn initial(settings: &Settings) -> Self {
        Self {
            integral: 0.0,
            output: settings.bias.clamp(settings.min, settings.max),
            last_measurement: None,
        }
    }
}

/// One window's measurement of the model arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Share of the model arm's sends followed by an action within 24 h.
    pub roi: f64,
    /// Model-arm sends in the window (with a complete outcome window).
    pub sends: u64,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The output moved (or stayed) by the PI law.
    Stepped,
    /// Too few sends to trust the measurement: nothing changed.
    HeldSmallSample,
}

impl Outcome {
    /// The outcome's name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stepped => "stepped",
            Outcome::HeldSmallSample => "held_small_sample",
        }
    }

    /// The outcome named `name`.
    pub fn named(name: &str) -> Option<Self> {
        [Outcome::Stepped, Outcome::HeldSmallSample]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// Which limit, if any, shaped the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// None: the PI law's output as computed.
    None,
    /// The most a step may move.
    MaxStep,
    /// The lowest threshold.
    Min,
    /// The highest threshold.
    Max,
}

impl Limit {
    /// The limit's name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::None => "none",
            Limit::MaxStep => "max_step",
            Limit::Min => "min",
            Limit::Max => "max",
        }
    }

    /// The limit named `name`.
    pub fn named(name: &str) -> Option<Self> {
        [Limit::None, Limit::MaxStep, Limit::Min, Limit::Max]
            .into_iter()
            .find(|l| l.as_str() == name)
    }
}

/// One step: the new state and everything needed to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// What happened.
    pub outcome: Outcome,
    /// Error in percentage points, `100 · (target − measured)`, when measured.
    pub error: Option<f64>,
    /// Proportional term, in log-odds.
    pub p_term: f64,
    /// Integral term, in log-odds.
    pub i_term: f64,
    /// Whether the error was added to the integral (false when it would wind up).
    pub integrated: bool,
    /// The limit that shaped the output.
    pub limit: Limit,
    /// The state after the step.
    pub next: State,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Limits `wanted` to `max_step` from `current`, then to the bounds.
fn limit(settings: &Settings, current: f64, wanted: f64) -> (f64, Limit) {
    let stepped = wanted.clamp(current - settings.max_step, current + settings.max_step);
    let bounded = stepped.clamp(settings.min, settings.max);
    let which = if bounded != stepped {
        if bounded == settings.min {
            Limit::Min
        } else {
            Limit::Max
        }
    } else if stepped != wanted {
        Limit::MaxStep
    } else {
        Limit::None
    };
    (bounded, which)
}

/// The controller's step for one measurement.
pub fn step(settings: &Settings, state: &State, measured: Measurement) -> Step {
    if measured.sends < settings.min_sends || !measured.roi.is_finite() {
        return Step {
            outcome: Outcome::HeldSmallSample,
            error: None,
            p_term: 0.0,
            i_term: settings.ki * state.integral,
            integrated: false,
            limit: Limit::None,
            next: *state,
        };
    }
    let error = 100.0 * (settings.target_roi - measured.roi);
    let p_term = settings.kp * error;
    let output_with =
        |integral: f64| sigmoid(logit(settings.bias) + p_term + settings.ki * integral);
    let integrated_value = state.integral + error;
    let wanted = output_with(integrated_value);
    let (output, which) = limit(settings, state.output, wanted);
    // Integrate unless the limit holds the output back in the direction the error pushes.
    let winds_up = (wanted > output && error > 0.0) || (wanted < output && error < 0.0);
    let integral = if winds_up {
        state.integral
    } else {
        integrated_value
    };
    Step {
        outcome: Outcome::Stepped,
        error: Some(error),
        p_term,
        i_term: settings.ki * integral,
        integrated: !winds_up,
        limit: which,
        next: State {
            integral,
            output,
            last_measurement: Some(measured.roi),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn settings() -> Settings {
        Settings {
            target_roi: 0.30,
            kp: 0.05,
            ki: 0.01,
            bias: 0.30,
            min: 0.05,
            max: 0.90,
            max_step: 0.05,
            min_sends: 100,
        }
    }

    fn measured(roi: f64) -> Measurement {
        Measurement { roi, sends: 1_000 }
    }

    #[test]
    fn outcome_and_limit_names_read_back_and_are_their_json() {
        // The names are what the controller's history stores and its API shows.
        for outcome in [Outcome::Stepped, Outcome::HeldSmallSample] {
            assert_eq!(Outcome::named(outcome.as_str()), Some(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
        for limit in [Limit::None, Limit::MaxStep, Limit::Min, Limit::Max] {
            assert_eq!(Limit::named(limit.as_str()), Some(limit));
            assert_eq!(serde_json::to_value(limit).unwrap(), limit.as_str());
        }
        assert_eq!(
            (Outcome::named("min"), Limit::named("stepped")),
            (None, None)
        );
    }

    #[test]
    fn roi_below_target_raises_the_threshold_and_above_lowers_it() {
        let s = settings();
        let start = State::initial(&s);
        let up = step(&s, &start, measured(0.295));
        assert!(up.error.unwrap() > 0.0);
        assert!(up.next.output > start.output, "{up:?}");
        let down = step(&s, &start, measured(0.305));
        assert!(down.next.output < start.output, "{down:?}");
        let on_target = step(&s, &start, measured(0.30));
        assert!((on_target.next.output - start.output).abs() < 1e-12);
    }

    #[test]
    fn the_pi_law_applies_within_the_limits() {
        let s = settings();
        let start = State {
            integral: 2.0,
            output: 0.33,
            last_measurement: None,
        };
        // Error 2 points: P = 0.05 · 2 = 0.1, I = 0.01 · (2 + 2) = 0.04 (log-odds).
        let next = step(&s, &start, measured(0.28));
        assert_eq!(next.limit, Limit::None);
        assert!((next.next.integral - 4.0).abs() < 1e-9);
        let expected = sigmoid(logit(0.30) + 0.1 + 0.04);
        assert!((next.next.output - expected).abs() < 1e-12, "{next:?}");
        assert_eq!(next.next.last_measurement, Some(0.28));
    }

    #[test]
    fn a_step_moves_at_most_max_step_and_never_leaves_the_bounds() {
        let s = settings();
        let big = step(&s, &State::initial(&s), measured(0.0));
        assert_eq!(big.limit, Limit::MaxStep);
        assert!((big.next.output - 0.35).abs() < 1e-12);
        let near_top = State {
            integral: 300.0,
            output: 0.88,
            last_measurement: None,
        };
        let top = step(&s, &near_top, measured(0.0));
        assert_eq!((top.next.output, top.limit), (0.90, Limit::Max));
        let near_bottom = State {
            integral: -300.0,
            output: 0.07,
            last_measurement: None,
        };
        let bottom = step(&s, &near_bottom, measured(1.0));
        assert_eq!((bottom.next.output, bottom.limit), (0.05, Limit::Min));
    }

    #[test]
    fn a_small_sample_holds_everything() {
        let s = settings();
        let start = State {
            integral: 3.0,
            output: 0.4,
            last_measurement: Some(0.25),
        };
        let held = step(
            &s,
            &start,
            Measurement {
                roi: 0.0,
                sends: 99,
            },
        );
        assert_eq!(held.outcome, Outcome::HeldSmallSample);
        assert_eq!(held.next, start);
        // What the history shows of a held step: no error, no P, the kept integral's I.
        assert_eq!(
            (held.error, held.p_term, held.i_term, held.integrated),
            (None, 0.0, s.ki * 3.0, false)
        );
        let enough = step(
            &s,
            &start,
            Measurement {
                roi: 0.0,
                sends: 100,
            },
        );
        assert_eq!(enough.outcome, Outcome::Stepped);
    }

    #[test]
    fn after_a_long_saturation_it_leaves_the_bound_at_once_when_the_error_turns() {
        let s = settings();
        let mut state = State::initial(&s);
        let mut at_bound = None;
        for _ in 0..200 {
            state = step(&s, &state, measured(0.10)).next; // unreachable: 20 points short
            at_bound = at_bound.or((state.output == s.max).then_some(state.integral));
        }
        assert_eq!(state.output, s.max);
        // Once on the bound the integral stopped growing (20 points a step otherwise).
        assert_eq!(Some(state.integral), at_bound, "wound up: {state:?}");
        // The target is now below what is measured: the output must leave the bound now.
        let turned = step(&s, &state, measured(0.35));
        assert!(turned.next.output < s.max, "{turned:?}");
        let again = step(&s, &turned.next, measured(0.35));
        assert!(again.next.output < turned.next.output);
    }

    proptest! {
        #[test]
        fn every_step_respects_the_limits(
            integral in -500.0..500.0f64,
            output in 0.05..=0.90f64,
            roi in 0.0..=1.0f64,
            sends in 0u64..10_000,
        ) {
            let s = settings();
            let state = State { integral, output, last_measurement: None };
            let next = step(&s, &state, Measurement { roi, sends }).next;
            prop_assert!(next.output >= s.min && next.output <= s.max);
            prop_assert!((next.output - output).abs() <= s.max_step + 1e-12);
        }

        #[test]
        fn the_integral_never_grows_while_a_limit_holds_the_output(
            integral in -500.0..500.0f64,
            output in 0.05..=0.90f64,
            roi in 0.0..=1.0f64,
        ) {
            let s = settings();
            let state = State { integral, output, last_measurement: None };
            let taken = step(&s, &state, measured(roi));
            if !taken.integrated {
                prop_assert_eq!(taken.next.integral, integral);
                prop_assert!(taken.limit != Limit::None);
            }
        }

        #[test]
        fn the_direction_follows_the_error_from_rest(roi in 0.0..=1.0f64) {
            let s = settings();
            let start = State::initial(&s);
            let next = step(&s, &start, measured(roi)).next;
            if roi < s.target_roi {
                prop_assert!(next.output >= start.output);
            } else {
                prop_assert!(next.output <= start.output);
            }
        }
    }
}

/// The controller in closed loop with a seeded stochastic plant: each step, a fresh
/// population of notification opportunities with a true chance of action and a model
/// score that ranks them imperfectly; the ones scored at or above the threshold are sent
/// and their actions drawn, and the measured ROI goes to the next step.
#[cfg(test)]
mod closed_loop {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    use rand_pcg::Pcg64Mcg;

    /// Opportunities per step: enough for a measurement within about a point.
    const OPPORTUNITIES: usize = 20_000;

    /// One window: sends at `threshold` and the ROI they earned.
    fn window(seed: u64, step: u64, threshold: f64) -> Measurement {
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let truth = Normal::new(-1.6, 1.0).unwrap();
        let noise = Normal::new(0.0, 0.7).unwrap();
        let (mut sends, mut actions) = (0u64, 0u64);
        for _ in 0..OPPORTUNITIES {
            let logit = truth.sample(&mut rng);
            let score = sigmoid(logit + noise.sample(&mut rng));
            if score >= threshold {
                sends += 1;
                actions += u64::from(rng.random::<f64>() < sigmoid(logit));
            }
        }
        Measurement {
            roi: if sends == 0 {
                0.0
            } else {
                actions as f64 / sends as f64
            },
            sends,
        }
    }

    fn settings(target_roi: f64) -> Settings {
        Settings {
            target_roi,
            min_sends: 200,
            ..super::tests::settings()
        }
    }

    /// Runs `steps` steps from `state`; returns the ROI measured at each step that moved.
    /// A held step's window is carried into the next one, as the service measures from
    /// the last step that moved.
    fn run(seed: u64, from_step: u64, s: &Settings, state: &mut State, steps: u64) -> Vec<f64> {
        let (mut sends, mut actions) = (0u64, 0.0);
        let mut rois = Vec::new();
        for k in from_step..from_step + steps {
            let window = window(seed, k, state.output);
            sends += window.sends;
            actions += window.roi * window.sends as f64;
            let roi = if sends == 0 {
                0.0
            } else {
                actions / sends as f64
            };
            let taken = step(s, state, Measurement { roi, sends });
            *state = taken.next;
            if taken.outcome == Outcome::Stepped {
                rois.push(roi);
                (sends, actions) = (0, 0.0);
            }
        }
        rois
    }

    /// Runs of consecutive measurements more than 2 points beyond the target on the side
    /// opposite to where the loop started.
    fn overshoots(rois: &[f64], target: f64) -> usize {
        let from_below = rois[0] < target;
        let beyond = |r: f64| {
            if from_below {
                r > target + 0.02
            } else {
                r < target - 0.02
            }
        };
        rois.iter()
            .zip(std::iter::once(&target).chain(rois))
            .filter(|&(&r, &before)| beyond(r) && !beyond(before))
            .count()
    }

    #[test]
    fn from_a_far_threshold_roi_settles_within_two_points_without_oscillating() {
        for seed in [1, 2, 3] {
            for start in [0.05, 0.70] {
                // The policy's initial threshold is far from the one that earns 30 % (0.18).
                let s = Settings {
                    bias: start,
                    ..settings(0.30)
                };
                let mut state = State::initial(&s);
                let rois = run(seed, 0, &s, &mut state, 100);
                let within = |r: &f64| (r - s.target_roi).abs() <= 0.02;
                let context = format!("seed {seed} from {start}: {rois:?}");
                assert!(!within(&rois[0]), "{context}: started on target");
                let settled = rois.iter().position(within).expect(&context);
                assert!(settled <= 40, "reached at step {settled}; {context}");
                assert!(rois[50..].iter().all(within), "left the band; {context}");
                assert!(
                    overshoots(&rois, s.target_roi) <= 1,
                    "oscillates; {context}"
                );
            }
        }
    }

    #[test]
    fn an_unreachable_target_saturates_and_recovers_promptly_when_lowered() {
        let seed = 7;
        // Even the highest threshold earns about 56 %: a 90 % target is out of reach.
        let mut s = Settings {
            max: 0.70,
            ..settings(0.90)
        };
        let mut state = State::initial(&s);
        run(seed, 0, &s, &mut state, 60);
        assert_eq!(state.output, s.max, "{state:?}");
        s.target_roi = 0.30;
        let rois = run(seed, 60, &s, &mut state, 1);
        assert!(
            state.output < s.max,
            "stayed on the bound after the target moved: {state:?}"
        );
        let rois = [rois, run(seed, 61, &s, &mut state, 40)].concat();
        let settled = rois
            .iter()
            .position(|r| (r - 0.30).abs() <= 0.02)
            .expect("never recovered");
        assert!(settled <= 30, "recovered only at step {settled}: {rois:?}");
    }
}
