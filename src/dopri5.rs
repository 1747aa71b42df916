//! An allocation-free Dormand-Prince 5(4) stepper on flat `f64` slices.
//!
//! It follows the algorithm of `ode_solvers` 0.6 `Dopri5` with sparse output step for step:
//! the same tableau, the same first-step estimate (Hairer, Norsett and Wanner, Solving ODE I,
//! section II.4), the same error norm
//!
//! ```text
//! err = sqrt( (1/N) sum_i ( e_i / (atol + rtol max(|y_i|, |y_new_i|)) )^2 ),
//! ```
//!
//! where e is h times the difference of the embedded 5th- and 4th-order solutions, and the
//! same PI step-size controller (`fac = err^alpha / fac_old^beta`, with alpha = 0.2 - 0.75
//! beta, clamped to [1/fac_max, 1/fac_min] after dividing by the safety factor).
//!
//! Every floating-point operation is the same as in `ode_solvers` and in the same order, so
//! both take the same steps and reach bit-identical states (the tests check this). What
//! differs: the state lives in seven stage buffers allocated once instead of a fresh vector
//! per stage and operator, each stage sum is formed in one blocked pass over the state, and
//! only the last two accepted states are kept.
//! The stiffness test of `ode_solvers` is left out: it runs every 1000 accepted steps of one
//! solver call and only reports an error, and the run loop never makes calls that long.

use crate::linalg::dispatch;

/// Butcher tableau of Dormand and Prince (1980), order 5 with an embedded order-4 solution.
mod tableau {
    pub const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];

    /// Row s contains a_{s+1, 1..s}. The last row is the 5th-order weights b.
    pub const A: [&[f64]; 6] = [
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ];

    /// Weights of the 4th-order dense output of stages 1, 3, 4, 5, 6, 7 (Hairer, Norsett and
    /// Wanner, Solving ODE I, section II.6); stage 2 has weight 0.
    pub const D: [f64; 6] = [
        -12715105075.0 / 11282082432.0,
        87487479700.0 / 32700410799.0,
        -10690763975.0 / 1880347072.0,
        701980252875.0 / 199316789632.0,
        -1453857185.0 / 822651844.0,
        69997945.0 / 29380423.0,
    ];

    /// Error weights (5th minus 4th order) of stages 1, 3, 4, 5, 6, 7; stage 2 has weight 0.
    pub const E: [f64; 6] = [
        71.0 / 57600.0,
        -71.0 / 16695.0,
        71.0 / 1920.0,
        -17253.0 / 339200.0,
        22.0 / 525.0,
        -1.0 / 40.0,
    ];
}

/// Elements per block of the fused stage sums, so that one block of every stage stays in
/// the L1 cache while it is combined.
const BLOCK: usize = 512;

/// A right-hand side dy/dt = f(t, y) with a hook after each accepted step.
pub trait OdeSystem {
    /// Writes f(t, y) into `dy`.
    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]);

    /// Called after each accepted step with the new time, state and f at that state (the
    /// last `rhs` call was at exactly this state). Returns true to end the call there.
    fn accepted(&mut self, t: f64, y: &[f64], dy: &[f64]) -> bool;
}

/// Tolerances and controller settings; [`Controls::new`] gives the `ode_solvers` defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Controls {
    pub rtol: f64,
    pub atol: f64,
    pub safety: f64,
    /// beta of the PI controller; alpha = 0.2 - 0.75 beta.
    pub beta: f64,
    /// Smallest and largest ratio of a new step to the last one.
    pub fac_min: f64,
    pub fac_max: f64,
    /// Largest step; `ode_solvers` uses the length of the interval.
    pub h_max: f64,
    /// First step, or 0 for the automatic estimate.
    pub h_initial: f64,
    /// Largest number of attempted steps; one more ends the call with a step limit.
    pub max_steps: u32,
}

impl Controls {
    /// Default controller (safety 0.9, beta 0.04, step ratio in [0.2, 10]) for `span` = t1 - t0.
    pub fn new(rtol: f64, atol: f64, span: f64, h_initial: f64, max_steps: u32) -> Controls {
        Controls {
            rtol,
            atol,
            safety: 0.9,
            beta: 0.04,
            fac_min: 0.2,
            fac_max: 10.0,
            h_max: span.abs(),
            h_initial,
            max_steps,
        }
    }
}

