//! Time integration of the training dynamics.
//!
//! Gradient flow uses embedded Runge-Kutta pairs (Dormand-Prince 5(4) or 8(5,3)) under a
//! mixed error test `|err_i| <= atol + rtol |y_i|` in the RMS norm. `dopri5` is the
//! allocation-free stepper of [`crate::dopri5`]; `ode-solvers-dopri5` and `dop853` call the
//! `ode_solvers` crate, whose Dormand-Prince 5(4) takes the same steps within a call but
//! allocates new state-sized vectors for every stage. A run makes one solver call at a time
//! and keeps one state in memory: `dopri5` calls end at the first step past an output time,
//! whose row comes from the dense output, and the `ode_solvers` calls land on it. Each call
//! starts from the step size (and, for `dopri5`, the controller memory) the previous call
//! ended with, which checkpoints store, so a resumed run repeats an uninterrupted one.
//!
//! Gradient descent with step eta is the explicit Euler method of the flow, with time
//! t = eta x step.

use std::cell::{Cell, RefCell};

use ode_solvers::dop_shared::IntegrationError;

use crate::dopri5::{self, OdeSystem, StepRule};
use ode_solvers::{DVector, Dop853, Dopri5, OutputType, System};
use serde::{Deserialize, Serialize};

use crate::dynamics::Dynamics;
use crate::error::Error;

/// Integration method, as written in configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IntegratorKind {
    /// Full-batch gradient descent with a fixed step eta.
    GradientDescent,
    /// Gradient flow by Dormand-Prince 5(4) with adaptive steps.
    Dopri5,
    /// The same method and controller through the `ode_solvers` crate (slower: it allocates
    /// per stage), kept to cross-check `dopri5`.
    OdeSolversDopri5,
    /// Gradient flow by Dormand-Prince 8(5,3) with adaptive steps.
    Dop853,
}

impl IntegratorKind {
    pub fn name(self) -> &'static str {
        match self {
            IntegratorKind::GradientDescent => "gradient-descent",
            IntegratorKind::Dopri5 => "dopri5",
            IntegratorKind::OdeSolversDopri5 => "ode-solvers-dopri5",
            IntegratorKind::Dop853 => "dop853",
        }
    }

    pub fn is_flow(self) -> bool {
        self != IntegratorKind::GradientDescent
    }
}

/// Step counts of the adaptive solver, summed over segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolverCounts {
    pub accepted_steps: u64,
    pub rejected_steps: u64,
}

/// Tolerances and step-size rule of the adaptive solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub rtol: f64,
    pub atol: f64,
    /// Step-size rule of `dopri5`; the `ode_solvers` methods always use their PI rule.
    pub rule: StepRule,
}

/// Accepted steps per solver call. The solver keeps every accepted state of a call in
/// memory, so calls are cut into chunks of this many steps.
const CHUNK_STEPS: u32 = 32;

/// Conditions checked after every accepted step of gradient flow.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventWatch {
    /// Stop when every training sample is first classified correctly (min margin > 0).
    pub all_correct: bool,
    /// Stop when the training loss falls to this value.
    pub target_loss: Option<f64>,
    /// Time at which to end the call, at the first accepted step that reaches it. The run
    /// reads the row of this output time from the dense output, so it is not an event.
    pub stop_at: Option<f64>,
}

impl EventWatch {
    /// Returns whether `dynamics`, freshly evaluated at a state, meets one of the conditions.
    pub fn is_met(&self, dynamics: &Dynamics) -> bool {
        let correct = self.all_correct && dynamics.min_margin() > 0.0;
        let low_loss = self
            .target_loss
            .is_some_and(|target| dynamics.train_eval.loss() <= target);
        correct || low_loss
    }

    /// Returns a continuous measure of how far `dynamics` is past a single condition:
    /// positive (or zero for the target loss) where it is met, negative where it is not.
    /// With both conditions set it measures the sample margins.
    pub fn distance(&self, dynamics: &Dynamics) -> f64 {
        match self.target_loss {
            Some(target) if !self.all_correct => target - dynamics.train_eval.loss(),
            _ => dynamics.min_margin(),
        }
    }
}

/// Start of the step-size control of a solver call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStart {
    /// First step, or 0 to let the solver choose.
    pub step: f64,
    /// fac_old of the PI rule of `dopri5` (see [`dopri5::Controls::memory`]).
    pub memory: f64,
    /// `y` and t0 are where the last `dopri5` call of this `dynamics` ended, so f there is
    /// reused; the other methods ignore it.
    pub continues: bool,
}

impl StepStart {
    /// Returns a start with no history and first step `step` (0 lets the solver choose).
    pub fn fresh(step: f64) -> StepStart {
        StepStart {
            step,
            memory: dopri5::FRESH_MEMORY,
            continues: false,
        }
    }
}

