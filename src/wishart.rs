//! Sampling the initial Gram state straight from its law, without m-dimensional vectors.
//!
//! If X is an m x p matrix whose rows are independent N(0, Sigma), then X^T X follows the
//! Wishart law W_p(m, Sigma), with mean m Sigma and Var[(X^T X)_ij] = m (Sigma_ij^2 +
//! Sigma_ii Sigma_jj). For m >= p the Bartlett decomposition gives a draw as
//! `L A A^T L^T`, where `Sigma = L L^T` and A is lower triangular with
//! `A_ii^2 ~ chi^2(m - i)` (i = 0..p-1) and standard normal entries below the diagonal. This
//! costs O(p^3) whatever m is. For m < p the Gram matrix is singular of rank m and the
//! cheapest exact draw is X itself, at O(m p^2) <= O(p^3).

use ndarray::{Array1, Array2};
use rand::Rng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};

use crate::engine::ReducedState;
use crate::error::Error;

/// Draws one Wishart matrix W_p(m, diag(variances)).
pub fn sample_wishart_diagonal(m: u64, variances: &[f64], rng: &mut impl Rng) -> Array2<f64> {
    let p = variances.len();
    let scales: Vec<f64> = variances.iter().map(|v| v.sqrt()).collect();
    let mut gram = if m >= p as u64 {
        bartlett_standard(m, p, rng)
    } else {
        let x = Array2::from_shape_simple_fn((m as usize, p), || StandardNormal.sample(rng));
        x.t().dot(&x)
    };
    for i in 0..p {
        for j in 0..p {
            gram[[i, j]] *= scales[i] * scales[j];
        }
    }
    gram
}

/// Draws A A^T for the Bartlett factor A of W_p(m, I), which needs m >= p.
fn bartlett_standard(m: u64, p: usize, rng: &mut impl Rng) -> Array2<f64> {
    let mut factor = Array2::<f64>::zeros((p, p));
    for i in 0..p {
        let dof = (m - i as u64) as f64;
        let chi2 = ChiSquared::new(dof).expect("degrees of freedom are positive");
        factor[[i, i]] = chi2.sample(rng).sqrt();
        for j in 0..i {
            factor[[i, j]] = StandardNormal.sample(rng);
        }
    }
    factor.dot(&factor.t())
}

/// Draws the reduced initial state for Gaussian weights: entries of W_V, W_K, W_Q are
/// N(0, sigma0^2) and entries of W are N(0, sigma1^2), with m the attention width and m1 the
/// number of neurons.
///
/// `[W_V, u]` (u = W^T a has N(0, m1 sigma1^2) entries) has a Gram matrix
/// W_{d+1}(m, diag(sigma0^2, ..., sigma0^2, m1 sigma1^2)), which gives GV, gamma and beta;
/// `[W_K, W_Q]` has a Gram matrix W_{2d}(m, sigma0^2 I), which gives GK, S and GQ.
pub fn sample_reduced_state(
    d: usize,
    m: u64,
    m1: u64,
    sigma0: f64,
    sigma1: f64,
    rng: &mut impl Rng,
) -> Result<ReducedState, Error> {
    if m == 0 || m1 == 0 {
        return Err(Error::config(format!(
            "widths must be >= 1, got m = {m}, m1 = {m1}"
        )));
    }
    let mut value_variances = vec![sigma0 * sigma0; d + 1];
    value_variances[d] = m1 as f64 * sigma1 * sigma1;
    let value_gram = sample_wishart_diagonal(m, &value_variances, rng);
    let attention_gram = sample_wishart_diagonal(m, &vec![sigma0 * sigma0; 2 * d], rng);

    let block = |gram: &Array2<f64>, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        gram.slice(ndarray::s![rows, cols]).to_owned()
    };
    Ok(ReducedState {
        gamma: Array1::from_iter((0..d).map(|k| value_gram[[k, d]])),
        beta: value_gram[[d, d]],
        gv: block(&value_gram, 0..d, 0..d),
        gk: block(&attention_gram, 0..d, 0..d),
        s: block(&attention_gram, 0..d, d..2 * d),
        gq: block(&attention_gram, d..2 * d, d..2 * d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Checks the entrywise mean and variance of `draws` Wishart samples against m Sigma and
    /// m (Sigma_ij^2 + Sigma_ii Sigma_jj), allowing 5 standard errors.
    fn check_moments(m: u64, variances: &[f64], draws: usize, seed: u64) {
        let p = variances.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sum = Array2::<f64>::zeros((p, p));
        let mut sum_sq = Array2::<f64>::zeros((p, p));
        for _ in 0..draws {
            let w = sample_wishart_diagonal(m, variances, &mut rng);
            sum += &w;
            sum_sq += &(&w * &w);
        }
        let count = draws as f64;
        for i in 0..p {
            for j in 0..p {
                let sigma_ij = if i == j { variances[i] } else { 0.0 };
                let mean = m as f64 * sigma_ij;
                let variance = m as f64 * (sigma_ij * sigma_ij + variances[i] * variances[j]);
                let sample_mean = sum[[i, j]] / count;
                let sample_var = sum_sq[[i, j]] / count - sample_mean * sample_mean;
                let standard_error = (variance / count).sqrt();
                assert!(
                    (sample_mean - mean).abs() < 5.0 * standard_error,
                    "m = {m}, entry ({i},{j}): mean {sample_mean} vs {mean}"
                );
                // The variance estimate has relative standard error about sqrt(2/draws) for
                // near-Gaussian entries; diagonal chi-square entries are skewed, so allow 15%.
                assert!(
                    (sample_var / variance - 1.0).abs() < 0.15,
                    "m = {m}, entry ({i},{j}): variance {sample_var} vs {variance}"
                );
            }
        }
    }

    #[test]
    fn bartlett_moments_match() {
        check_moments(20, &[1.0, 0.5, 2.0, 0.25], 4000, 11);
    }

    #[test]
    fn singular_case_moments_match() {
        check_moments(2, &[1.0, 0.5, 2.0, 0.25], 4000, 12);
    }

    #[test]
    fn singular_case_has_rank_m() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let w = sample_wishart_diagonal(1, &[1.0, 2.0, 3.0], &mut rng);
        // A rank-one Gram matrix has every 2 x 2 minor zero.
        let minor = w[[0, 0]] * w[[1, 1]] - w[[0, 1]] * w[[1, 0]];
        assert!(minor.abs() < 1e-12 * w[[0, 0]] * w[[1, 1]]);
    }

    #[test]
    fn huge_width_is_cheap_and_scaled() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let m = 1u64 << 40;
        let state = sample_reduced_state(5, m, 64, 1e-3, 0.1, &mut rng).unwrap();
        // GV diagonal / m concentrates at sigma0^2 with relative spread sqrt(2/m).
        let ratio = state.gv[[0, 0]] / (m as f64 * 1e-6);
        assert!((ratio - 1.0).abs() < 1e-4, "{ratio}");
        let beta_ratio = state.beta / (m as f64 * 64.0 * 0.01);
        assert!((beta_ratio - 1.0).abs() < 1e-4, "{beta_ratio}");
    }
}