/// Failure that ended a call before its end time and before any stop the system requested.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Failure {
    /// More than `max_steps` steps were attempted; the last accepted state is kept.
    StepLimit { t: f64 },
    /// The step became smaller than the rounding of t.
    StepSizeUnderflow { t: f64 },
}

/// Result of one call of [`Dopri5::integrate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Time of the last accepted state (the state is in `y`).
    pub t: f64,
    /// Time of the accepted state before it, if the call accepted a step (state in
    /// [`Dopri5::previous`]).
    pub t_previous: Option<f64>,
    pub accepted: u32,
    pub rejected: u32,
    /// The larger of the last two accepted steps (the last one is often cut short to land
    /// on t1), or 0 if there were fewer than two states.
    pub step_hint: f64,
    pub failure: Option<Failure>,
}

/// Work buffers of the stepper, sized once for a state length.
pub struct Dopri5 {
    stages: [Vec<f64>; 7],
    y_new: Vec<f64>,
    previous: Vec<f64>,
}

impl Dopri5 {
    pub fn new(len: usize) -> Dopri5 {
        Dopri5 {
            stages: std::array::from_fn(|_| vec![0.0; len]),
            y_new: vec![0.0; len],
            previous: vec![0.0; len],
        }
    }

    pub fn len(&self) -> usize {
        self.y_new.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y_new.is_empty()
    }

    /// State at [`Segment::t_previous`] of the last call.
    pub fn previous(&self) -> &[f64] {
        &self.previous
    }

    /// Writes the 4th-order dense output at `t_previous + theta h` into `out`, for the last
    /// accepted step of the last call: from `t_previous` (state [`Dopri5::previous`]) to
    /// `t_previous + h` (state `y`, as that call left it). With k1 and k7 the derivatives at
    /// both ends and e = h sum_s D_s k_s, it is
    ///
    /// ```text
    /// y_prev + theta (dy + (1 - theta) (h k1 - dy + theta (2 dy - h k1 - h k7 + (1 - theta) e)))
    /// ```
    ///
    /// with dy = y - y_prev. Valid only until the next call, which reuses the stages.
    pub fn interpolate(&self, y: &[f64], h: f64, theta: f64, out: &mut [f64]) {
        // After an accepted step, stage 0 is k7 (f at the new state) and stage 6 is the k1
        // of that step, because the two buffers were swapped.
        let [k7, _, k3, k4, k5, k6, k1] = &self.stages;
        let d = tableau::D;
        let rest = 1.0 - theta;
        for (i, value) in out.iter_mut().enumerate() {
            let start = self.previous[i];
            let change = y[i] - start;
            let slope_start = k1[i] * h - change;
            let slope_end = change - k7[i] * h - slope_start;
            let curvature = (k1[i] * d[0]
                + k3[i] * d[1]
                + k4[i] * d[2]
                + k5[i] * d[3]
                + k6[i] * d[4]
                + k7[i] * d[5])
                * h;
            *value = start
                + theta * (change + rest * (slope_start + theta * (slope_end + rest * curvature)));
        }
    }