/// End point of one solver call.
pub struct Advance {
    /// Time and state reached.
    pub t: f64,
    /// Time and state one accepted step earlier, for locating an event. The state is left
    /// empty for `dopri5`, whose stepper keeps it for its dense output.
    pub previous: Option<(f64, Vec<f64>)>,
    /// Whether the state at `t` meets the watched conditions.
    pub event: bool,
    /// Suggested initial step for the next call.
    pub step_hint: f64,
    /// fac_old of the PI rule of `dopri5` for the next call.
    pub memory: f64,
    pub counts: SolverCounts,
    /// The call used up its step budget before reaching `t1`.
    pub step_limit: bool,
}

/// The ODE right-hand side in the form `ode_solvers` expects, with a step counter and an
/// event check run after each accepted step.
struct FlowSystem<'a> {
    dynamics: RefCell<&'a mut Dynamics>,
    watch: EventWatch,
    accepted: &'a Cell<u32>,
    event: &'a Cell<bool>,
}

impl System<f64, DVector<f64>> for FlowSystem<'_> {
    fn system(&self, _t: f64, y: &DVector<f64>, dy: &mut DVector<f64>) {
        self.dynamics
            .borrow_mut()
            .flow(y.as_slice(), dy.as_mut_slice());
    }

    fn solout(&mut self, t: f64, y: &DVector<f64>, _dy: &DVector<f64>) -> bool {
        self.accepted.set(self.accepted.get() + 1);
        if self.watch.all_correct || self.watch.target_loss.is_some() {
            let dynamics = self.dynamics.get_mut();
            dynamics.evaluate_train_forward(y.as_slice());
            self.event.set(self.watch.is_met(dynamics));
        }
        let output_due = self.watch.stop_at.is_some_and(|stop| t >= stop);
        self.event.get() || output_due || self.accepted.get() >= CHUNK_STEPS
    }
}

/// The last two accepted states of a solver call and the larger of its last two step sizes.
///
/// A call that reaches its end time ends on a shortened step, so the larger of the last two
/// steps is the better first step for the next call.
fn last_two(times: &[f64], states: &[DVector<f64>]) -> (Vec<(f64, Vec<f64>)>, f64) {
    let count = times.len();
    let keep = count.min(2);
    let pairs = (count - keep..count)
        .map(|i| (times[i], states[i].as_slice().to_vec()))
        .collect();
    let step = |i: usize| times[i] - times[i - 1];
    let hint = match count {
        0 | 1 => 0.0,
        2 => step(1),
        _ => step(count - 1).max(step(count - 2)),
    };
    (pairs, hint)
}

/// The gradient field for [`dopri5::Dopri5`], with the same chunk limit and event check as
/// [`FlowSystem`].
struct FlowProblem<'a> {
    dynamics: &'a mut Dynamics,
    watch: EventWatch,
    accepted: u32,
    event: bool,
}

impl OdeSystem for FlowProblem<'_> {
    fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
        self.dynamics.flow(y, dy);
    }

    fn accepted(&mut self, t: f64, _y: &[f64], _dy: &[f64]) -> bool {
        self.accepted += 1;
        // The last stage was evaluated at the accepted state, so the training outputs and
        // loss in `dynamics` are current and need no extra forward pass.
        if self.watch.all_correct || self.watch.target_loss.is_some() {
            self.event = self.watch.is_met(self.dynamics);
        }
        let output_due = self.watch.stop_at.is_some_and(|stop| t >= stop);
        self.event || output_due || self.accepted >= CHUNK_STEPS
    }
}

