//! Predictions at t = 0: the speed scale kappa and the initial readout speeds.
//!
//! At initialization the attention is close to uniform (r_h ~ 1 for every key position)
//! and every g_i is close to 1/2, so rho_1 = rho_2 ~ (1/n)(n/2 - n/6)/2 = 1/6 and
//! rho_3 ~ (1/n)(n/2 - n/2)/2 = 0. With GV(0) ~ sigma0^2 m I, the reduced flow
//! d gamma/dt = beta rho + m1 GV rho then gives d gamma_1/dt ~ d gamma_2/dt ~ kappa/6 and
//! d gamma_3/dt ~ 0, where kappa = beta(0) + m1 sigma0^2 m.
//!
//! The code takes both terms from the run's initial state: sigma0^2 m is replaced by
//! trace(GV(0)) / d, the mean squared norm of a column of W_V, whose expectation it is. So
//! kappa is a function of the initial weights alone: drawn weights, a Wishart draw and the
//! same weights read back from a file all give the same kappa.

use super::RunRecord;
use crate::task::{COMMON, TARGET_1, TARGET_2};

/// kappa = beta(0) + m1 trace(GV(0)) / d, the initial-state value of
/// beta(0) + m1 sigma0^2 m.
pub fn kappa(record: &RunRecord) -> f64 {
    let gv = &record.initial.gv;
    record.initial.beta + record.m1() * gv.diag().sum() / gv.nrows() as f64
}

/// Exact d gamma_k/dt at t = 0 for k = target 1, target 2, common token.
pub fn initial_speed(record: &RunRecord) -> [f64; 3] {
    [TARGET_1, TARGET_2, COMMON].map(|k| record.initial_speed[k])
}

/// Computes the predicted initial speed kappa/6 of gamma_1 and gamma_2.
pub fn target_speed(record: &RunRecord) -> f64 {
    kappa(record) / 6.0
}
