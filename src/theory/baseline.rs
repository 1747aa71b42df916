//! The frozen-attention baseline.
//!
//! Freeze the attention at p_{l,h} = 1/L (scores S = 0, so every key position receives
//! r_h = 1) and the value correlations at GV(0). The output becomes a linear function of
//! the token counts, F_i = sum_h gamma_{x_h}, and the readouts follow kernel gradient flow
//! of logistic regression on those counts:
//!
//! ```text
//! d gamma/dt = (beta I + m1 GV(0)) rho      (gamma: d, GV(0): d x d)
//! d beta/dt  = 2 m1 gamma . rho
//! ```
//!
//! with rho = sum_i c_i (token counts of sample i) and c_i = y_i g_i / n. Only attention
//! and GV are frozen: beta keeps its exact law, because in the full flow it grows with the
//! margins (beta^2 - m1 |gamma|^2 is nearly conserved while GV is small), and freezing it
//! would slow the baseline down by that factor late in training. The state is (gamma,
//! beta), of size d + 1, started from gamma(0), beta(0) of the run.

use ndarray::Array2;
use ode_solvers::{DVector, Dopri5, OutputType, System};
use std::cell::RefCell;

use super::RunRecord;
use crate::error::Error;
use crate::forward::{Evaluation, PairIndex, evaluate};
use crate::linalg::dot;
use crate::task::{COMMON, Dataset, TARGET_1, TARGET_2};

/// Tolerances of the baseline solve. The state has d + 1 entries, so tight tolerances
/// cost little, and they keep the baseline's own error far below the gaps it measures.
const RTOL: f64 = 1e-10;
const ATOL: f64 = 1e-12;

/// The baseline at one output time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselinePoint {
    pub t: f64,
    /// Mean training loss.
    pub loss: f64,
    /// gamma_1, gamma_2, gamma_3.
    pub gamma: [f64; 3],
    /// min_i y_i F_i.
    pub min_margin: f64,
    pub beta: f64,
}

/// Right-hand side of the baseline flow.
struct BaselineFlow<'a> {
    train: &'a Dataset,
    pairs: &'a PairIndex,
    /// m1 GV(0), d x d.
    value_kernel: &'a Array2<f64>,
    m1: f64,
    /// Scores of the frozen attention: all zero.
    scores: &'a [f64],
    evaluation: RefCell<Evaluation>,
}

impl BaselineFlow<'_> {
    /// Runs the forward pass at `gamma` and returns the evaluation.
    fn evaluate(&self, gamma: &[f64]) -> std::cell::Ref<'_, Evaluation> {
        {
            let mut evaluation = self.evaluation.borrow_mut();
            // The width only scales the zero scores, so any positive value gives p = 1/L.
            evaluate(
                self.train,
                self.pairs,
                gamma,
                self.scores,
                1.0,
                true,
                &mut evaluation,
            );
        }
        self.evaluation.borrow()
    }
}

impl System<f64, DVector<f64>> for BaselineFlow<'_> {
    fn system(&self, _t: f64, y: &DVector<f64>, dy: &mut DVector<f64>) {
        let d = y.len() - 1;
        let gamma = &y.as_slice()[..d];
        let beta = y[d];
        let evaluation = self.evaluate(gamma);
        let rho = &evaluation.rho;
        for k in 0..d {
            let row = self.value_kernel.row(k);
            let kernel_rho = dot(row.as_slice().expect("rows are contiguous"), rho);
            dy[k] = beta * rho[k] + kernel_rho;
        }
        dy[d] = 2.0 * self.m1 * dot(gamma, rho);
    }
}

/// The baseline flow and its starting state, as the run in `record` gives them.
struct BaselineProblem<'a> {
    train: &'a Dataset,
    pairs: PairIndex,
    value_kernel: Array2<f64>,
    m1: f64,
    scores: Vec<f64>,
    start: Vec<f64>,
}

impl<'a> BaselineProblem<'a> {
    fn new(record: &'a RunRecord) -> BaselineProblem<'a> {
        let train = &record.data.train;
        let pairs = PairIndex::new(train);
        let scores = vec![0.0; pairs.pairs.len()];
        let mut start: Vec<f64> = record.initial.gamma.to_vec();
        start.push(record.initial.beta);
        BaselineProblem {
            train,
            pairs,
            value_kernel: &record.initial.gv * record.m1(),
            m1: record.m1(),
            scores,
            start,
        }
    }

    fn flow(&self) -> BaselineFlow<'_> {
        BaselineFlow {
            train: self.train,
            pairs: &self.pairs,
            value_kernel: &self.value_kernel,
            m1: self.m1,
            scores: &self.scores,
            evaluation: RefCell::new(Evaluation::new(self.train, &self.pairs)),
        }
    }

