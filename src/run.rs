//! The run loop: advances the state, records observables at the output times, detects the
//! end of Phase 1 (T1) and decides when to stop. It writes nothing itself; a [`Sink`]
//! receives records and checkpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dopri5;
use crate::dynamics::Dynamics;
use crate::error::Error;
use crate::integrator::{
    EventWatch, IntegratorKind, SolverCounts, StepStart, Tolerances, advance_flow,
};
use crate::observables::Observation;

/// Reason a run ended. None of these is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Reached the final time t_end.
    ReachedEnd,
    /// The training loss fell to the target loss.
    TargetLoss,
    /// Used up the step limit.
    StepLimit,
    /// Stopped by a signal; the checkpoint allows resuming.
    Interrupted,
}

impl StopReason {
    /// Spelling in `summary.json`.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::ReachedEnd => "reached-end",
            StopReason::TargetLoss => "target-loss",
            StopReason::StepLimit => "step-limit",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Settings of the loop, resolved from a config.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub integrator: IntegratorKind,
    /// Step size of gradient descent.
    pub eta: f64,
    pub tolerances: Tolerances,
    /// Final time.
    pub t_end: f64,
    /// Whether `t_end` was derived as eta x max_steps, so that reaching it means using up
    /// the step limit.
    pub end_is_step_limit: bool,
    /// Limit on gradient-descent steps, or on accepted plus rejected solver steps (those of
    /// event location included), which never exceed it. See [`advance_flow`] for which
    /// rejected steps count.
    pub max_steps: u64,
    pub target_loss: Option<f64>,
    /// Output times, increasing, from 0 to t_end. Gradient descent rounds each to the
    /// nearest step.
    pub record_times: Vec<f64>,
}

impl Schedule {
    /// Describes what ends the run, for log messages: the step limit of gradient descent
    /// without a configured t_end, the final time otherwise.
    pub fn end_text(&self) -> String {
        let t_end = crate::error::format_value(self.t_end);
        if self.end_is_step_limit {
            format!(
                "eta {} for max_steps {} (t = {t_end})",
                crate::error::format_value(self.eta),
                self.max_steps
            )
        } else {
            format!("t_end {t_end}")
        }
    }
}

/// Everything needed to continue a run; a checkpoint stores it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub t: f64,
    /// Gradient-descent steps taken, or accepted plus rejected solver steps.
    pub steps: u64,
    /// Index into `Schedule::record_times` of the next output.
    pub next_record: usize,
    pub y: Vec<f64>,
    /// First step size for the next solver call.
    pub step_hint: f64,
    /// fac_old of the PI rule for the next `dopri5` call.
    #[serde(default = "fresh_memory")]
    pub step_memory: f64,
    /// End of Phase 1: the first time every training sample has y F > 0.
    pub t1: Option<f64>,
    pub at_t1: Option<Observation>,
    pub counts: SolverCounts,
    pub gradient_evaluations: u64,
    /// Rows written to the trajectory so far.
    pub rows_written: usize,
    /// Stop reason of a run that has ended other than by an interrupt. Resuming a
    /// finished run then does nothing, instead of recording its last row again or
    /// integrating past the target loss.
    #[serde(default)]
    pub finished: Option<StopReason>,
    /// Wall-clock seconds spent advancing the state (gradient steps, solver calls and
    /// event location), without setup, observables or file output.
    #[serde(default)]
    pub solve_seconds: f64,
}

fn fresh_memory() -> f64 {
    dopri5::FRESH_MEMORY
}

impl RunState {
    pub fn new(y: Vec<f64>) -> RunState {
        RunState {
            t: 0.0,
            steps: 0,
            next_record: 0,
            y,
            step_hint: 0.0,
            step_memory: dopri5::FRESH_MEMORY,
            t1: None,
            at_t1: None,
            counts: SolverCounts::default(),
            gradient_evaluations: 0,
            rows_written: 0,
            finished: None,
            solve_seconds: 0.0,
        }
    }
}

/// Receives the outputs of a run as it goes.
pub trait Sink {
    /// Called with each recorded row, in time order.
    fn record(&mut self, row: &Observation, state: &RunState) -> Result<(), Error>;

    /// Called after each record and when the run stops; writes a checkpoint when due,
    /// or at once when `force` is set.
    fn checkpoint(&mut self, state: &RunState, force: bool) -> Result<(), Error>;

    /// Called as time advances, for progress display.
    fn progress(&mut self, _state: &RunState) {}
}

