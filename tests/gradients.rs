//! Analytic gradients against central finite differences of the training loss.

mod common;

use attnflow::dynamics::Dynamics;
use attnflow::engine::{ReducedEngine, ReducedState};
use common::{DISTINCT, NARROW, SAMPLED, Sizes};
use ndarray::{Array1, Array2};

/// Central-difference derivative of the training loss along coordinate `i` of `y`.
fn loss_derivative(dynamics: &mut Dynamics, y: &[f64], i: usize, h: f64) -> f64 {
    let mut shifted = y.to_vec();
    shifted[i] = y[i] + h;
    dynamics.evaluate_train_forward(&shifted);
    let up = dynamics.train_eval.loss();
    shifted[i] = y[i] - h;
    dynamics.evaluate_train_forward(&shifted);
    let down = dynamics.train_eval.loss();
    (up - down) / (2.0 * h)
}

/// The parameter engine's flow is -grad L: compare with finite differences on every
/// seventh coordinate, which visits all four blocks of the state.
///
/// The first m coordinates are z, with W = W(0) + a z^T. The flow of W moves z at
/// dz/dt = W_V rho, which is -dL/dz divided by a . a = m1, because dL/dz = (a . a) dL/du.
fn check_parameter_gradient(sizes: Sizes, seed: u64) {
    let data = common::data(sizes, seed);
    let params = common::params(&data, sizes, 0.6, 0.4, seed);
    let (mut dynamics, y) = common::parameter_dynamics(&data, &params);
    let mut flow = vec![0.0; y.len()];
    dynamics.flow(&y, &mut flow);
    let scale = flow.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    assert!(scale > 1e-3, "gradient too small to test: {scale}");

    // With h = 1e-5 the truncation error is O(h^2 L''') ~ 1e-10 and rounding ~ 1e-16 / h.
    for i in (0..y.len()).step_by(7) {
        let metric = if i < sizes.m { sizes.m1 as f64 } else { 1.0 };
        let numeric = -loss_derivative(&mut dynamics, &y, i, 1e-5) / metric;
        assert!(
            (numeric - flow[i]).abs() <= 1e-7 * scale,
            "{sizes:?} coordinate {i}: finite difference {numeric} vs analytic {}",
            flow[i]
        );
    }
}

#[test]
fn parameter_gradient_sampled_fillers() {
    check_parameter_gradient(SAMPLED, 1);
}

#[test]
fn parameter_gradient_narrow_width() {
    check_parameter_gradient(NARROW, 2);
}

#[test]
fn parameter_gradient_distinct_fillers() {
    check_parameter_gradient(DISTINCT, 3);
}

/// With beta = 1, GV = 0, GK = I and GQ = 0 the reduced flow reads d gamma/dt = rho and
/// dS/dt = Delta, so it exposes -dL/dgamma and -dL/dS directly for any gamma and S.
#[test]
fn reduced_sensitivities_match_finite_differences() {
    let sizes = SAMPLED;
    let data = common::data(sizes, 4);
    let params = common::params(&data, sizes, 0.8, 0.5, 4);
    let d = data.train.vocab_size;
    let real = ReducedState::from_params(&params);
    let probe = ReducedState {
        gamma: real.gamma.clone(),
        beta: 1.0,
        gv: Array2::zeros((d, d)),
        s: real.s.clone(),
        gk: Array2::eye(d),
        gq: Array2::zeros((d, d)),
    };
    let y = probe.to_flat();
    let engine = ReducedEngine::new(d, sizes.m as f64, sizes.m1 as f64);
    let mut dynamics = Dynamics::new(data, Box::new(engine));
    let mut flow = vec![0.0; y.len()];
    dynamics.flow(&y, &mut flow);
    let field = ReducedState::from_flat(&flow, d);
    let rho: Array1<f64> = field.gamma.clone();
    let delta = field.s.clone();

    let scale = rho
        .iter()
        .chain(delta.iter())
        .fold(0.0f64, |s, v| s.max(v.abs()));
    for k in 0..d {
        let numeric = -loss_derivative(&mut dynamics, &y, k, 1e-5);
        assert!(
            (numeric - rho[k]).abs() <= 1e-7 * scale,
            "rho[{k}]: {numeric} vs {}",
            rho[k]
        );
    }
    // Each attention row sums to one, so sum_h p_{l,h} (G_h - gbar_l) = 0 and every column
    // of Delta (fixed query token) sums to zero.
    for query in 0..d {
        let column: f64 = delta.column(query).sum();
        assert!(
            column.abs() <= 1e-14,
            "column {query} of Delta sums to {column}"
        );
    }
    let s_offset = d + 1 + d * d;
    for key in 0..d {
        for query in 0..d {
            let numeric = -loss_derivative(&mut dynamics, &y, s_offset + key * d + query, 1e-5);
            let analytic = delta[[key, query]];
            assert!(
                (numeric - analytic).abs() <= 1e-7 * scale,
                "Delta[{key}, {query}]: {numeric} vs {analytic}"
            );
        }
    }
}

/// The reduced flow is the time derivative of the Gram state along the parameter flow:
/// compare it with a central difference of the Gram state along the parameter field.
fn check_reduced_flow(sizes: Sizes, seed: u64) {
    let data = common::data(sizes, seed);
    let params = common::params(&data, sizes, 0.5, 0.4, seed);
    let (mut parameter, y) = common::parameter_dynamics(&data, &params);
    let (mut reduced, z) = common::reduced_dynamics(&data, &params);

    let mut field = vec![0.0; y.len()];
    parameter.flow(&y, &mut field);
    let h = 1e-5;
    let shifted = |sign: f64| -> Vec<f64> {
        let moved: Vec<f64> = y
            .iter()
            .zip(&field)
            .map(|(a, b)| a + sign * h * b)
            .collect();
        parameter.engine().reduced_state(&moved).to_flat()
    };
    let (up, down) = (shifted(1.0), shifted(-1.0));
    let numeric: Vec<f64> = up
        .iter()
        .zip(&down)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();

    let mut analytic = vec![0.0; z.len()];
    reduced.flow(&z, &mut analytic);
    let error = common::relative_difference(&numeric, &analytic);
    assert!(
        error < 1e-7,
        "{sizes:?}: reduced flow differs from the Gram derivative by {error}"
    );
}

#[test]
fn reduced_flow_is_gram_derivative_sampled() {
    check_reduced_flow(SAMPLED, 5);
}

#[test]
fn reduced_flow_is_gram_derivative_narrow() {
    check_reduced_flow(NARROW, 6);
}

#[test]
fn reduced_flow_is_gram_derivative_distinct() {
    check_reduced_flow(DISTINCT, 7);
}
