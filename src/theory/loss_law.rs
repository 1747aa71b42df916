//! The loss law of Phase 2: 1/Lhat(t) grows linearly, Lhat(t) = 1 / (c (t - T1) + 1/Lhat(T1)).
//!
//! Late in training every g_i is close to its own loss term, so Lhat ~ (1/n) sum_i g_i and
//! d Lhat/dt = -(gradient norm)^2 ~ -beta |rho|^2 with |rho| proportional to Lhat once the
//! group ratios settle (claims 8 and 9). Hence d(1/Lhat)/dt ~ beta |rho|^2 / Lhat^2, which
//! is constant while beta is, with c / beta of order one.
//!
//! The group sums give that constant to leading order. With g(I) = sum_{i in I} g_i,
//! rho_1 = (g(I1) - g(I2)) / n, rho_2 = (g(I1) - g(I3)) / n,
//! rho_3 = (g(I1) - g(I2 u I3 u I4)) / n, and each distinct filler of a sample i in group I
//! carries rho = -g_i / n ~ -g(I) / (|I| n). With Lhat ~ (1/n) sum_I g(I):
//!
//! ```text
//! c / beta ~ [ (g1 - g2)^2 + (g1 - g3)^2 + (g1 - g2 - g3 - g4)^2
//!              + sum_I f_I g(I)^2 / |I| ] / (g1 + g2 + g3 + g4)^2
//! ```
//!
//! where f_I is the number of fillers in a sample of group I (L - 3, L - 2, L - 2, L - 1).

use super::{LossLawFit, RunRecord};
use crate::observables::Observation;
use crate::task::Group;

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
    let last = rows.last().expect("at least three rows");
    let train = &record.data.train;
    Some(LossLawFit {
        slope_c,
        intercept,
        r_squared,
        c_over_beta: slope_c / mean_beta,
        c_over_beta_predicted: leading_order_c_over_beta(last, train.group_sizes(), train.seq_len),
        t_from: t[0],
        points: rows.len(),
    })
}

/// Estimates c / beta from the group sums of one row by the formula in the module docs.
///
/// NOTE: the filler term treats every filler occurrence as its own token, which is exact
/// for distinct fillers only; with sampled fillers a token shared by several samples
/// sums their contributions, so the estimate is then rougher.
pub fn leading_order_c_over_beta(row: &Observation, sizes: [usize; 4], seq_len: usize) -> f64 {
    let g = [row.gsum_i1, row.gsum_i2, row.gsum_i3, row.gsum_i4];
    let total: f64 = g.iter().sum();
    let targets =
        (g[0] - g[1]).powi(2) + (g[0] - g[2]).powi(2) + (g[0] - g[1] - g[2] - g[3]).powi(2);

    let fillers: f64 = Group::ALL
        .iter()
        .map(|&group| {
            let k = group.index();
            let count = group.filler_count(seq_len) as f64;
            count * g[k] * g[k] / (sizes[k].max(1) as f64)
        })
        .sum();
    (targets + fillers) / (total * total)
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
    /// Evaluates the fitted 1/loss at time t, or NaN before the fitted range.
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
    use super::{leading_order_c_over_beta, least_squares};
    use crate::observables::Observation;

    #[test]
    fn c_over_beta_estimate_by_hand() {
        // Targets: 2^2 + 2^2 + 0^2 = 8. Fillers (L = 5): 2 * 9/6 + 3 * 1/2 + 3 * 1/2 + 4 * 1/2
        // = 8. Total g = 6, so the estimate is 16 / 36.
        let row = Observation {
            gsum_i1: 3.0,
            gsum_i2: 1.0,
            gsum_i3: 1.0,
            gsum_i4: 1.0,
            ..Observation::default()
        };
        let estimate = leading_order_c_over_beta(&row, [6, 2, 2, 2], 5);
        assert!((estimate - 16.0 / 36.0).abs() < 1e-15);
    }

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