/// Integrates gradient flow from `t0` towards `t1`, replacing `y` by the state reached.
///
/// The call ends at `t1`, after a chunk of accepted steps, or at the first accepted step
/// whose state meets `watch` or reaches `watch.stop_at`. `start` sets the first step and,
/// for `dopri5`, the controller's memory and whether the call continues the last one.
/// `max_steps`, at least 1, bounds the attempted steps of the call. A call that reaches
/// that bound ends with `step_limit` set and counts all `max_steps` attempts as accepted
/// or rejected steps. Otherwise the counts follow the solvers: a rejected trial step before
/// the call's first accepted step is not counted.
#[allow(clippy::too_many_arguments)]
pub fn advance_flow(
    dynamics: &mut Dynamics,
    method: IntegratorKind,
    tolerances: Tolerances,
    watch: EventWatch,
    y: &mut Vec<f64>,
    t0: f64,
    t1: f64,
    start: StepStart,
    max_steps: u64,
) -> Result<Advance, Error> {
    if method != IntegratorKind::Dopri5 {
        return advance_ode_solvers(
            dynamics, method, tolerances, watch, y, t0, t1, start.step, max_steps,
        );
    }

    // The stepper's buffers live in `dynamics` between calls, so a run allocates them once.
    let mut stepper = match dynamics.stepper.take() {
        Some(stepper) if stepper.len() == y.len() => stepper,
        _ => dopri5::Dopri5::new(y.len()),
    };
    let n_max = attempt_limit(max_steps);
    let mut controls =
        dopri5::Controls::new(tolerances.rtol, tolerances.atol, t1 - t0, start.step, n_max);
    controls.rule = tolerances.rule;
    controls.memory = start.memory;
    controls.continues = start.continues;
    controls.count_early_rejections = true;
    let mut problem = FlowProblem {
        dynamics,
        watch,
        accepted: 0,
        event: false,
    };
    let segment = stepper.integrate(&mut problem, &controls, t0, t1, y);
    let event = problem.event;
    let previous = segment.t_previous.map(|t| (t, Vec::new()));
    problem.dynamics.stepper = Some(stepper);

    let mut counts = SolverCounts {
        accepted_steps: segment.accepted as u64,
        rejected_steps: segment.rejected as u64,
    };
    let step_limit = match segment.failure {
        None => false,
        Some(dopri5::Failure::StepLimit { .. }) => {
            counts = limit_counts(n_max, segment.accepted);
            true
        }
        Some(dopri5::Failure::StepSizeUnderflow { t }) => {
            return Err(Error::Integration {
                time: t,
                reason: "the step size fell below the rounding of t; if the state is finite, \
                         loosen rtol/atol"
                    .to_string(),
            });
        }
    };
    let t = segment.t;
    let reached_end = (t - t1).abs() <= 1e-12 * t1.abs().max(1.0);
    Ok(Advance {
        t: if reached_end { t1 } else { t },
        previous,
        event,
        step_hint: if segment.step_hint > 0.0 {
            segment.step_hint
        } else {
            start.step
        },
        memory: segment.memory,
        counts,
        step_limit,
    })
}

/// Converts a bound on the attempted steps of a call, at least 1, to the solvers' `n_max`.
/// Both solvers attempt one more step than `n_max` before they stop at the limit.
fn attempt_limit(max_steps: u64) -> u32 {
    debug_assert!(
        max_steps >= 1,
        "a solver call needs a step budget of at least 1"
    );
    max_steps.saturating_sub(1).min(u32::MAX as u64 - 1) as u32
}

/// Counts of a call that stopped at the limit `n_max`: it attempted `n_max + 1` steps, of
/// which `accepted` were accepted, so every other attempt counts as rejected, including
/// rejections before the first accepted step, which the solvers leave out.
fn limit_counts(n_max: u32, accepted: u32) -> SolverCounts {
    let attempted = n_max as u64 + 1;
    let accepted = (accepted as u64).min(attempted);
    SolverCounts {
        accepted_steps: accepted,
        rejected_steps: attempted - accepted,
    }
}