    /// Integrates from `t0` towards `t1`, replacing `y` by the last accepted state.
    ///
    /// Ends at t1, when `system.accepted` returns true, or on a [`Failure`].
    pub fn integrate(
        &mut self,
        system: &mut impl OdeSystem,
        controls: &Controls,
        t0: f64,
        t1: f64,
        y: &mut Vec<f64>,
    ) -> Segment {
        assert_eq!(
            y.len(),
            self.len(),
            "state length differs from the stepper's"
        );
        let direction = if t1 - t0 >= 0.0 { 1.0 } else { -1.0 };
        let alpha = 0.2 - 0.75 * controls.beta;
        let mut controller = Controller {
            alpha,
            controls: *controls,
            fac_old: 1e-4,
            rejected_last: false,
            direction,
        };

        let mut t = t0;
        let mut h = controls.h_initial;
        if h == 0.0 {
            h = self.initial_step(system, controls, t0, t1, y);
        }
        let mut segment = Segment {
            t: t0,
            t_previous: None,
            accepted: 0,
            rejected: 0,
            step_hint: 0.0,
            failure: None,
        };
        let mut last_steps = [0.0f64; 2];
        let mut attempted = 0u32;
        let mut last = false;

        system.rhs(t, y, &mut self.stages[0]);
        loop {
            if attempted > controls.max_steps {
                segment.failure = Some(Failure::StepLimit { t });
                break;
            }
            if 0.1 * h.abs() <= f64::EPSILON * t.abs() {
                segment.failure = Some(Failure::StepSizeUnderflow { t });
                break;
            }
            if (t + 1.01 * h - t1) * direction > 0.0 {
                h = t1 - t;
                last = true;
            }
            attempted += 1;

            self.take_stages(system, t, h, y);
            let err = self.error_norm(controls, h, y);

            let mut h_new = 0.0;
            if controller.accept(err, h, &mut h_new) {
                segment.accepted += 1;
                let t_new = t + h;
                // Rotate buffers instead of copying: previous <- y <- y_new.
                std::mem::swap(&mut self.previous, y);
                std::mem::swap(y, &mut self.y_new);
                self.stages.swap(0, 6);
                last_steps = [last_steps[1], t_new - t];
                segment.t_previous = Some(t);
                t = t_new;
                if system.accepted(t, y, &self.stages[0]) {
                    last = true;
                }
                if last {
                    break;
                }
            } else {
                last = false;
                if segment.accepted >= 1 {
                    segment.rejected += 1;
                }
            }
            h = h_new;
        }

        segment.t = t;
        segment.step_hint = match segment.accepted {
            0 => 0.0,
            1 => last_steps[1],
            _ => last_steps[0].max(last_steps[1]),
        };
        segment
    }

    /// Evaluates stages 2 to 7 from stage 1 (f at `y`) and leaves the 5th-order solution in
    /// `y_new`; stage 7 is f at `y_new`.
    fn take_stages(&mut self, system: &mut impl OdeSystem, t: f64, h: f64, y: &[f64]) {
        for stage in 1..7 {
            let coefficients = tableau::A[stage - 1];
            let (done, rest) = self.stages.split_at_mut(stage);
            combine(y, done, coefficients, h, &mut self.y_new);
            system.rhs(t + h * tableau::C[stage], &self.y_new, &mut rest[0]);
        }
    }

    /// RMS of the scaled error estimate h sum_s e_s k_s.
    fn error_norm(&self, controls: &Controls, h: f64, y: &[f64]) -> f64 {
        let sum = error_sum(
            &self.stages,
            &self.y_new,
            y,
            controls.rtol,
            controls.atol,
            h,
        );
        (sum / y.len() as f64).sqrt()
    }

    /// First step by the estimate of `ode_solvers` (two evaluations of f).
    fn initial_step(
        &mut self,
        system: &mut impl OdeSystem,
        controls: &Controls,
        t0: f64,
        t1: f64,
        y: &[f64],
    ) -> f64 {
        let direction = if t1 - t0 >= 0.0 { 1.0 } else { -1.0 };
        let (f0, rest) = self.stages.split_at_mut(1);
        let f0 = &mut f0[0];
        let f1 = &mut rest[0];
        system.rhs(t0, y, f0);

        let scale = |y_i: f64| controls.atol + y_i.abs() * controls.rtol;
        let (mut d0, mut d1) = (0.0, 0.0);
        for (&y_i, &f_i) in y.iter().zip(f0.iter()) {
            let sc = scale(y_i);
            d0 += (y_i / sc) * (y_i / sc);
            d1 += (f_i / sc) * (f_i / sc);
        }
        let mut h0 = if d0 < 1e-10 || d1 < 1e-10 {
            1e-6
        } else {
            0.01 * (d0 / d1).sqrt()
        };
        h0 = h0.min(controls.h_max.abs()) * direction;

        for ((out, &y_i), &f_i) in self.y_new.iter_mut().zip(y).zip(f0.iter()) {
            *out = y_i + f_i * h0;
        }
        system.rhs(t0 + h0, &self.y_new, f1);
        let mut d2 = 0.0;
        for ((&y_i, &f0_i), &f1_i) in y.iter().zip(f0.iter()).zip(f1.iter()) {
            let ratio = (f1_i - f0_i) / scale(y_i);
            d2 += ratio * ratio;
        }
        d2 = d2.sqrt() / h0;

        let h1 = if d1.sqrt().max(d2.abs()) <= 1e-15 {
            1e-6f64.max(h0.abs() * 1e-3)
        } else {
            (0.01 / d1.sqrt().max(d2)).powf(0.2)
        };
        (100.0 * h0.abs()).min(h1.min(controls.h_max)) * direction
    }
}