/// Advances `state` under `schedule` until a stop condition holds.
///
/// `cancel` is polled between steps; when set the loop writes a checkpoint and returns
/// [`StopReason::Interrupted`].
pub fn run(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    sink: &mut dyn Sink,
    cancel: &AtomicBool,
) -> Result<StopReason, Error> {
    if let Some(reason) = state.finished {
        return Ok(reason);
    }
    let evaluations_before = dynamics.gradient_evaluations;
    let result = if schedule.integrator.is_flow() {
        run_flow(dynamics, schedule, state, sink, cancel)
    } else {
        run_descent(dynamics, schedule, state, sink, cancel)
    };
    state.gradient_evaluations += dynamics.gradient_evaluations - evaluations_before;
    dynamics.gradient_evaluations = evaluations_before;
    let reason = result?;
    if reason != StopReason::Interrupted {
        state.finished = Some(reason);
    }
    sink.checkpoint(state, true)?;
    Ok(reason)
}

/// Describes the likely cause of a non-finite value found after `steps` steps, and its fix.
fn non_finite_hint(schedule: &Schedule, steps: u64) -> String {
    if steps == 0 {
        "the initial weights are too large for a finite output; lower init.c0/c1 or \
         init.sigma0/sigma1, or rescale the weights file"
            .to_string()
    } else if schedule.integrator.is_flow() {
        "the initial weights may be too large for the solver; lower init.c0/c1 or \
         init.sigma0/sigma1, or tighten rtol"
            .to_string()
    } else {
        format!(
            "the step eta = {} may be too large for this initialization; lower train.eta",
            crate::error::format_value(schedule.eta)
        )
    }
}

/// Records the row of the current state.
fn record(
    dynamics: &mut Dynamics,
    state: &mut RunState,
    sink: &mut dyn Sink,
    schedule: &Schedule,
) -> Result<Observation, Error> {
    let row = dynamics.observe(state.t, &state.y);
    write_row(row, state, sink, schedule)
}

/// Records the row at time `t` in (t_start, state.t) of the last solver step, which began
/// at `t_start`, from the dense output of the `dopri5` stepper.
fn record_between(
    dynamics: &mut Dynamics,
    state: &mut RunState,
    sink: &mut dyn Sink,
    schedule: &Schedule,
    t: f64,
    t_start: f64,
) -> Result<Observation, Error> {
    let stepper = dynamics
        .stepper
        .take()
        .expect("the dopri5 stepper made the last step");
    let h = state.t - t_start;
    let mut y = vec![0.0; state.y.len()];
    stepper.interpolate(&state.y, h, (t - t_start) / h, &mut y);
    dynamics.stepper = Some(stepper);
    let row = dynamics.observe(t, &y);
    write_row(row, state, sink, schedule)
}

/// Writes `row` to the trajectory after checking that it is finite.
fn write_row(
    row: Observation,
    state: &mut RunState,
    sink: &mut dyn Sink,
    schedule: &Schedule,
) -> Result<Observation, Error> {
    if let Some(quantity) = row.first_non_finite() {
        return Err(Error::NonFinite {
            quantity: quantity.to_string(),
            time: row.t,
            hint: non_finite_hint(schedule, state.steps),
        });
    }
    sink.record(&row, state)?;
    state.rows_written += 1;
    Ok(row)
}

