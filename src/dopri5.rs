//! An allocation-free Dormand-Prince 5(4) stepper on flat `f64` slices.
//!
//! With the PI step-size rule it follows the algorithm of `ode_solvers` 0.6 `Dopri5` with
//! sparse output: the same tableau, the same first-step estimate (Hairer, Norsett and
//! Wanner, Solving ODE I, section II.4), the same error norm
//!
//! ```text
//! err = sqrt( (1/N) sum_i ( e_i / (atol + rtol max(|y_i|, |y_new_i|)) )^2 ),
//! ```
//!
//! where e is h times the difference of the embedded 5th- and 4th-order solutions, and the
//! same PI controller (`fac = err^alpha / fac_old^beta`, with alpha = 0.2 - 0.75 beta,
//! clamped to [1/fac_max, 1/fac_min] after dividing by the safety factor). Both take the
//! same steps, but the stage sums here use fused multiply-adds and the error norm adds its
//! squares in eight running sums instead of one. The error estimate, a difference of nearly
//! equal stage sums, amplifies that rounding into step sizes about 1e-8 apart (relative),
//! so the states agree to a small fraction of the tolerance, not bit for bit.
//!
//! The integral rule is the default controller of diffrax (`PIDController` with only its
//! integral coefficient). The next step is h 0.9 err^(-1/5), at least h and at most 10 h
//! after an accepted step, and between 0.2 h and 0.9 h after a rejected one.
//!
//! A call ends with the step its controller proposed next and, for the PI rule, the
//! controller's memory fac_old. A run split into calls at accepted steps takes the same
//! steps as one call when each call starts from those.
//!
//! The state lives in seven stage buffers allocated once. Each stage sum is formed in one
//! pass over the state, and the last one also forms the part of the error estimate that
//! does not need stage 7, so the error norm reads four vectors instead of eight.
//! The stiffness test of `ode_solvers` is left out: it runs every 1000 accepted steps of one
//! solver call and only reports an error, and the run loop never makes calls that long.

use serde::{Deserialize, Serialize};

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

/// A right-hand side dy/dt = f(t, y) with a hook after each accepted step.
pub trait OdeSystem {
    /// Writes f(t, y) into `dy`.
    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]);

    /// Called after each accepted step with the new time, state and f at that state (the
    /// last `rhs` call was at exactly this state). Returns true to end the call there.
    fn accepted(&mut self, t: f64, y: &[f64], dy: &[f64]) -> bool;
}

/// Rule that sets the next step size from the error of the last trial step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StepRule {
    /// The PI controller of Hairer's DOPRI5 and `ode_solvers` (beta = 0.04).
    #[default]
    Pi,
    /// The integral controller that diffrax uses by default: 0.9 err^(-1/5), never
    /// shrinking an accepted step.
    Integral,
}

impl StepRule {
    pub fn name(self) -> &'static str {
        match self {
            StepRule::Pi => "pi",
            StepRule::Integral => "integral",
        }
    }
}

/// fac_old of the PI rule before its first step, as in `ode_solvers`.
pub const FRESH_MEMORY: f64 = 1e-4;

/// Tolerances and controller settings; [`Controls::new`] gives the `ode_solvers` defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Controls {
    pub rule: StepRule,
    pub rtol: f64,
    pub atol: f64,
    pub safety: f64,
    /// beta of the PI controller; alpha = 0.2 - 0.75 beta.
    pub beta: f64,
    /// Smallest and largest ratio of a new step to the last one.
    pub fac_min: f64,
    pub fac_max: f64,
    /// Largest step of the PI rule and of the first step; `ode_solvers` uses the length of
    /// the interval.
    pub h_max: f64,
    /// First step, or 0 for the automatic estimate.
    pub h_initial: f64,
    /// Largest number of attempted steps; one more ends the call with a step limit.
    pub max_steps: u32,
    /// fac_old of the PI rule at the start: [`FRESH_MEMORY`] for a new start, or
    /// [`Segment::memory`] of the call this one continues.
    pub memory: f64,
    /// Count rejected steps before the first accepted step of the call, which `ode_solvers`
    /// leaves out. A run that counts them has counts that do not depend on where it is cut
    /// into calls.
    pub count_early_rejections: bool,
    /// The call starts from the state at which the last call of the same stepper ended,
    /// for the same system, so stage 1 need not be evaluated again. The caller vouches for
    /// this; the stepper only checks the time.
    pub continues: bool,
}