/// Sum over i of (e_i / (atol + rtol max(|y_i|, |y_new_i|)))^2 with e = h sum_s E_s k_s.
///
/// The squares are added in one running sum, in index order, as `ode_solvers` does: the
/// estimate is a difference of nearly equal stage sums, so another summation order would
/// change the step sizes by far more than rounding. The squares themselves are formed a
/// block at a time, so that part vectorizes.
fn error_sum(
    stages: &[Vec<f64>; 7],
    y_new: &[f64],
    y: &[f64],
    rtol: f64,
    atol: f64,
    h: f64,
) -> f64 {
    dispatch!(error_sum_kernel, error_sum_avx2, (stages: &[Vec<f64>; 7], y_new: &[f64], y: &[f64], rtol: f64, atol: f64, h: f64) -> f64);
}

#[inline(always)]
fn error_sum_kernel(
    stages: &[Vec<f64>; 7],
    y_new: &[f64],
    y: &[f64],
    rtol: f64,
    atol: f64,
    h: f64,
) -> f64 {
    let [k1, _, k3, k4, k5, k6, k7] = stages;
    let e = tableau::E;
    let mut squares = [0.0; BLOCK];
    let mut sum = 0.0;
    let mut start = 0;
    while start < y.len() {
        let end = (start + BLOCK).min(y.len());
        let range = start..end;
        let block = &mut squares[..end - start];
        for (j, square) in block.iter_mut().enumerate() {
            let i = start + j;
            let estimate = (k1[i] * e[0]
                + k3[i] * e[1]
                + k4[i] * e[2]
                + k5[i] * e[3]
                + k6[i] * e[4]
                + k7[i] * e[5])
                * h;
            let scale = atol + y[i].abs().max(y_new[i].abs()) * rtol;
            let ratio = estimate / scale;
            *square = ratio * ratio;
        }
        for &square in block.iter() {
            sum += square;
        }
        start = range.end;
    }
    sum
}

/// out = y + sum_j (k_j h) a_j, summed in the order of j, in blocks that stay in cache.
fn combine(y: &[f64], stages: &[Vec<f64>], coefficients: &[f64], h: f64, out: &mut [f64]) {
    dispatch!(combine_kernel, combine_avx2, (y: &[f64], stages: &[Vec<f64>], coefficients: &[f64], h: f64, out: &mut [f64]) -> ());
}

#[inline(always)]
fn combine_kernel(y: &[f64], stages: &[Vec<f64>], coefficients: &[f64], h: f64, out: &mut [f64]) {
    let len = y.len();
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let block = &mut out[start..end];
        block.copy_from_slice(&y[start..end]);
        for (stage, &a) in stages.iter().zip(coefficients) {
            for (o, &k) in block.iter_mut().zip(&stage[start..end]) {
                *o += k * h * a;
            }
        }
        start = end;
    }
}

/// The PI step-size controller of `ode_solvers` 0.6.
struct Controller {
    alpha: f64,
    controls: Controls,
    fac_old: f64,
    rejected_last: bool,
    direction: f64,
}