/// Gradient descent: time t = eta x step, outputs at the steps nearest the record times.
fn run_descent(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    sink: &mut dyn Sink,
    cancel: &AtomicBool,
) -> Result<StopReason, Error> {
    let eta = schedule.eta;
    let last_step = ((schedule.t_end / eta).round() as u64).min(schedule.max_steps);
    let record_steps: Vec<u64> = schedule
        .record_times
        .iter()
        .map(|&t| ((t / eta).round() as u64).min(last_step))
        .collect();

    loop {
        state.t = eta * state.steps as f64;
        // Checked before any work on this step, so that a resumed run repeats exactly the
        // evaluations of an uninterrupted one and the summaries agree.
        if cancel.load(Ordering::Relaxed) {
            return Ok(StopReason::Interrupted);
        }
        let started = Instant::now();
        dynamics.evaluate_train(&state.y);
        state.solve_seconds += started.elapsed().as_secs_f64();
        // Finite margins give a finite loss, so the loss, with a logarithm per sample, is
        // computed only where a target needs it or the margins are not finite.
        let margins = dynamics.train_eval.margins();
        if !margins.iter().all(|margin| margin.is_finite()) {
            let quantity = if dynamics.train_eval.loss().is_finite() {
                "training outputs"
            } else {
                "training loss"
            };
            return Err(Error::NonFinite {
                quantity: quantity.to_string(),
                time: state.t,
                hint: non_finite_hint(schedule, state.steps),
            });
        }

        if state.t1.is_none() && dynamics.min_margin() > 0.0 {
            state.t1 = Some(state.t);
            state.at_t1 = Some(dynamics.observe(state.t, &state.y));
        }

        let reason = if schedule
            .target_loss
            .is_some_and(|target| dynamics.train_eval.loss() <= target)
        {
            Some(StopReason::TargetLoss)
        } else if state.steps >= last_step {
            let short = last_step < (schedule.t_end / eta).round() as u64;
            Some(if short || schedule.end_is_step_limit {
                StopReason::StepLimit
            } else {
                StopReason::ReachedEnd
            })
        } else {
            None
        };

        let mut recorded = false;
        while state.next_record < record_steps.len()
            && record_steps[state.next_record] <= state.steps
        {
            if !recorded && record_steps[state.next_record] == state.steps {
                record(dynamics, state, sink, schedule)?;
                recorded = true;
            }
            state.next_record += 1;
        }
        if recorded {
            sink.checkpoint(state, false)?;
        }

        if let Some(reason) = reason {
            if !recorded {
                record(dynamics, state, sink, schedule)?;
            }
            return Ok(reason);
        }

        // `observe` above re-evaluated at the same state, so the sensitivities are current.
        let started = Instant::now();
        dynamics.descent_step(&mut state.y, eta);
        state.solve_seconds += started.elapsed().as_secs_f64();
        state.steps += 1;
        if state.steps % 256 == 0 {
            sink.progress(state);
        }
    }
}