impl Controls {
    /// Default controller (safety 0.9, beta 0.04, step ratio in [0.2, 10]) for `span` = t1 - t0.
    pub fn new(rtol: f64, atol: f64, span: f64, h_initial: f64, max_steps: u32) -> Controls {
        Controls {
            rule: StepRule::Pi,
            rtol,
            atol,
            safety: 0.9,
            beta: 0.04,
            fac_min: 0.2,
            fac_max: 10.0,
            h_max: span.abs(),
            h_initial,
            max_steps,
            memory: FRESH_MEMORY,
            count_early_rejections: false,
            continues: false,
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
    /// First step for a call that continues from here, or 0 if no step was accepted: the
    /// step the controller proposed after the last accepted step. If that step was cut
    /// short to land on t1, the larger of the proposal after it and the step before the cut.
    pub step_hint: f64,
    /// fac_old of the PI rule after the call, for [`Controls::memory`] of the next one.
    pub memory: f64,
    pub failure: Option<Failure>,
}

/// Work buffers of the stepper, sized once for a state length.
///
/// Stage 1 of a call is f at the start state. A call marked [`Controls::continues`] starts
/// at the time and state where the last call ended, so that value is still in the first
/// stage buffer and is used again.
pub struct Dopri5 {
    stages: [Vec<f64>; 7],
    y_new: Vec<f64>,
    previous: Vec<f64>,
    /// Time at which the last call ended; the first stage buffer contains f there.
    end_time: Option<f64>,
}

impl Dopri5 {
    pub fn new(len: usize) -> Dopri5 {
        Dopri5 {
            stages: std::array::from_fn(|_| vec![0.0; len]),
            y_new: vec![0.0; len],
            previous: vec![0.0; len],
            end_time: None,
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
        let n = out.len();
        assert!(
            y.len() == n && self.previous.len() == n,
            "state lengths differ"
        );
        let stages = [&k1[..], &k3[..], &k4[..], &k5[..], &k6[..], &k7[..]];
        let previous = &self.previous[..];
        dispatch!(interpolate_kernel, interpolate_avx2, (previous: &[f64], y: &[f64], stages: [&[f64]; 6], h: f64, theta: f64, out: &mut [f64]) -> ());
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
            fac_old: controls.memory,
            rejected_last: false,
            direction,
        };

        let mut t = t0;
        let mut h = controls.h_initial;
        // Stage 1 of the first step is f(t0, y): still there from the last call if this one
        // continues it, or just computed by the first-step estimate.
        let mut derivative_ready = controls.continues && self.end_time == Some(t0);
        if h == 0.0 {
            h = self.initial_step(system, controls, t0, t1, y);
            derivative_ready = true;
        }
        let mut segment = Segment {
            t: t0,
            t_previous: None,
            accepted: 0,
            rejected: 0,
            step_hint: 0.0,
            memory: controls.memory,
            failure: None,
        };
        let mut attempted = 0u32;
        let mut last = false;
        // The controller's step before the cut that lands on t1.
        let mut proposed;

        if !derivative_ready {
            system.rhs(t, y, &mut self.stages[0]);
        }
        loop {
            proposed = h;
            if attempted > controls.max_steps {
                segment.failure = Some(Failure::StepLimit { t });
                break;
            }
            if 0.1 * h.abs() <= f64::EPSILON * t.abs() {
                segment.failure = Some(Failure::StepSizeUnderflow { t });
                break;
            }
            let cut = (t + 1.01 * h - t1) * direction > 0.0;
            if cut {
                h = t1 - t;
                last = true;
            }
            attempted += 1;

            self.take_stages(system, t, h, y);
            let err = self.error_norm(controls, h, y);

            let mut h_new = 0.0;
            if controller.accept(err, h, &mut h_new) {
                segment.accepted += 1;
                // A step cut to land on t1 ends there exactly, not one rounding of t + h
                // away, so a call that continues from t1 finds stage 1 ready.
                let t_new = if cut { t1 } else { t + h };
                // Rotate buffers instead of copying: previous <- y <- y_new.
                std::mem::swap(&mut self.previous, y);
                std::mem::swap(y, &mut self.y_new);
                self.stages.swap(0, 6);
                segment.t_previous = Some(t);
                t = t_new;
                if system.accepted(t, y, &self.stages[0]) {
                    last = true;
                }
                if last {
                    // A step that landed on t1 was cut short, so the next call starts from
                    // the step the controller proposed before the cut, or a longer one.
                    proposed = if cut {
                        proposed.abs().max(h_new.abs()) * direction
                    } else {
                        h_new
                    };
                    break;
                }
            } else {
                last = false;
                if segment.accepted >= 1 || controls.count_early_rejections {
                    segment.rejected += 1;
                }
            }
            h = h_new;
        }

        self.end_time = Some(t);
        segment.t = t;
        segment.step_hint = if segment.accepted == 0 { 0.0 } else { proposed };
        segment.memory = controller.fac_old;
        segment
    }

    /// Evaluates stages 2 to 7 from stage 1 (f at `y`) and leaves the 5th-order solution in
    /// `y_new`; stage 7 is f at `y_new`. Stage 2's buffer, which the 5th-order sum does not
    /// use, then contains sum_s E_s k_s over stages 1 and 3 to 6.
    fn take_stages(&mut self, system: &mut impl OdeSystem, t: f64, h: f64, y: &[f64]) {
        let [k1, k2, k3, k4, k5, k6, k7] = &mut self.stages;
        let (a, c) = (tableau::A, tableau::C);
        let out = &mut self.y_new;

        stage_sum([&*k1], a[0], h, y, out);
        system.rhs(t + h * c[1], out, k2);
        stage_sum([&*k1, &*k2], a[1], h, y, out);
        system.rhs(t + h * c[2], out, k3);
        stage_sum([&*k1, &*k2, &*k3], a[2], h, y, out);
        system.rhs(t + h * c[3], out, k4);
        stage_sum([&*k1, &*k2, &*k3, &*k4], a[3], h, y, out);
        system.rhs(t + h * c[4], out, k5);
        stage_sum([&*k1, &*k2, &*k3, &*k4, &*k5], a[4], h, y, out);
        system.rhs(t + h * c[5], out, k6);
        let b = a[5];
        let w = [b[0], b[2], b[3], b[4], b[5]].map(|coefficient| h * coefficient);
        solution_sum([&*k1, &*k3, &*k4, &*k5, &*k6], &w, y, out, k2);
        system.rhs(t + h * c[6], out, k7);
    }

    /// RMS of the scaled error estimate h sum_s E_s k_s.
    fn error_norm(&self, controls: &Controls, h: f64, y: &[f64]) -> f64 {
        let sum = error_sum(
            &self.stages[1],
            &self.stages[6],
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

/// Sum over i of (e_i / (atol + rtol max(|y_i|, |y_new_i|)))^2, where e = h (`partial` +
/// E_7 k7) is the error estimate. It is multiplied by h before the division, so that a
/// large derivative over a small step does not overflow the square.
///
/// Adds the squares in eight running sums in a fixed order, so the result does not depend
/// on the machine.
fn error_sum(
    partial: &[f64],
    k7: &[f64],
    y_new: &[f64],
    y: &[f64],
    rtol: f64,
    atol: f64,
    h: f64,
) -> f64 {
    let n = y.len();
    assert_eq!(partial.len(), n);
    assert_eq!(k7.len(), n);
    assert_eq!(y_new.len(), n);
    dispatch!(error_sum_kernel, error_sum_avx2, (partial: &[f64], k7: &[f64], y_new: &[f64], y: &[f64], rtol: f64, atol: f64, h: f64) -> f64);
}

#[inline(always)]
fn error_sum_kernel(
    partial: &[f64],
    k7: &[f64],
    y_new: &[f64],
    y: &[f64],
    rtol: f64,
    atol: f64,
    h: f64,
) -> f64 {
    const LANES: usize = 8;
    let e7 = tableau::E[5];
    let ratio = |partial: f64, k7: f64, y_new: f64, y: f64| {
        let estimate = k7.mul_add(e7, partial) * h;
        estimate / rtol.mul_add(y.abs().max(y_new.abs()), atol)
    };
    let whole = y.len() / LANES * LANES;
    let mut sums = [0.0; LANES];
    let chunks = partial[..whole]
        .chunks_exact(LANES)
        .zip(k7[..whole].chunks_exact(LANES))
        .zip(y_new[..whole].chunks_exact(LANES))
        .zip(y[..whole].chunks_exact(LANES));
    for (((p, k), u), v) in chunks {
        for lane in 0..LANES {
            let r = ratio(p[lane], k[lane], u[lane], v[lane]);
            sums[lane] = r.mul_add(r, sums[lane]);
        }
    }
    let rest = (whole..y.len()).enumerate();
    for (lane, i) in rest {
        let r = ratio(partial[i], k7[i], y_new[i], y[i]);
        sums[lane] = r.mul_add(r, sums[lane]);
    }
    sums.iter().sum()
}

/// Computes [`Dopri5::interpolate`] from the step's start state `previous`, end state `y`
/// and the stages k1, k3, k4, k5, k6 and k7.
#[inline(always)]
fn interpolate_kernel(
    previous: &[f64],
    y: &[f64],
    stages: [&[f64]; 6],
    h: f64,
    theta: f64,
    out: &mut [f64],
) {
    let n = out.len();
    let (previous, y) = (&previous[..n], &y[..n]);
    let [k1, k3, k4, k5, k6, k7] = stages.map(|stage| &stage[..n]);
    let w = tableau::D.map(|coefficient| coefficient * h);
    let rest = 1.0 - theta;
    for i in 0..n {
        let start = previous[i];
        let change = y[i] - start;
        let slope_start = k1[i].mul_add(h, -change);
        let slope_end = k7[i].mul_add(-h, change) - slope_start;
        let mut curvature = k1[i] * w[0];
        for (k, weight) in [k3[i], k4[i], k5[i], k6[i], k7[i]].into_iter().zip(&w[1..]) {
            curvature = k.mul_add(*weight, curvature);
        }
        let inner = rest.mul_add(curvature, slope_end);
        let middle = theta.mul_add(inner, slope_start);
        out[i] = theta.mul_add(rest.mul_add(middle, change), start);
    }
}

/// out = y + sum_j (h a_j) k_j for one row a of the tableau, added in the order of j.
fn stage_sum<const S: usize>(
    stages: [&Vec<f64>; S],
    a: &[f64],
    h: f64,
    y: &[f64],
    out: &mut [f64],
) {
    assert_eq!(a.len(), S, "one coefficient per stage");
    let stages = stages.map(|stage| &stage[..]);
    let w: [f64; S] = std::array::from_fn(|j| h * a[j]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { stage_sum_avx2(stages, w, y, out) };
    }
    stage_sum_kernel(stages, w, y, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn stage_sum_avx2<const S: usize>(stages: [&[f64]; S], w: [f64; S], y: &[f64], out: &mut [f64]) {
    stage_sum_kernel(stages, w, y, out);
}

#[inline(always)]
fn stage_sum_kernel<const S: usize>(stages: [&[f64]; S], w: [f64; S], y: &[f64], out: &mut [f64]) {
    let n = out.len();
    let y = &y[..n];
    let stages = stages.map(|stage| &stage[..n]);
    for i in 0..n {
        let mut sum = y[i];
        for (stage, &weight) in stages.iter().zip(&w) {
            sum = stage[i].mul_add(weight, sum);
        }
        out[i] = sum;
    }
}

/// Writes the 5th-order solution `out` = y + sum_j w_j k_j over stages 1 and 3 to 6, and
/// `partial` = sum_j E_j k_j over the same stages, in one pass.
fn solution_sum(
    stages: [&Vec<f64>; 5],
    w: &[f64; 5],
    y: &[f64],
    out: &mut [f64],
    partial: &mut [f64],
) {
    let stages = stages.map(|stage| &stage[..]);
    dispatch!(solution_sum_kernel, solution_sum_avx2, (stages: [&[f64]; 5], w: &[f64; 5], y: &[f64], out: &mut [f64], partial: &mut [f64]) -> ());
}

#[inline(always)]
fn solution_sum_kernel(
    stages: [&[f64]; 5],
    w: &[f64; 5],
    y: &[f64],
    out: &mut [f64],
    partial: &mut [f64],
) {
    let e = tableau::E;
    let n = out.len();
    let (y, partial) = (&y[..n], &mut partial[..n]);
    let [k1, k3, k4, k5, k6] = stages.map(|stage| &stage[..n]);
    for i in 0..n {
        let mut sum = y[i];
        for (k, weight) in [k1[i], k3[i], k4[i], k5[i], k6[i]].into_iter().zip(w) {
            sum = k.mul_add(*weight, sum);
        }
        out[i] = sum;
        let mut estimate = k1[i] * e[0];
        for (k, weight) in [k3[i], k4[i], k5[i], k6[i]].into_iter().zip(&e[1..5]) {
            estimate = k.mul_add(*weight, estimate);
        }
        partial[i] = estimate;
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
        match self.controls.rule {
            StepRule::Pi => self.accept_pi(err, h, h_new),
            StepRule::Integral => self.accept_integral(err, h, h_new),
        }
    }

    /// Applies the integral rule: factor 0.9 err^(-1/5), in [1, 10] after an accepted step and in
    /// [0.2, 0.9] after a rejected one (fac_min, safety and fac_max of the controls).
    fn accept_integral(&mut self, err: f64, h: f64, h_new: &mut f64) -> bool {
        let c = &self.controls;
        // A NaN error (from a non-finite stage) rejects the step and shrinks it as much as
        // allowed, as the PI rule does, so that the step-size test ends the call.
        let accepted = err <= 1.0;
        let factor = if err == 0.0 {
            c.fac_max
        } else if err.is_nan() {
            c.fac_min
        } else {
            c.safety * err.powf(-0.2)
        };
        let factor = if accepted {
            factor.clamp(1.0, c.fac_max)
        } else {
            factor.clamp(c.fac_min, c.safety)
        };
        // No cap at h_max, which is the span of the call: the steps must not depend on how
        // a run is split into calls. The cut that lands on t1 bounds each step instead.
        *h_new = h * factor;
        accepted
    }

    /// Applies the PI rule of `ode_solvers`.
    fn accept_pi(&mut self, err: f64, h: f64, h_new: &mut f64) -> bool {
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

    /// The system dy/dt = -y for every entry, which turns NaN after `nan_after`. A step
    /// accepted after `stop_after` ends the call.
    struct Decay {
        nan_after: f64,
        stop_after: f64,
    }

    impl Decay {
        const PLAIN: Decay = Decay {
            nan_after: f64::INFINITY,
            stop_after: f64::INFINITY,
        };
    }

    impl OdeSystem for Decay {
        fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]) {
            for (d, v) in dy.iter_mut().zip(y) {
                *d = if t > self.nan_after { f64::NAN } else { -v };
            }
        }

        fn accepted(&mut self, t: f64, _y: &[f64], _dy: &[f64]) -> bool {
            t > self.stop_after
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

    /// Largest |a_i - b_i| in units of the error tolerance atol + rtol |b_i|.
    fn tolerance_units(a: &[f64], b: &[f64], rtol: f64, atol: f64) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (atol + rtol * y.abs()))
            .fold(0.0, f64::max)
    }

    /// Relative difference of two times.
    fn relative(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn matches_ode_solvers_dopri5() {
        // The two solvers take the same steps. Their step sizes differ by rounding amplified
        // in the error estimate, a difference of nearly equal stage sums (about 1e-8
        // relative here), so the states agree to a fraction of the tolerance, not bit for
        // bit. A wrong coefficient would show as a different step count or a difference of
        // many tolerance units.
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
            let t_previous = segment.t_previous.expect("steps were accepted");
            let previous_gap = relative(t_previous, times[times.len() - 2]);
            let units = tolerance_units(&y, &expected, rtol, atol);
            assert!(
                previous_gap < 1e-5,
                "rtol {rtol}: t_previous off by {previous_gap:e}"
            );
            assert!(
                units < 0.01,
                "rtol {rtol}: states differ by {units:e} tolerance units"
            );
        }
    }

    #[test]
    fn one_step_matches_ode_solvers() {
        // One step of a given size, which the loose tolerance accepts: the stage sums and
        // the 5th-order solution agree with `ode_solvers` to rounding.
        let y0 = start(1500);
        let h = 0.05;
        let (times, expected, accepted, rejected) = reference_run(&y0, h, 1e-3, 1e-3, h, None);
        assert_eq!((accepted, rejected), (1, 0), "the reference takes one step");
        let mut system = Plain {
            evaluations: 0,
            stop_after: None,
            accepted: 0,
        };
        let controls = Controls::new(1e-3, 1e-3, h, h, 100);
        let mut y = y0.clone();
        let segment = Dopri5::new(y.len()).integrate(&mut system, &controls, 0.0, h, &mut y);

        assert_eq!((segment.accepted, segment.rejected), (1, 0));
        assert_eq!(segment.t, times[1]);
        let worst = y
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0.0, f64::max);
        assert!(worst < 1e-14, "relative difference {worst:e}");
    }

    #[test]
    fn stop_request_ends_call() {
        let y0 = start(40);
        let (times, _, _, _) = reference_run(&y0, 3.0, 1e-8, 1e-10, 0.0, Some(5));
        let mut system = Plain {
            evaluations: 0,
            stop_after: Some(5),
            accepted: 0,
        };
        let controls = Controls::new(1e-8, 1e-10, 3.0, 0.0, 100_000);
        let mut y = y0.clone();
        let mut stepper = Dopri5::new(y.len());
        let segment = stepper.integrate(&mut system, &controls, 0.0, 3.0, &mut y);

        // The call ends at a step time of its own, which differs from the reference's by
        // rounding amplified in the error estimates, so only times are compared.
        assert_eq!(segment.accepted, 5);
        let gap = relative(segment.t, times[5]);
        assert!(gap < 1e-6, "t off by {gap:e}");
        // Two evaluations for the first step estimate (the first is stage 1 of the first
        // step), six per attempted step.
        let attempted = (segment.accepted + segment.rejected) as usize;
        assert_eq!(system.evaluations, 2 + 6 * attempted);
    }

    #[test]
    fn fallback_kernels_match_dispatched() {
        // The generic kernels run on CPUs without AVX2 and FMA; they must give the same bits.
        let n = 1501;
        let vector = |seed: usize| -> Vec<f64> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 10_007) as f64 / 10_007.0 - 0.5) * 3.0)
                .collect()
        };
        let y = vector(0);
        let stages: Vec<Vec<f64>> = (1..=7).map(vector).collect();
        let h = 0.013;
        let a = tableau::A[4];
        let refs: [&Vec<f64>; 5] = std::array::from_fn(|j| &stages[j]);
        let w: [f64; 5] = std::array::from_fn(|j| h * a[j]);
        let (mut generic, mut dispatched) = (vec![0.0; n], vec![0.0; n]);
        stage_sum_kernel(refs.map(|stage| &stage[..]), w, &y, &mut generic);
        stage_sum(refs, a, h, &y, &mut dispatched);
        assert_eq!(generic, dispatched, "stage sum");

        let (mut partial_generic, mut partial_dispatched) = (vec![0.0; n], vec![0.0; n]);
        solution_sum_kernel(
            refs.map(|stage| &stage[..]),
            &w,
            &y,
            &mut generic,
            &mut partial_generic,
        );
        solution_sum(refs, &w, &y, &mut dispatched, &mut partial_dispatched);
        assert_eq!(generic, dispatched, "5th-order solution");
        assert_eq!(partial_generic, partial_dispatched, "error estimate part");

        let k7 = &stages[6];
        let generic_sum = error_sum_kernel(&partial_generic, k7, &generic, &y, 1e-6, 1e-9, h);
        let dispatched_sum = error_sum(&partial_generic, k7, &generic, &y, 1e-6, 1e-9, h);
        assert_eq!(generic_sum.to_bits(), dispatched_sum.to_bits(), "error sum");

        let mut stepper = Dopri5::new(n);
        for (buffer, stage) in stepper.stages.iter_mut().zip(&stages) {
            buffer.copy_from_slice(stage);
        }
        stepper.previous.copy_from_slice(&vector(8));
        let [k7, _, k3, k4, k5, k6, k1] = &stepper.stages;
        let interpolation_stages = [&k1[..], &k3[..], &k4[..], &k5[..], &k6[..], &k7[..]];
        let theta = 0.37;
        interpolate_kernel(
            &stepper.previous,
            &y,
            interpolation_stages,
            h,
            theta,
            &mut generic,
        );
        stepper.interpolate(&y, h, theta, &mut dispatched);
        assert_eq!(generic, dispatched, "dense output");
    }

    #[test]
    fn non_finite_field_ends_call() {
        // f turns NaN for t > 0.5: both rules must shrink the step until it underflows,
        // not spin through the whole step budget.
        let mut poisoned = Decay {
            nan_after: 0.5,
            ..Decay::PLAIN
        };
        for rule in [StepRule::Pi, StepRule::Integral] {
            let mut controls = Controls::new(1e-8, 1e-10, 2.0, 0.0, 1_000_000);
            controls.rule = rule;
            let mut y = vec![1.0; 8];
            let segment = Dopri5::new(8).integrate(&mut poisoned, &controls, 0.0, 2.0, &mut y);
            assert!(
                matches!(segment.failure, Some(Failure::StepSizeUnderflow { .. })),
                "{rule:?}: {:?}",
                segment.failure
            );
            assert!(
                segment.accepted + segment.rejected < 2000,
                "{rule:?}: {segment:?}"
            );
            assert!(segment.step_hint.is_finite(), "{rule:?}: {segment:?}");
        }
    }

    #[test]
    fn integral_rule_factors() {
        // (err, accepted, ratio of the next step to this one): 0.9 err^(-1/5), in [1, 10]
        // after an accepted step and in [0.2, 0.9] after a rejected one.
        let cases = [
            (0.0, true, 10.0),
            (1e-9, true, 10.0),
            (0.5, true, 0.9 * 0.5f64.powf(-0.2)),
            (0.99, true, 1.0),
            (1.0, true, 1.0),
            (1.01, false, 0.9 * 1.01f64.powf(-0.2)),
            (2.0, false, 0.9 * 2f64.powf(-0.2)),
            (1e6, false, 0.2),
        ];
        for (err, expected_accept, ratio) in cases {
            let mut controls = Controls::new(1e-8, 1e-10, 0.5, 0.0, 100);
            controls.rule = StepRule::Integral;
            let mut controller = Controller {
                alpha: 0.2 - 0.75 * controls.beta,
                controls,
                fac_old: 1e-4,
                rejected_last: false,
                direction: 1.0,
            };
            let (h, mut h_new) = (0.25, 0.0);
            let accepted = controller.accept(err, h, &mut h_new);
            assert_eq!(accepted, expected_accept, "err {err}");
            // Not capped at h_max = 0.5: steps must not depend on how a run is split.
            assert!((h_new / h - ratio).abs() < 1e-14, "err {err}: {h_new}");
        }
    }

    #[test]
    fn split_calls_repeat_one_call() {
        // A run cut into calls at accepted steps, each starting from the step and memory
        // the last one ended with, repeats the steps of a single call exactly.
        for rule in [StepRule::Pi, StepRule::Integral] {
            let y0 = start(300);
            let mut controls = Controls::new(1e-9, 1e-11, 3.0, 0.0, 100_000);
            controls.rule = rule;
            controls.count_early_rejections = true;
            let mut whole = Plain {
                evaluations: 0,
                stop_after: None,
                accepted: 0,
            };
            let mut y_whole = y0.clone();
            let mut stepper = Dopri5::new(y0.len());
            let single = stepper.integrate(&mut whole, &controls, 0.0, 3.0, &mut y_whole);

            let mut y = y0.clone();
            let mut stepper = Dopri5::new(y0.len());
            let (mut t, mut calls, mut accepted, mut evaluations) = (0.0, 0, 0, 0);
            let mut rejected = 0;
            while t < 3.0 {
                let mut part = Plain {
                    evaluations: 0,
                    stop_after: Some(7),
                    accepted: 0,
                };
                let segment = stepper.integrate(&mut part, &controls, t, 3.0, &mut y);
                assert_eq!(segment.failure, None);
                accepted += segment.accepted;
                evaluations += part.evaluations;
                t = segment.t;
                controls.h_initial = segment.step_hint;
                controls.memory = segment.memory;
                controls.continues = true;
                calls += 1;
                rejected += segment.rejected;
            }
            let case = format!("{rule:?}");
            assert!(calls > 3, "{case}: {calls} calls");
            assert_eq!(accepted, single.accepted, "{case}");
            assert_eq!(rejected, single.rejected, "{case}");
            assert_eq!(t, single.t, "{case}");
            assert_eq!(y, y_whole, "{case}");
            // Each call after the first starts from stage 1 of the last one.
            assert_eq!(evaluations, whole.evaluations, "{case}");
        }
    }

    #[test]
    fn continued_call_reuses_stage_one() {
        let y0 = start(50);
        let mut controls = Controls::new(1e-8, 1e-10, 1.0, 0.01, 100_000);
        let mut stepper = Dopri5::new(y0.len());
        let part = || Plain {
            evaluations: 0,
            stop_after: Some(3),
            accepted: 0,
        };
        let mut y = y0.clone();
        let mut first_system = part();
        let first = stepper.integrate(&mut first_system, &controls, 0.0, 1.0, &mut y);
        assert_eq!(first_system.evaluations, 1 + 6 * first.accepted as usize);

        // A call that continues from where the last one ended reuses stage 1.
        controls.continues = true;
        let mut next = part();
        let second = stepper.integrate(&mut next, &controls, first.t, 1.0, &mut y);
        assert_eq!(next.evaluations, 6 * second.accepted as usize);

        // Another start time, or a call not marked as continuing, evaluates it again.
        let mut moved = part();
        let third = stepper.integrate(&mut moved, &controls, second.t + 0.1, 1.0, &mut y);
        assert_eq!(moved.evaluations, 1 + 6 * third.accepted as usize);
        controls.continues = false;
        let mut fresh = part();
        let fourth = stepper.integrate(&mut fresh, &controls, third.t, 1.0, &mut y);
        assert_eq!(fresh.evaluations, 1 + 6 * fourth.accepted as usize);
    }

    #[test]
    fn integral_rule_matches_pi_to_tolerance() {
        // Both rules solve the same problem: the end states agree within a few tolerance
        // units, though the steps differ.
        let y0 = start(300);
        let (rtol, atol) = (1e-9, 1e-11);
        let mut ends = Vec::new();
        for rule in [StepRule::Pi, StepRule::Integral] {
            let mut controls = Controls::new(rtol, atol, 3.0, 0.0, 100_000);
            controls.rule = rule;
            let mut system = Plain {
                evaluations: 0,
                stop_after: None,
                accepted: 0,
            };
            let mut y = y0.clone();
            let segment = Dopri5::new(y.len()).integrate(&mut system, &controls, 0.0, 3.0, &mut y);
            assert_eq!(segment.t, 3.0);
            ends.push(y);
        }
        let units = tolerance_units(&ends[1], &ends[0], rtol, atol);
        assert!(
            units < 10.0,
            "end states differ by {units:e} tolerance units"
        );
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
        let mut y: Vec<f64> = (1..=7).map(|i| i as f64).collect();
        let controls = Controls::new(1e-10, 1e-12, 2.0, 0.0, 10_000);
        let mut decay = Decay::PLAIN;
        let segment = Dopri5::new(7).integrate(&mut decay, &controls, 0.0, 2.0, &mut y);
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
        // meet both ends of it. The call ends at the first step accepted after t = 0.5.
        let mut decay = Decay {
            stop_after: 0.5,
            ..Decay::PLAIN
        };
        let mut y = vec![1.0];
        let controls = Controls::new(1e-9, 1e-12, 2.0, 0.0, 10_000);
        let mut stepper = Dopri5::new(1);
        let segment = stepper.integrate(&mut decay, &controls, 0.0, 2.0, &mut y);
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