/// [`advance_flow`] through the `ode_solvers` crate.
#[allow(clippy::too_many_arguments)]
fn advance_ode_solvers(
    dynamics: &mut Dynamics,
    method: IntegratorKind,
    tolerances: Tolerances,
    watch: EventWatch,
    y: &mut Vec<f64>,
    t0: f64,
    t1: f64,
    step_hint: f64,
    max_steps: u64,
) -> Result<Advance, Error> {
    let event = Cell::new(false);
    let accepted = Cell::new(0);
    let system = FlowSystem {
        dynamics: RefCell::new(dynamics),
        watch,
        accepted: &accepted,
        event: &event,
    };
    let start = DVector::from_vec(std::mem::take(y));
    let span = t1 - t0;
    let n_max = attempt_limit(max_steps);
    let Tolerances { rtol, atol, .. } = tolerances;

    // Sparse output stores every accepted state of the call; the chunk limit bounds them.
    // The controller settings are the solvers' defaults.
    let (result, (kept, hint)) = match method {
        IntegratorKind::Dopri5 | IntegratorKind::OdeSolversDopri5 => {
            let mut solver = Dopri5::from_param(
                system,
                t0,
                t1,
                span,
                start,
                rtol,
                atol,
                0.9,
                0.04,
                0.2,
                10.0,
                span,
                step_hint,
                n_max,
                1000,
                OutputType::Sparse,
            );
            let result = solver.integrate();
            (result, last_two(solver.x_out(), solver.y_out()))
        }
        IntegratorKind::Dop853 => {
            let mut solver = Dop853::from_param(
                system,
                t0,
                t1,
                span,
                start,
                rtol,
                atol,
                0.9,
                0.0,
                0.333,
                6.0,
                span,
                step_hint,
                n_max,
                1000,
                OutputType::Sparse,
            );
            let result = solver.integrate();
            (result, last_two(solver.x_out(), solver.y_out()))
        }
        IntegratorKind::GradientDescent => unreachable!("gradient descent has no flow segments"),
    };

    // Running out of steps is a normal stop: keep the last accepted state.
    let (counts, step_limit) = match result {
        Ok(stats) => (
            SolverCounts {
                accepted_steps: stats.accepted_steps as u64,
                rejected_steps: stats.rejected_steps as u64,
            },
            false,
        ),
        Err(IntegrationError::MaxNumStepReached { .. }) => {
            (limit_counts(n_max, accepted.get()), true)
        }
        Err(error) => {
            return Err(Error::Integration {
                time: t0,
                reason: format!(
                    "{error}; if the state is finite, loosen rtol/atol or raise train.max_steps"
                ),
            });
        }
    };
    let mut kept = kept.into_iter();
    let (last, previous) = match (kept.next(), kept.next()) {
        (Some(before), Some(last)) => (last, Some(before)),
        (Some(only), None) => (only, None),
        _ => {
            return Err(Error::Integration {
                time: t0,
                reason: "the solver returned no state".to_string(),
            });
        }
    };
    let (t, state) = last;
    *y = state;
    let reached_end = (t - t1).abs() <= 1e-12 * t1.abs().max(1.0);
    Ok(Advance {
        t: if reached_end { t1 } else { t },
        previous,
        event: event.get(),
        step_hint: if hint > 0.0 { hint } else { step_hint },
        memory: dopri5::FRESH_MEMORY,
        counts,
        step_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::experiment::prepare;

    /// A small sampled-filler problem with all sizes different (n 12, L 4, d 16, m 8, m1 6).
    fn small_problem() -> (Dynamics, Vec<f64>) {
        let text = r#"
            seed = 3
            [task]
            n = 12
            L = 4
            d = 16
            fillers = "sampled"
            n_test = 12
            [model]
            m = 8
            m1 = 6
            [init]
            scheme = "kaiming-uniform"
            [train]
            engine = "parameter"
            integrator = "dopri5"
            t_end = 5.0
        "#;
        let config = Config::from_toml(text).expect("valid config");
        let prepared = prepare(&config).expect("problem prepares");
        (prepared.dynamics, prepared.y0)
    }

    fn advance(method: IntegratorKind, watch: EventWatch, step_hint: f64) -> (Advance, Vec<f64>) {
        let (mut dynamics, mut y) = small_problem();
        let tolerances = Tolerances {
            rtol: 1e-9,
            atol: 1e-12,
            rule: StepRule::Pi,
        };
        let advance = advance_flow(
            &mut dynamics,
            method,
            tolerances,
            watch,
            &mut y,
            0.0,
            5.0,
            StepStart::fresh(step_hint),
            10_000,
        )
        .expect("integration succeeds");
        (advance, y)
    }

    #[test]
    fn dopri5_matches_ode_solvers_run() {
        let watches = [
            EventWatch::default(),
            // The loss starts near log 2 = 0.693, so this target is met within a few steps.
            EventWatch {
                all_correct: true,
                target_loss: Some(0.69),
                stop_at: None,
            },
        ];
        for watch in watches {
            for step_hint in [0.0, 1e-3] {
                let (own, own_y) = advance(IntegratorKind::Dopri5, watch, step_hint);
                let (crate_run, crate_y) =
                    advance(IntegratorKind::OdeSolversDopri5, watch, step_hint);
                let case = format!("watch {watch:?}, hint {step_hint}");

                // The same steps; times and states differ by rounding that the error
                // estimate amplifies (see the tests of `dopri5`).
                let relative = |a: f64, b: f64| (a - b).abs() / b.abs();
                let state_gap = |a: &[f64], b: &[f64]| {
                    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    a.iter()
                        .zip(b)
                        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
                        / scale
                };
                assert_eq!(own.counts, crate_run.counts, "{case}");
                assert_eq!(own.event, crate_run.event, "{case}");
                assert_eq!(own.step_limit, crate_run.step_limit, "{case}");
                let (own_previous, crate_previous) = (
                    own.previous.as_ref().expect("steps were accepted"),
                    crate_run.previous.as_ref().expect("steps were accepted"),
                );
                let gaps = [
                    relative(own.t, crate_run.t),
                    relative(own_previous.0, crate_previous.0),
                    state_gap(&own_y, &crate_y),
                ];
                assert!(gaps.iter().all(|&gap| gap < 1e-5), "{case}: {gaps:?}");
                // dopri5 keeps the previous state in its stepper, for its dense output.
                assert!(own_previous.1.is_empty(), "{case}");
                assert_eq!(crate_previous.1.len(), own_y.len(), "{case}");
                // The watched runs stop at the event; the others at the chunk limit.
                let watched = watch.target_loss.is_some();
                assert_eq!(own.event, watched, "{case}");
                if !watched {
                    assert_eq!(own.counts.accepted_steps, CHUNK_STEPS as u64, "{case}");
                }
            }
        }
    }
}
