//! Per-run scaling quantities of the theory: the readout speed kappa and the loss-law slope.
//!
//! - kappa = beta(0) + m1 sigma0^2 m, the speed of the target readouts at t = 0. Phase 1
//!   should end at T1 ~ 1/kappa, so T1 x kappa should tend to a constant as m grows.
//! - In Phase 2 the loss should follow Lhat(t) = 1 / (c (t - T1) + 1 / Lhat(T1)) with
//!   c = Theta(beta), so 1/Lhat is a line in t and c / beta(0) should tend to a constant.

use crate::experiment::Summary;
use crate::observables::Observation;

/// Least-squares line y = slope x + intercept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineFit {
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination, 1 - SS_res / SS_tot (1 for a perfect line).
    pub r2: f64,
    /// Number of points fitted.
    pub points: usize,
}

/// The scaling quantities of one finished run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunMeasures {
    /// beta at t = 0 (first trajectory row).
    pub beta0: f64,
    /// beta(0) + m1 sigma0^2 m.
    pub kappa: f64,
    /// T1 x kappa; None when Phase 1 did not end.
    pub t1_kappa: Option<f64>,
    /// Fit of 1/loss against t over the rows after T1; None with fewer than 3 such rows.
    pub loss_law: Option<LineFit>,
}

impl RunMeasures {
    /// Slope c of the loss law divided by beta(0).
    pub fn c_over_beta(&self) -> Option<f64> {
        self.loss_law.map(|fit| fit.slope / self.beta0)
    }
}

/// Computes kappa, T1 x kappa and the loss-law fit from a run's summary and trajectory.
///
/// sigma0 is the recorded standard deviation of the W_V, W_K, W_Q entries. The fit uses
/// the trajectory rows with t > T1, so it needs the run to have reached T1.
// NOTE: the theory module's `check` command fits the same loss law. Once both exist,
// runs.csv should take kappa and c from there so that the two never disagree.
pub fn measure_run(summary: &Summary, trajectory: &[Observation]) -> RunMeasures {
    let beta0 = trajectory.first().map_or(f64::NAN, |row| row.beta);
    let sigma0 = summary.init.sigma0;
    let kappa = beta0 + summary.m1 as f64 * sigma0 * sigma0 * summary.m as f64;

    let loss_law = summary.t1.and_then(|t1| {
        let after: Vec<(f64, f64)> = trajectory
            .iter()
            .filter(|row| row.t > t1)
            .map(|row| (row.t, 1.0 / row.loss))
            .collect();
        fit_line(&after)
    });

    RunMeasures {
        beta0,
        kappa,
        t1_kappa: summary.t1.map(|t1| t1 * kappa),
        loss_law,
    }
}

/// Ordinary least squares through (x, y) points, centered for accuracy; None with fewer
/// than 3 points or when every x is equal.
pub fn fit_line(points: &[(f64, f64)]) -> Option<LineFit> {
    if points.len() < 3 {
        return None;
    }
    let count = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;

    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in points {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 {
        return None;
    }

    let slope = sxy / sxx;
    let residual = points
        .iter()
        .map(|&(x, y)| {
            let r = y - mean_y - slope * (x - mean_x);
            r * r
        })
        .sum::<f64>();
    let r2 = if syy > 0.0 { 1.0 - residual / syy } else { 1.0 };
    Some(LineFit {
        slope,
        intercept: mean_y - slope * mean_x,
        r2,
        points: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::InitInfo;
    use crate::run::StopReason;

    fn summary(t1: Option<f64>, m: u64, m1: u64, sigma0: f64) -> Summary {
        Summary {
            attnflow_version: String::new(),
            config_hash: String::new(),
            seed: 0,
            engine: "reduced".into(),
            integrator: "dopri5".into(),
            stop_reason: StopReason::TargetLoss,
            t1,
            at_t1: None,
            final_t: 0.0,
            final_loss: 0.0,
            final_test_loss: 0.0,
            steps: 0,
            accepted_steps: 0,
            rejected_steps: 0,
            gradient_evaluations: 0,
            wall_seconds: 0.0,
            n: 6,
            seq_len: 3,
            d: 10,
            m,
            m1,
            init: InitInfo {
                scheme: "theory".into(),
                sigma0,
                sigma1: 0.0,
                drawn_as: "wishart".into(),
            },
            invariant_value_drift: 0.0,
            invariant_key_query_drift: 0.0,
        }
    }

    fn row(t: f64, loss: f64, beta: f64) -> Observation {
        Observation {
            t,
            loss,
            beta,
            ..Observation::default()
        }
    }

    #[test]
    fn loss_law_recovers_closed_form() {
        let (c, t1, loss_t1) = (2.5, 0.7, 0.6);
        let mut rows = vec![row(0.0, 0.69, 3.0), row(0.3, 5.0, 3.1), row(0.7, 9.0, 3.2)];
        for k in 1..40 {
            let t = t1 * 1.3f64.powi(k);
            rows.push(row(t, 1.0 / (c * (t - t1) + 1.0 / loss_t1), 3.3));
        }
        let measures = measure_run(&summary(Some(t1), 64, 8, 0.05), &rows);
        let fit = measures.loss_law.unwrap();
        assert!((fit.slope - c).abs() < 1e-9 * c, "{fit:?}");
        assert!(
            (fit.intercept - (1.0 / loss_t1 - c * t1)).abs() < 1e-6,
            "{fit:?}"
        );
        assert!((fit.r2 - 1.0).abs() < 1e-12, "{fit:?}");
        assert_eq!(fit.points, 39);
        assert!((measures.c_over_beta().unwrap() - c / 3.0).abs() < 1e-9);
    }

    #[test]
    fn kappa_matches_definition() {
        let (m, m1, sigma0, beta0, t1) = (64u64, 8u64, 0.05, 3.0, 0.2);
        let rows = vec![row(0.0, 0.69, beta0), row(1.0, 0.5, 4.0)];
        let measures = measure_run(&summary(Some(t1), m, m1, sigma0), &rows);
        let kappa = beta0 + 8.0 * 0.05 * 0.05 * 64.0;
        assert!((measures.kappa - kappa).abs() < 1e-12);
        assert!((measures.t1_kappa.unwrap() - t1 * kappa).abs() < 1e-12);
        assert_eq!(measures.loss_law, None);
    }

    #[test]
    fn no_t1_gives_no_fit() {
        let rows: Vec<Observation> = (0..10).map(|k| row(k as f64, 0.6, 1.0)).collect();
        let measures = measure_run(&summary(None, 16, 4, 0.1), &rows);
        assert_eq!(measures.t1_kappa, None);
        assert_eq!(measures.loss_law, None);
    }

    #[test]
    fn noisy_line_has_r2_below_one() {
        let points: Vec<(f64, f64)> = (0..20)
            .map(|k| {
                (
                    k as f64,
                    2.0 * k as f64 + if k % 2 == 0 { 1.0 } else { -1.0 },
                )
            })
            .collect();
        let fit = fit_line(&points).unwrap();
        assert!(fit.r2 < 1.0, "{fit:?}");
        assert!(fit.r2 > 0.95, "{fit:?}");
        assert!((fit.slope - 2.0).abs() < 0.05, "{fit:?}");
    }
}