/// Gradient flow: solver calls with event location for T1 and for the target loss.
///
/// `dopri5` steps across output times and takes their rows from the dense output of the
/// step that reached them, so its steps do not depend on the output grid. Each of its calls
/// ends at the first step that reaches the next output time. The `ode_solvers` methods have no
/// dense output here, so each of their calls lands on the next output time.
fn run_flow(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    sink: &mut dyn Sink,
    cancel: &AtomicBool,
) -> Result<StopReason, Error> {
    if state.steps == 0 && state.next_record == 0 {
        dynamics.evaluate_train_forward(&state.y);
        if dynamics.min_margin() > 0.0 {
            state.t1 = Some(0.0);
            state.at_t1 = Some(dynamics.observe(0.0, &state.y));
        }
    }

    let dense = schedule.integrator == IntegratorKind::Dopri5;
    // Start of the last accepted step, while the stepper's dense output covers it.
    let mut step_start: Option<f64> = None;
    // Whether `state` is where the last `dopri5` call ended, with f there in the stepper.
    let mut continues = false;
    // Time of the last row written, so that a stop at an output time is not recorded twice.
    let mut recorded_at: Option<f64> = None;
    loop {
        let rows_before = state.rows_written;
        while state.next_record < schedule.record_times.len()
            && state.t >= schedule.record_times[state.next_record]
        {
            let t_row = schedule.record_times[state.next_record];
            let row = match step_start {
                Some(t_start) if dense && t_row < state.t => {
                    record_between(dynamics, state, sink, schedule, t_row, t_start)?
                }
                _ => {
                    recorded_at = Some(state.t);
                    record(dynamics, state, sink, schedule)?
                }
            };
            state.next_record += 1;
            // Rows from the dense output lie before state.t, where the run cannot stop. A
            // crossing of the target loss inside a step is located as an event instead.
            let at_state = row.t == state.t;
            if at_state
                && schedule
                    .target_loss
                    .is_some_and(|target| row.loss <= target)
            {
                return Ok(StopReason::TargetLoss);
            }
        }
        // Only after every row up to state.t: a checkpoint between two rows of one step
        // would resume with rows before state.t left to write and no dense output for them.
        if state.rows_written > rows_before {
            sink.checkpoint(state, false)?;
        }
        if state.t >= schedule.t_end {
            return Ok(StopReason::ReachedEnd);
        }
        if state.steps >= schedule.max_steps {
            if recorded_at != Some(state.t) {
                record(dynamics, state, sink, schedule)?;
            }
            return Ok(StopReason::StepLimit);
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(StopReason::Interrupted);
        }

        let next_output = schedule.record_times[state.next_record];
        let watch = EventWatch {
            all_correct: state.t1.is_none(),
            target_loss: schedule.target_loss,
            stop_at: if dense { Some(next_output) } else { None },
        };
        let call_end = if dense { schedule.t_end } else { next_output };
        let started = Instant::now();
        let advance = advance_flow(
            dynamics,
            schedule.integrator,
            schedule.tolerances,
            watch,
            &mut state.y,
            state.t,
            call_end,
            StepStart {
                step: state.step_hint,
                memory: state.step_memory,
                continues,
            },
            schedule.max_steps - state.steps,
        )
        .map_err(|error| flow_error(error, dynamics, schedule, state.steps))?;
        state.solve_seconds += started.elapsed().as_secs_f64();
        add_counts(state, advance.counts);
        state.t = advance.t;
        state.step_hint = advance.step_hint;
        state.step_memory = advance.memory;
        continues = dense;
        if let Some((t_start, _)) = &advance.previous {
            step_start = Some(*t_start);
        }
        sink.progress(state);
        check_state_finite(state, schedule)?;

        if !advance.event {
            continue;
        }
        let (t_before, y_before) = advance
            .previous
            .expect("an event is checked only after an accepted step");
        dynamics.evaluate_train_forward(&state.y);
        let all_correct = state.t1.is_none() && dynamics.min_margin() > 0.0;
        let low_loss = schedule
            .target_loss
            .is_some_and(|target| dynamics.train_eval.loss() <= target);

        // The target loss first: a run that stops before T1 within the same step has no T1.
        let stop = if low_loss {
            let condition = EventWatch {
                target_loss: schedule.target_loss,
                ..EventWatch::default()
            };
            let started = Instant::now();
            let located = locate_event(
                dynamics, schedule, state, condition, t_before, &y_before, state.t,
            )?;
            state.solve_seconds += started.elapsed().as_secs_f64();
            Some(located)
        } else {
            None
        };
        if all_correct {
            let condition = EventWatch {
                all_correct: true,
                ..EventWatch::default()
            };
            let started = Instant::now();
            let (t1, y1) = locate_event(
                dynamics, schedule, state, condition, t_before, &y_before, state.t,
            )?;
            state.solve_seconds += started.elapsed().as_secs_f64();
            if stop.as_ref().is_none_or(|(t_star, _)| t1 <= *t_star) {
                state.t1 = Some(t1);
                state.at_t1 = Some(dynamics.observe(t1, &y1));
            }
        }
        if let Some((t_star, y_star)) = stop {
            // Output times of the last step before the stop still get their rows.
            while dense
                && state.next_record < schedule.record_times.len()
                && schedule.record_times[state.next_record] < t_star
            {
                let t_row = schedule.record_times[state.next_record];
                record_between(dynamics, state, sink, schedule, t_row, t_before)?;
                state.next_record += 1;
            }
            state.t = t_star;
            state.y = y_star;
            record(dynamics, state, sink, schedule)?;
            return Ok(StopReason::TargetLoss);
        }
    }
}

fn add_counts(state: &mut RunState, counts: SolverCounts) {
    state.counts.accepted_steps += counts.accepted_steps;
    state.counts.rejected_steps += counts.rejected_steps;
    state.steps += counts.accepted_steps + counts.rejected_steps;
}

fn check_state_finite(state: &RunState, schedule: &Schedule) -> Result<(), Error> {
    if let Some(index) = state.y.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            quantity: format!("state entry {index}"),
            time: state.t,
            hint: non_finite_hint(schedule, state.steps),
        });
    }
    Ok(())
}

/// Reports a solver failure as a non-finite loss when that is its cause.
fn flow_error(error: Error, dynamics: &Dynamics, schedule: &Schedule, steps: u64) -> Error {
    match error {
        Error::Integration { time, .. } if !dynamics.train_eval.loss().is_finite() => {
            Error::NonFinite {
                quantity: "training loss".to_string(),
                time,
                hint: non_finite_hint(schedule, steps),
            }
        }
        other => other,
    }
}

