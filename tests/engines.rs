//! The parameter-space and reduced engines, started from the same weights, follow the same
//! trajectory: to rounding error under gradient descent, to solver tolerance under flow.

mod common;

use attnflow::dopri5::StepRule;
use attnflow::dynamics::Dynamics;
use attnflow::integrator::Tolerances;
use common::{DISTINCT, NARROW, SAMPLED, Sizes};

/// Gram state of the parameter engine's `y` and the reduced engine's `z`, compared block by
/// block so that a failure names the block.
fn compare(
    parameter: &Dynamics,
    y: &[f64],
    reduced: &Dynamics,
    z: &[f64],
    tolerance: f64,
    when: &str,
) {
    let a = parameter.engine().reduced_state(y);
    let b = reduced.engine().reduced_state(z);
    let blocks = [
        ("gamma", a.gamma.to_vec(), b.gamma.to_vec()),
        ("beta", vec![a.beta], vec![b.beta]),
        (
            "GV",
            a.gv.iter().copied().collect(),
            b.gv.iter().copied().collect(),
        ),
        (
            "S",
            a.s.iter().copied().collect(),
            b.s.iter().copied().collect(),
        ),
        (
            "GK",
            a.gk.iter().copied().collect(),
            b.gk.iter().copied().collect(),
        ),
        (
            "GQ",
            a.gq.iter().copied().collect(),
            b.gq.iter().copied().collect(),
        ),
    ];
    for (name, left, right) in blocks {
        let error = common::relative_difference(&left, &right);
        assert!(
            error < tolerance,
            "{when}: {name} differs by {error:e} (relative)"
        );
    }
}

fn check_descent(sizes: Sizes, seed: u64) {
    let data = common::data(sizes, seed);
    let params = common::params(&data, sizes, 0.5, 0.4, seed);
    let (mut parameter, mut y) = common::parameter_dynamics(&data, &params);
    let (mut reduced, mut z) = common::reduced_dynamics(&data, &params);
    // A large step, so the second-order terms of the exact reduced step matter.
    let eta = 0.2;
    for step in 0..60 {
        parameter.evaluate_train(&y);
        reduced.evaluate_train(&z);
        let (loss_p, loss_r) = (parameter.train_eval.loss(), reduced.train_eval.loss());
        assert!(
            (loss_p - loss_r).abs() <= 1e-10 * loss_p,
            "{sizes:?} step {step}: losses {loss_p} vs {loss_r}"
        );
        parameter.descent_step(&mut y, eta);
        reduced.descent_step(&mut z, eta);
        if step % 10 == 9 {
            compare(
                &parameter,
                &y,
                &reduced,
                &z,
                1e-8,
                &format!("{sizes:?} step {}", step + 1),
            );
        }
    }
}

#[test]
fn descent_agrees_sampled() {
    check_descent(SAMPLED, 11);
}

#[test]
fn descent_agrees_narrow_width() {
    check_descent(NARROW, 12);
}

#[test]
fn descent_agrees_distinct_fillers() {
    check_descent(DISTINCT, 13);
}

fn check_flow(sizes: Sizes, seed: u64) {
    let data = common::data(sizes, seed);
    let params = common::params(&data, sizes, 0.5, 0.4, seed);
    let (mut parameter, mut y) = common::parameter_dynamics(&data, &params);
    let (mut reduced, mut z) = common::reduced_dynamics(&data, &params);
    let tolerances = Tolerances {
        rtol: 1e-11,
        atol: 1e-13,
        rule: StepRule::Pi,
    };
    for t_end in [0.5, 2.0, 6.0] {
        common::integrate(&mut parameter, &mut y, t_end, tolerances, |_, _, _| {});
        common::integrate(&mut reduced, &mut z, t_end, tolerances, |_, _, _| {});
    }
    // Both runs meet rtol = 1e-11 per step; the global error after a few hundred steps of a
    // contracting flow stays far below 1e-7.
    compare(
        &parameter,
        &y,
        &reduced,
        &z,
        1e-7,
        &format!("{sizes:?} at t = 6"),
    );
}

#[test]
fn flow_agrees_sampled() {
    check_flow(SAMPLED, 21);
}

#[test]
fn flow_agrees_narrow_width() {
    check_flow(NARROW, 22);
}

#[test]
fn flow_agrees_distinct_fillers() {
    check_flow(DISTINCT, 23);
}