    /// Advances the state `y` from `t0` to `t1` (returned unchanged when `t1 <= t0`).
    fn advance(&self, t0: f64, t1: f64, y: Vec<f64>) -> Result<Vec<f64>, Error> {
        if t1 <= t0 {
            return Ok(y);
        }
        advance(self.flow(), t0, t1, y)
    }
}

/// Integrates the baseline from t = 0 and returns it at each of `times` (increasing,
/// starting at 0 or later).
pub fn integrate(record: &RunRecord, times: &[f64]) -> Result<Vec<BaselinePoint>, Error> {
    let problem = BaselineProblem::new(record);
    let flow = problem.flow();
    let mut y = problem.start.clone();
    let mut t = 0.0;
    let mut points = Vec::with_capacity(times.len());
    for &target in times {
        if target > t {
            y = problem.advance(t, target, y)?;
            t = target;
        }
        points.push(point(&flow, t, &y));
    }
    Ok(points)
}

/// Advances the baseline state `y` from `t0` to `t1`.
fn advance(flow: BaselineFlow, t0: f64, t1: f64, y: Vec<f64>) -> Result<Vec<f64>, Error> {
    let mut solver = Dopri5::new(flow, t0, t1, t1 - t0, DVector::from_vec(y), RTOL, ATOL);
    solver.set_output(OutputType::Sparse);
    solver.integrate().map_err(|error| Error::Integration {
        time: t0,
        reason: format!("the frozen-attention baseline did not integrate: {error}"),
    })?;
    let last = solver
        .y_out()
        .last()
        .expect("an integration that succeeds stores its final state");
    Ok(last.as_slice().to_vec())
}

fn point(flow: &BaselineFlow, t: f64, y: &[f64]) -> BaselinePoint {
    let d = y.len() - 1;
    let evaluation = flow.evaluate(&y[..d]);
    let min_margin = evaluation.min_margin();
    BaselinePoint {
        t,
        loss: evaluation.loss(),
        gamma: [y[TARGET_1], y[TARGET_2], y[COMMON]],
        min_margin,
        beta: y[d],
    }
}

/// Relative width of the bracket at which [`first_all_correct`] stops bisecting, the same
/// as the event location of the run's T1.
const T1_RTOL: f64 = 1e-12;

/// Locates the first time at which the baseline classifies every training sample
/// correctly, or returns `None` when no point of `points` (the baseline at the output
/// times, from [`integrate`]) does.
///
/// The output times bracket the crossing: it lies after the last point with a
/// non-positive minimum margin (or after t = 0) and at or before the first point with a
/// positive one. Bisection on states re-integrated from the left end narrows the bracket
/// to [`T1_RTOL`] relative and returns its right end.
pub fn first_all_correct(
    record: &RunRecord,
    points: &[BaselinePoint],
) -> Result<Option<f64>, Error> {
    let Some(first) = points.iter().position(|point| point.min_margin > 0.0) else {
        return Ok(None);
    };
    let problem = BaselineProblem::new(record);
    let flow = problem.flow();
    let mut low = if first == 0 { 0.0 } else { points[first - 1].t };
    let mut high = points[first].t;
    if point(&flow, 0.0, &problem.start).min_margin > 0.0 {
        return Ok(Some(0.0));
    }

    let mut y_low = problem.advance(0.0, low, problem.start.clone())?;
    // The relative width starts at 1 or less and halves each time, so about 40 halvings
    // reach T1_RTOL; the cap only guards against a loop that rounding stalls.
    for _ in 0..200 {
        if high - low <= T1_RTOL * high {
            break;
        }
        let mid = 0.5 * (low + high);
        let y_mid = problem.advance(low, mid, y_low.clone())?;
        if point(&flow, mid, &y_mid).min_margin > 0.0 {
            high = mid;
        } else {
            low = mid;
            y_low = y_mid;
        }
    }
    Ok(Some(high))
}
