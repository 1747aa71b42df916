//! The loss law of Phase 2: 1/Lhat(t) grows linearly, Lhat(t) = 1 / (c (t - T1) + 1/Lhat(T1)).
//!
//! Late in training every g_i is close to its own loss term, so Lhat ~ (1/n) sum_i g_i and
//! d Lhat/dt = -(gradient norm)^2 ~ -beta |rho|^2 with |rho| proportional to Lhat once the
//! group ratios settle (claims 8 and 9). Hence d(1/Lhat)/dt ~ beta |rho|^2 / Lhat^2, which
//! is constant while beta is, with c / beta of order one.

use super::{LossLawFit, RunRecord};

/// Least-squares line through (t, 1/loss) over T1 and the recorded times after it.
///
/// Returns `None` when T1 was not reached or fewer than three points are available.
pub fn fit(record: &RunRecord) -> Option<LossLawFit> {
    let rows = record.phase_two_rows();
    if rows.len() < 3 {
        return None;
    }
    let t: Vec<f64> = rows.iter().map(|row| row.t).collect();
    let inverse: Vec<f64> = rows.iter().map(|row| 1.0 / row.loss).collect();
    let (slope_c, intercept, r_squared) = least_squares(&t, &inverse);
    let mean_beta = rows.iter().map(|row| row.beta).sum::<f64>() / rows.len() as f64;
    Some(LossLawFit {
        slope_c,
        intercept,
        r_squared,
        c_over_beta: slope_c / mean_beta,
        t_from: t[0],
        points: rows.len(),
    })
}

/// Returns slope, intercept and coefficient of determination of the least-squares line
/// y = slope x + intercept.
pub fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let count = x.len() as f64;
    let mean_x = x.iter().sum::<f64>() / count;
    let mean_y = y.iter().sum::<f64>() / count;
    let sxx: f64 = x.iter().map(|xi| (xi - mean_x).powi(2)).sum();
    let sxy: f64 = x
        .iter()
        .zip(y)
        .map(|(xi, yi)| (xi - mean_x) * (yi - mean_y))
        .sum();
    let syy: f64 = y.iter().map(|yi| (yi - mean_y).powi(2)).sum();

    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let residual: f64 = x
        .iter()
        .zip(y)
        .map(|(xi, yi)| (yi - slope * xi - intercept).powi(2))
        .sum();
    let r_squared = if syy > 0.0 { 1.0 - residual / syy } else { 1.0 };
    (slope, intercept, r_squared)
}

impl LossLawFit {
    /// The fitted 1/loss at time t, NaN before the fitted range.
    pub fn inverse_loss_at(&self, t: f64) -> f64 {
        if t < self.t_from {
            f64::NAN
        } else {
            self.slope_c * t + self.intercept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::least_squares;

    #[test]
    fn least_squares_recovers_exact_line() {
        let x = [0.5, 1.0, 2.5, 7.0];
        let y: Vec<f64> = x.iter().map(|xi| 3.0 * xi - 1.25).collect();
        let (slope, intercept, r_squared) = least_squares(&x, &y);
        assert!((slope - 3.0).abs() < 1e-12);
        assert!((intercept + 1.25).abs() < 1e-12);
        assert!((r_squared - 1.0).abs() < 1e-12);
    }

    #[test]
    fn least_squares_scores_scatter_below_one() {
        let x = [0.0, 1.0, 2.0, 3.0];
        let y = [0.0, 2.0, 1.0, 3.0];
        let (slope, _, r_squared) = least_squares(&x, &y);
        assert!((slope - 0.8).abs() < 1e-12);
        assert!(r_squared < 0.7);
    }
}
