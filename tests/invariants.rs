//! Exact invariants of gradient flow and their O(eta^2) drift under gradient descent.

mod common;

use attnflow::dopri5::StepRule;
use attnflow::dynamics::Dynamics;
use attnflow::engine::ParameterEngine;
use attnflow::integrator::Tolerances;
use common::{NARROW, SAMPLED, Sizes};
use ndarray::Array2;

/// W^T W - W_V W_V^T and W_K W_K^T - W_Q W_Q^T, both m x m.
fn matrix_invariants(engine: &ParameterEngine, y: &[f64]) -> (Array2<f64>, Array2<f64>) {
    let p = engine.params(y);
    let value = p.w.t().dot(&p.w) - p.w_v.dot(&p.w_v.t());
    let key_query = p.w_k.dot(&p.w_k.t()) - p.w_q.dot(&p.w_q.t());
    (value, key_query)
}

/// Integrates to `t_end`, checking after each solver call that the loss did not increase.
fn integrate_monotone(dynamics: &mut Dynamics, y: &mut Vec<f64>, t_end: f64) {
    let tolerances = Tolerances {
        rtol: 1e-10,
        atol: 1e-12,
        rule: StepRule::Pi,
    };
    dynamics.evaluate_train_forward(y);
    let mut previous = dynamics.train_eval.loss();
    common::integrate(dynamics, y, t_end, tolerances, |dynamics, y, t| {
        dynamics.evaluate_train_forward(y);
        let loss = dynamics.train_eval.loss();
        assert!(
            loss <= previous * (1.0 + 1e-12),
            "loss rose from {previous} to {loss} at t = {t}"
        );
        previous = loss;
    });
}

fn check_flow_invariants(sizes: Sizes, seed: u64) {
    let data = common::data(sizes, seed);
    let params = common::params(&data, sizes, 0.5, 0.4, seed);
    let (engine, y0) = ParameterEngine::new(&params);
    let (start_value, start_key_query) = matrix_invariants(&engine, &y0);
    let (mut dynamics, mut y) = common::parameter_dynamics(&data, &params);
    integrate_monotone(&mut dynamics, &mut y, 8.0);
    let (value, key_query) = matrix_invariants(&engine, &y);

    let value_error =
        common::relative_difference(value.as_slice().unwrap(), start_value.as_slice().unwrap());
    let key_query_error = common::relative_difference(
        key_query.as_slice().unwrap(),
        start_key_query.as_slice().unwrap(),
    );
    // Solver tolerance rtol = 1e-10 per step; the invariants are quadratic in the weights.
    assert!(
        value_error < 1e-7,
        "{sizes:?}: W^T W - W_V W_V^T moved by {value_error:e}"
    );
    assert!(
        key_query_error < 1e-7,
        "{sizes:?}: W_K W_K^T - W_Q W_Q^T moved by {key_query_error:e}"
    );
}

#[test]
fn flow_keeps_invariants_sampled() {
    check_flow_invariants(SAMPLED, 31);
}

#[test]
fn flow_keeps_invariants_narrow() {
    check_flow_invariants(NARROW, 32);
}

/// The trace invariants are linear in the reduced state, so every Runge-Kutta step keeps
/// them to rounding error.
#[test]
fn reduced_flow_keeps_trace_invariants() {
    let sizes = SAMPLED;
    let data = common::data(sizes, 33);
    let params = common::params(&data, sizes, 0.5, 0.4, 33);
    let (mut dynamics, mut z) = common::reduced_dynamics(&data, &params);
    let start = dynamics.engine().summary(&z);
    integrate_monotone(&mut dynamics, &mut z, 8.0);
    let end = dynamics.engine().summary(&z);
    let value_scale = sizes.m1 as f64 * start.gv[0][0].abs() + start.beta;
    assert!(
        (end.value_invariant - start.value_invariant).abs() < 1e-12 * value_scale * 100.0,
        "m1 tr GV - beta: {} -> {}",
        start.value_invariant,
        end.value_invariant
    );
    assert!(
        (end.key_query_invariant - start.key_query_invariant).abs() < 1e-10,
        "tr GK - tr GQ: {} -> {}",
        start.key_query_invariant,
        end.key_query_invariant
    );
}

/// Under gradient descent the invariants drift by O(eta^2) per step, so halving eta and
/// doubling the steps (same final time) divides the total drift by about 2.
#[test]
fn descent_drift_is_second_order() {
    let sizes = SAMPLED;
    let data = common::data(sizes, 34);
    let params = common::params(&data, sizes, 0.5, 0.4, 34);
    let drift = |eta: f64, steps: usize| {
        let (mut dynamics, mut z) = common::reduced_dynamics(&data, &params);
        let start = dynamics.engine().summary(&z).value_invariant;
        for _ in 0..steps {
            dynamics.evaluate_train(&z);
            dynamics.descent_step(&mut z, eta);
        }
        (dynamics.engine().summary(&z).value_invariant - start).abs()
    };
    let coarse = drift(0.04, 50);
    let fine = drift(0.02, 100);
    assert!(coarse > 0.0, "gradient descent should move the invariant");
    let ratio = coarse / fine;
    assert!(
        (1.6..2.5).contains(&ratio),
        "drift ratio {ratio} (coarse {coarse:e}, fine {fine:e})"
    );
}