/// Integrates from `t_start` to `t_end`, in as many solver calls as needed, without events.
/// The steps count against the run's step limit. Returns whether `t_end` was reached
/// before the limit.
fn integrate_to(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    y: &mut Vec<f64>,
    t_start: f64,
    t_end: f64,
) -> Result<bool, Error> {
    let mut t = t_start;
    let mut hint = 0.0;
    while t < t_end {
        let budget = schedule.max_steps.saturating_sub(state.steps);
        if budget == 0 {
            return Ok(false);
        }
        let advance = advance_flow(
            dynamics,
            schedule.integrator,
            schedule.tolerances,
            EventWatch::default(),
            y,
            t,
            t_end,
            StepStart::fresh(hint),
            budget,
        )?;
        add_counts(state, advance.counts);
        t = advance.t;
        hint = advance.step_hint;
    }
    Ok(true)
}

/// Finds the first time in (t_a, t_b] at which `condition` holds, given that it fails at
/// t_a (state `y_a`) and holds at t_b (state `state.y`), where t_a and t_b are the ends of
/// the last accepted solver step.
///
/// For `dopri5` it searches the stepper's dense output by the Illinois variant of regula
/// falsi on [`EventWatch::distance`], with a bisection after any step that fails to halve
/// the bracket. For the `ode_solvers` methods it bisects on re-integrated states. It stops
/// when the bracket is narrower than 1e-12 relative to t_b, or when re-integration uses up
/// the step limit, and returns the right end of the bracket and its state.
#[allow(clippy::too_many_arguments)]
fn locate_event(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    condition: EventWatch,
    t_a: f64,
    y_a: &[f64],
    t_b: f64,
) -> Result<(f64, Vec<f64>), Error> {
    if schedule.integrator != IntegratorKind::Dopri5 {
        return locate_event_by_integration(dynamics, schedule, state, condition, t_a, y_a, t_b);
    }
    let stepper = dynamics
        .stepper
        .take()
        .expect("the dopri5 stepper made the last step");
    let h = t_b - t_a;
    let mut y_high = state.y.clone();
    let mut y_mid = vec![0.0; state.y.len()];
    // Distances at both ends of the step: not met at t_a, met at t_b.
    let mut distance_at = |theta: f64, y_mid: &mut Vec<f64>| {
        stepper.interpolate(&state.y, h, theta, y_mid);
        dynamics.evaluate_train_forward(y_mid);
        (condition.is_met(dynamics), condition.distance(dynamics))
    };
    let f_low = distance_at(0.0, &mut y_mid).1;
    let f_high = distance_at(1.0, &mut y_mid).1;
    let tolerance = 1e-12 * t_b.abs().max(f64::MIN_POSITIVE);
    let high = first_met(f_low, f_high, h, tolerance, |theta| {
        let (met, distance) = distance_at(theta, &mut y_mid);
        if met {
            y_high.copy_from_slice(&y_mid);
        }
        (met, distance)
    });
    dynamics.stepper = Some(stepper);
    let t_event = if high == 1.0 { t_b } else { t_a + high * h };
    Ok((t_event, y_high))
}

/// Returns the right end of a bracket in (0, 1] of the first point where a condition is met,
/// narrowed until its width times `span` is at most `tolerance`, given that the condition
/// fails at 0 (distance `f_low`, negative) and is met at 1 (distance `f_high`).
///
/// `probe(theta)` returns whether the condition is met at theta, and its distance. The search
/// is the Illinois variant of regula falsi: an end that stays in place twice has its
/// distance halved. A step that does not halve the bracket is followed by a bisection, so
/// the search also ends on a discontinuous distance. It probes at most 100 points. The
/// last probe that met the condition is at the returned point, unless that point is 1.
fn first_met(
    mut f_low: f64,
    mut f_high: f64,
    span: f64,
    tolerance: f64,
    mut probe: impl FnMut(f64) -> (bool, f64),
) -> f64 {
    let (mut low, mut high) = (0.0, 1.0);
    let mut last_moved_high: Option<bool> = None;
    let mut bisect = false;
    for _ in 0..100 {
        let width = high - low;
        if width * span <= tolerance {
            break;
        }
        let secant = low + width * f_low / (f_low - f_high);
        let theta = if !bisect && secant >= low && secant <= high {
            // A secant point on the root itself, or on an end, would move only the end where
            // the condition is met and never close the bracket. So it stays half a tolerance
            // inside both ends, and a failed probe at high - nudge ends the search.
            let nudge = 0.5 * tolerance / span;
            secant.clamp(low + nudge, high - nudge)
        } else {
            0.5 * (low + high)
        };
        let (met, distance) = probe(theta);
        if met {
            high = theta;
            f_high = distance;
            if last_moved_high == Some(true) {
                f_low *= 0.5;
            }
            last_moved_high = Some(true);
        } else {
            low = theta;
            f_low = distance;
            if last_moved_high == Some(false) {
                f_high *= 0.5;
            }
            last_moved_high = Some(false);
        }
        bisect = high - low > 0.5 * width;
    }
    high
}

