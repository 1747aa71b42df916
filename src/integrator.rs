//! Time integration of the training dynamics.
//!
//! Gradient flow uses the embedded Runge-Kutta pairs of `ode_solvers` (Dormand-Prince 5(4)
//! or 8(5,3)) under a mixed error test `|err_i| <= atol + rtol |y_i|` in the RMS norm. The
//! solver runs one segment at a time between output times, so outputs are hit exactly and
//! only one state is kept in memory. Each solver call starts from the step size the previous
//! call ended with, which checkpoints store, so a resumed run repeats an uninterrupted one
//! exactly.
//!
//! Gradient descent with step eta is the explicit Euler method of the flow, with time
//! t = eta x step.

use std::cell::{Cell, RefCell};

use ode_solvers::dop_shared::IntegrationError;
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
    /// Gradient flow by Dormand-Prince 8(5,3) with adaptive steps.
    Dop853,
}

impl IntegratorKind {
    pub fn name(self) -> &'static str {
        match self {
            IntegratorKind::GradientDescent => "gradient-descent",
            IntegratorKind::Dopri5 => "dopri5",
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

/// Tolerances of the adaptive solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub rtol: f64,
    pub atol: f64,
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
}

impl EventWatch {
    /// Whether `dynamics`, freshly evaluated at a state, meets one of the conditions.
    pub fn is_met(&self, dynamics: &Dynamics) -> bool {
        let correct = self.all_correct && dynamics.min_margin() > 0.0;
        let low_loss = self
            .target_loss
            .is_some_and(|target| dynamics.train_eval.loss <= target);
        correct || low_loss
    }
}

/// Where one solver call ended.
pub struct Advance {
    /// Time and state reached.
    pub t: f64,
    /// Time and state one accepted step earlier, for locating an event.
    pub previous: Option<(f64, Vec<f64>)>,
    /// Whether the state at `t` meets the watched conditions.
    pub event: bool,
    /// Suggested initial step for the next call.
    pub step_hint: f64,
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

    fn solout(&mut self, _t: f64, y: &DVector<f64>, _dy: &DVector<f64>) -> bool {
        self.accepted.set(self.accepted.get() + 1);
        if self.watch.all_correct || self.watch.target_loss.is_some() {
            let dynamics = self.dynamics.get_mut();
            dynamics.evaluate_train_forward(y.as_slice());
            self.event.set(self.watch.is_met(dynamics));
        }
        self.event.get() || self.accepted.get() >= CHUNK_STEPS
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

/// Integrates gradient flow from `t0` towards `t1`, replacing `y` by the state reached.
///
/// The call ends at `t1`, after a chunk of accepted steps, or at the first accepted step
/// whose state meets `watch`. `step_hint` is the initial step (0 lets the solver choose) and
/// `max_steps` bounds the accepted and rejected steps of the call.
#[allow(clippy::too_many_arguments)]
pub fn advance_flow(
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
    let n_max = max_steps.min(u32::MAX as u64) as u32;
    let Tolerances { rtol, atol } = tolerances;

    // Sparse output stores every accepted state of the call; the chunk limit bounds them.
    // The controller settings are the solvers' defaults.
    let (result, (kept, hint)) = match method {
        IntegratorKind::Dopri5 => {
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
        Err(IntegrationError::MaxNumStepReached { .. }) => (
            SolverCounts {
                accepted_steps: accepted.get() as u64,
                rejected_steps: (n_max - accepted.get().min(n_max)) as u64,
            },
            true,
        ),
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
        counts,
        step_limit,
    })
}
