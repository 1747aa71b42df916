//! Theory side of a run: what the convergence analysis of this model predicts, measured on
//! a finished run folder.
//!
//! Phase 1 ends at T1, the first time every training sample has a positive margin y_i F_i.
//! The analysis makes twelve claims about the two phases. They cover the initial readout
//! speeds, the rise and fall of the one-target losses, the state at T1 and the slow
//! attention side in Phase 1. In Phase 2 they cover the signs of the changes of S and GV,
//! growing token margins, automatic balancing of the group gradient weights and the fixed
//! point R* of the ratio R. The last three are the loss law, the final attention pattern
//! and the test loss. [`check_run`] measures each one on a run
//! folder and returns a [`CheckReport`] with one [`ClaimResult`] per claim.
//!
//! Predictions that need no claim verdict also go to `predictions.csv`:
//! - the frozen-attention baseline ([`baseline`]): gradient flow of the readouts with the
//!   attention held uniform and GV held at GV(0);
//! - R*(t), the positive root of the leading-order balance equation ([`balance`]);
//! - the straight line fitted to 1/loss after T1 ([`loss_law`]).
//!
//! Tolerances are constants in [`claims`], each with the reason for its value. Claims whose
//! constants the analysis only gives up to order-one factors ("Theta(1)") are checked
//! within [`claims::ORDER_FACTOR`] either way.

pub mod balance;
pub mod baseline;
pub mod claims;
pub mod loss_law;
pub mod predictions;
mod record;
mod report;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use record::RunRecord;
pub use report::{CHECK, PREDICTIONS, format_table};

/// Outcome of one claim on one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Holds,
    Fails,
    /// The run never reached the phase the claim is about (for example T1 was not
    /// reached), or the training set lacks a sample group the claim is about, so the claim
    /// does not apply.
    NotApplicable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::NotApplicable => "not applicable",
        }
    }

    fn from_bool(holds: bool) -> Verdict {
        if holds {
            Verdict::Holds
        } else {
            Verdict::Fails
        }
    }
}

/// One claim measured on one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    /// Claim number, 1 to 12.
    pub id: u8,
    /// The claim in a few words.
    pub statement: String,
    /// The headline number of the measurement (NaN when not applicable).
    pub measured: f64,
    /// The measurement as text, with the other numbers that enter the verdict.
    pub measured_text: String,
    /// The prediction or bound it is compared with.
    pub predicted: String,
    pub verdict: Verdict,
}

/// Fit of 1/loss = slope_c t + intercept over the recorded times t >= t_from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossLawFit {
    pub slope_c: f64,
    pub intercept: f64,
    /// Coefficient of determination of the fit.
    pub r_squared: f64,
    /// slope_c divided by the mean of beta over the fitted times.
    pub c_over_beta: f64,
    /// Leading-order estimate of c / beta from the group sums at the last fitted time
    /// (see [`loss_law::leading_order_c_over_beta`]).
    pub c_over_beta_predicted: f64,
    /// First fitted time, which is T1.
    pub t_from: f64,
    /// Number of recorded times in the fit.
    pub points: usize,
}

/// Readout directions (gamma_2 / gamma_1, gamma_3 / gamma_1) at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadoutDirection {
    pub run: [f64; 2],
    pub baseline: [f64; 2],
}

/// Everything `attnflow check` measures on a run folder; written as `check.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// kappa = beta(0) + m1 trace(GV(0)) / d, the initial speed scale of the readouts.
    pub kappa: f64,
    /// Exact d gamma_k/dt at t = 0 for the two targets and the common token.
    pub initial_speed: [f64; 3],
    /// End of Phase 1 of the run, if reached.
    pub t1: Option<f64>,
    /// End of Phase 1 of the frozen-attention baseline, located by bisection to 1e-12
    /// relative, if reached by the last output time.
    pub baseline_t1: Option<f64>,
    /// Direction of the readouts at the last recorded time, as (gamma_2, gamma_3) / gamma_1,
    /// for the run and for the baseline. With fillers ignored, the max-margin direction of
    /// the count regression is 1 : 1 : -1.5; distinct fillers shift it, and the baseline
    /// approaches its own max-margin direction only logarithmically in t.
    pub final_direction: ReadoutDirection,
    /// Fit of the loss law, when the run has at least three recorded times after T1.
    pub loss_law: Option<LossLawFit>,
    pub claims: Vec<ClaimResult>,
}

impl CheckReport {
    /// Result of claim `id`, if present.
    pub fn claim(&self, id: u8) -> Option<&ClaimResult> {
        self.claims.iter().find(|claim| claim.id == id)
    }
}

/// Measures every claim on the finished run in `dir` and writes `check.json` and
/// `predictions.csv` there.
///
/// ```no_run
/// use attnflow::theory::{Verdict, check_run};
///
/// let report = check_run(std::path::Path::new("runs/theory"))?;
/// for claim in &report.claims {
///     if claim.verdict == Verdict::Fails {
///         println!("claim {}: {}", claim.id, claim.measured_text);
///     }
/// }
/// # Ok::<(), attnflow::Error>(())
/// ```
///
/// `dir` must contain `config.toml`, `trajectory.csv`, `summary.json` and
/// `checkpoint.json` as `attnflow run` writes them. The initial state is rebuilt from the
/// config, which draws it deterministically from its seed.
pub fn check_run(dir: &Path) -> Result<CheckReport, Error> {
    let record = RunRecord::load(dir)?;
    let (report, rows) = evaluate(&record)?;
    report::write_check(dir, &report)?;
    report::write_predictions(dir, &rows)?;
    Ok(report)
}

fn final_direction(record: &RunRecord, baseline: &[baseline::BaselinePoint]) -> ReadoutDirection {
    let last = &record.rows[record.rows.len() - 1];
    let gamma = baseline.last().map_or([f64::NAN; 3], |point| point.gamma);
    ReadoutDirection {
        run: [last.gamma_2 / last.gamma_1, last.gamma_3 / last.gamma_1],
        baseline: [gamma[1] / gamma[0], gamma[2] / gamma[0]],
    }
}

/// Measures every claim on a loaded run, returning the report and the rows of
/// `predictions.csv`.
pub fn evaluate(record: &RunRecord) -> Result<(CheckReport, Vec<report::PredictionRow>), Error> {
    let times: Vec<f64> = record.rows.iter().map(|row| row.t).collect();
    let baseline = baseline::integrate(record, &times)?;
    let baseline_t1 = baseline::first_all_correct(record, &baseline)?;
    let loss_law = loss_law::fit(record);
    let context = claims::Context {
        record,
        baseline: &baseline,
        baseline_t1,
        loss_law: loss_law.as_ref(),
    };
    let report = CheckReport {
        kappa: predictions::kappa(record),
        initial_speed: predictions::initial_speed(record),
        t1: record.t1(),
        baseline_t1,
        final_direction: final_direction(record, &baseline),
        loss_law,
        claims: claims::evaluate_all(&context),
    };
    let rows = report::prediction_rows(record, &baseline, loss_law.as_ref());
    Ok((report, rows))
}