/// [`locate_event`] by bisection on states re-integrated from t_a.
#[allow(clippy::too_many_arguments)]
fn locate_event_by_integration(
    dynamics: &mut Dynamics,
    schedule: &Schedule,
    state: &mut RunState,
    condition: EventWatch,
    t_a: f64,
    y_a: &[f64],
    t_b: f64,
) -> Result<(f64, Vec<f64>), Error> {
    let (mut low, mut high) = (t_a, t_b);
    let mut y_low = y_a.to_vec();
    let mut y_high = state.y.clone();
    for _ in 0..100 {
        if high - low <= 1e-12 * high.abs().max(f64::MIN_POSITIVE) {
            break;
        }
        let mid = 0.5 * (low + high);
        let mut y_mid = y_low.clone();
        if !integrate_to(dynamics, schedule, state, &mut y_mid, low, mid)? {
            log::warn!(
                "the step limit ended the location of an event in ({low:e}, {high:e}]; its \
                 time is taken as {high:e}; raise train.max_steps to locate it to 1e-12"
            );
            break;
        }
        dynamics.evaluate_train_forward(&y_mid);
        if condition.is_met(dynamics) {
            high = mid;
            y_high = y_mid;
        } else {
            low = mid;
            y_low = y_mid;
        }
    }
    Ok((high, y_high))
}

#[cfg(test)]
mod tests {
    use super::first_met;

    /// Runs [`first_met`] for the condition f >= 0 with distance `f`, and returns the point
    /// found and the number of probes.
    fn search(f: impl Fn(f64) -> f64, tolerance: f64) -> (f64, usize) {
        let mut probes = 0;
        let point = first_met(f(0.0), f(1.0), 1.0, tolerance, |theta| {
            probes += 1;
            (f(theta) >= 0.0, f(theta))
        });
        (point, probes)
    }

    #[test]
    fn first_met_linear_distance() {
        let root = 0.3;
        let (point, probes) = search(|theta| theta - root, 1e-12);
        assert!(point >= root, "point {point} lies before the root {root}");
        assert!(point - root <= 1e-12, "point {point} is far from {root}");
        assert!(probes <= 4, "{probes} probes for a linear distance");
    }

    #[test]
    fn first_met_curved_distance() {
        // Plain regula falsi keeps one end fixed here and converges linearly and slowly.
        // Bisection alone would take about 40 probes.
        let root = 0.5f64.powf(1.0 / 8.0);
        let (point, probes) = search(|theta| theta.powi(8) - 0.5, 1e-12);
        assert!(point >= root, "point {point} lies before the root {root}");
        assert!(point - root <= 1e-12, "point {point} is far from {root}");
        assert!(probes <= 30, "{probes} probes for a smooth distance");
    }

    #[test]
    fn first_met_step_distance() {
        // A distance that jumps at the root: the bisections must still close the bracket.
        let root = 0.123456789;
        let (point, probes) = search(|theta| if theta >= root { 1.0 } else { -1.0 }, 1e-12);
        assert!(point >= root, "point {point} lies before the root {root}");
        assert!(point - root <= 1e-12, "point {point} is far from {root}");
        assert!(probes <= 45, "{probes} probes for a step distance");
    }

    #[test]
    fn first_met_root_at_end() {
        // The condition holds only at 1, so the first probe, half a tolerance before it,
        // fails and ends the search.
        let (point, probes) = search(|theta| if theta >= 1.0 { 0.0 } else { theta - 1.0 }, 1e-12);
        assert_eq!(point, 1.0);
        assert_eq!(probes, 1);
    }

    #[test]
    fn first_met_keeps_last_met_probe() {
        // The caller stores the state of each probe that meets the condition, so the last
        // such probe must be the point returned.
        let mut last_met = None;
        let point = first_met(-0.7, 0.3, 1.0, 1e-12, |theta| {
            let distance = theta - 0.7;
            if distance >= 0.0 {
                last_met = Some(theta);
            }
            (distance >= 0.0, distance)
        });
        assert_eq!(last_met, Some(point));
    }
}