impl Controller {
    /// Decides on a step of size `h` with error `err` and writes the next step size.
    fn accept(&mut self, err: f64, h: f64, h_new: &mut f64) -> bool {
        let c = &self.controls;
        let (facc1, facc2) = (1.0 / c.fac_min, 1.0 / c.fac_max);
        let fac11 = err.powf(self.alpha);
        let fac = fac11 * self.fac_old.powf(-c.beta);
        let fac = facc2.max(facc1.min(fac / c.safety));
        *h_new = h / fac;

        if err <= 1.0 {
            self.fac_old = err.max(1e-4);
            if h_new.abs() > c.h_max {
                *h_new = self.direction * c.h_max;
            }
            if self.rejected_last {
                *h_new = self.direction * h_new.abs().min(h.abs());
            }
            self.rejected_last = false;
            true
        } else {
            *h_new = h / facc1.min(fac11 / c.safety);
            self.rejected_last = true;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ode_solvers::{DVector, OutputType, System};

    /// A nonlinear system with all components coupled: a damped rotation plus a
    /// quadratic term, dy_i/dt = -0.3 y_i + y_{i+1} - y_{i-1} + 0.1 y_i^2 (indices mod N).
    fn field(y: &[f64], dy: &mut [f64]) {
        let n = y.len();
        for i in 0..n {
            dy[i] = -0.3 * y[i] + y[(i + 1) % n] - y[(i + n - 1) % n] + 0.1 * y[i] * y[i];
        }
    }

    struct Plain {
        evaluations: usize,
        stop_after: Option<u32>,
        accepted: u32,
    }

    impl OdeSystem for Plain {
        fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
            self.evaluations += 1;
            field(y, dy);
        }

        fn accepted(&mut self, _t: f64, _y: &[f64], _dy: &[f64]) -> bool {
            self.accepted += 1;
            self.stop_after.is_some_and(|limit| self.accepted >= limit)
        }
    }

    struct Reference {
        stop_after: Option<u32>,
        accepted: u32,
    }

    impl System<f64, DVector<f64>> for Reference {
        fn system(&self, _t: f64, y: &DVector<f64>, dy: &mut DVector<f64>) {
            field(y.as_slice(), dy.as_mut_slice());
        }

        fn solout(&mut self, _t: f64, _y: &DVector<f64>, _dy: &DVector<f64>) -> bool {
            self.accepted += 1;
            self.stop_after.is_some_and(|limit| self.accepted >= limit)
        }
    }

    fn start(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7 + 3) % 11) as f64 / 11.0 - 0.4)
            .collect()
    }

    /// Runs `ode_solvers` Dopri5 with sparse output; returns (times, final state, stats).
    fn reference_run(
        y0: &[f64],
        t1: f64,
        rtol: f64,
        atol: f64,
        h: f64,
        stop_after: Option<u32>,
    ) -> (Vec<f64>, Vec<f64>, u32, u32) {
        let system = Reference {
            stop_after,
            accepted: 0,
        };
        let mut solver = ode_solvers::Dopri5::from_param(
            system,
            0.0,
            t1,
            t1,
            DVector::from_vec(y0.to_vec()),
            rtol,
            atol,
            0.9,
            0.04,
            0.2,
            10.0,
            t1,
            h,
            100_000,
            1000,
            OutputType::Sparse,
        );
        let stats = solver.integrate().expect("reference solve succeeds");
        let last = solver.y_out().last().unwrap().as_slice().to_vec();
        (
            solver.x_out().clone(),
            last,
            stats.accepted_steps,
            stats.rejected_steps,
        )
    }

    #[test]
    fn matches_ode_solvers_dopri5() {
        // 1500 entries, so the fused stage sums cross several blocks and a partial one.
        let y0 = start(1500);
        for (rtol, atol, h) in [(1e-6, 1e-9, 0.0), (1e-10, 1e-12, 0.0), (1e-8, 1e-8, 0.05)] {
            let (times, expected, accepted, rejected) =
                reference_run(&y0, 3.0, rtol, atol, h, None);
            let mut system = Plain {
                evaluations: 0,
                stop_after: None,
                accepted: 0,
            };
            let controls = Controls::new(rtol, atol, 3.0, h, 100_000);
            let mut y = y0.clone();
            let mut stepper = Dopri5::new(y.len());
            let segment = stepper.integrate(&mut system, &controls, 0.0, 3.0, &mut y);

            assert_eq!(segment.failure, None);
            assert_eq!(segment.accepted, accepted, "accepted steps, rtol {rtol}");
            assert_eq!(segment.rejected, rejected, "rejected steps, rtol {rtol}");
            assert_eq!(segment.t, *times.last().unwrap());
            assert_eq!(segment.t_previous, Some(times[times.len() - 2]));
            assert_eq!(y, expected, "states differ at rtol {rtol}");
        }
    }

    #[test]
    fn stop_request_ends_call() {
        let y0 = start(40);
        let (times, expected, _, _) = reference_run(&y0, 3.0, 1e-8, 1e-10, 0.0, Some(5));
        let mut system = Plain {
            evaluations: 0,
            stop_after: Some(5),
            accepted: 0,
        };
        let controls = Controls::new(1e-8, 1e-10, 3.0, 0.0, 100_000);
        let mut y = y0.clone();
        let mut stepper = Dopri5::new(y.len());
        let segment = stepper.integrate(&mut system, &controls, 0.0, 3.0, &mut y);

        assert_eq!(segment.accepted, 5);
        assert_eq!(segment.t, times[5]);
        assert_eq!(y, expected);
        let step = |i: usize| times[i] - times[i - 1];
        assert_eq!(segment.step_hint, step(5).max(step(4)));
        // Two evaluations for the first step, one for stage 1, six per attempted step.
        let attempted = (segment.accepted + segment.rejected) as usize;
        assert_eq!(system.evaluations, 3 + 6 * attempted);
    }

    #[test]
    fn step_limit_keeps_last_state() {
        let y0 = start(30);
        let mut system = Plain {
            evaluations: 0,
            stop_after: None,
            accepted: 0,
        };
        let controls = Controls::new(1e-12, 1e-14, 100.0, 0.0, 3);
        let mut y = y0.clone();
        let mut stepper = Dopri5::new(y.len());
        let segment = stepper.integrate(&mut system, &controls, 0.0, 100.0, &mut y);

        assert!(matches!(segment.failure, Some(Failure::StepLimit { .. })));
        // Four steps were attempted; rejections before the first acceptance are not counted.
        assert!(segment.accepted >= 1);
        assert!(segment.accepted + segment.rejected <= 4);
        assert!(segment.t > 0.0);
        assert!(segment.t < 100.0);
        let t_previous = segment.t_previous.expect("a step was accepted");
        assert!(t_previous < segment.t);
    }

    #[test]
    fn exponential_decay_to_tolerance() {
        // dy/dt = -y for every entry: y(2) = y0 exp(-2).
        struct Decay;
        impl OdeSystem for Decay {
            fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
                for (d, v) in dy.iter_mut().zip(y) {
                    *d = -v;
                }
            }
            fn accepted(&mut self, _t: f64, _y: &[f64], _dy: &[f64]) -> bool {
                false
            }
        }
        let mut y: Vec<f64> = (1..=7).map(|i| i as f64).collect();
        let controls = Controls::new(1e-10, 1e-12, 2.0, 0.0, 10_000);
        let segment = Dopri5::new(7).integrate(&mut Decay, &controls, 0.0, 2.0, &mut y);
        assert_eq!(segment.t, 2.0);
        for (i, v) in y.iter().enumerate() {
            let exact = (i + 1) as f64 * (-2f64).exp();
            assert!(
                (v - exact).abs() < 1e-8 * exact,
                "entry {i}: {v} vs {exact}"
            );
        }
    }

    #[test]
    fn dense_output_between_steps() {
        // dy/dt = -y with y(0) = 1: the interpolant must follow exp(-t) inside a step and
        // meet both ends of it.
        struct Decay;
        impl OdeSystem for Decay {
            fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
                dy[0] = -y[0];
            }
            fn accepted(&mut self, t: f64, _y: &[f64], _dy: &[f64]) -> bool {
                t > 0.5
            }
        }
        let mut y = vec![1.0];
        let controls = Controls::new(1e-9, 1e-12, 2.0, 0.0, 10_000);
        let mut stepper = Dopri5::new(1);
        let segment = stepper.integrate(&mut Decay, &controls, 0.0, 2.0, &mut y);
        let t_previous = segment.t_previous.expect("steps were accepted");
        let h = segment.t - t_previous;
        assert!(h > 0.0);

        let mut out = [0.0];
        stepper.interpolate(&y, h, 0.0, &mut out);
        assert_eq!(out[0], stepper.previous()[0]);
        stepper.interpolate(&y, h, 1.0, &mut out);
        assert!((out[0] - y[0]).abs() <= 1e-15);
        for theta in [0.1, 0.37, 0.5, 0.9] {
            stepper.interpolate(&y, h, theta, &mut out);
            let exact = (-(t_previous + theta * h)).exp();
            assert!(
                (out[0] - exact).abs() < 1e-9,
                "theta {theta}: {} vs {exact}",
                out[0]
            );
        }
    }
}
