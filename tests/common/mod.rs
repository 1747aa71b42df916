//! Small problems shared by the integration tests. Every size differs from the others
//! (n, L, d, m, m1) so that a transposed index cannot pass unnoticed.

#![allow(dead_code)]

use attnflow::dynamics::Dynamics;
use attnflow::engine::{ParameterEngine, ReducedEngine, ReducedState};
use attnflow::integrator::{EventWatch, IntegratorKind, StepStart, Tolerances, advance_flow};
use attnflow::model::{Dims, InitScheme, Params};
use attnflow::task::{FillerMode, TaskData, TaskSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Sizes of one test problem.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub n: usize,
    pub seq_len: usize,
    pub d: usize,
    pub m: usize,
    pub m1: usize,
    pub fillers: FillerMode,
}

pub const SAMPLED: Sizes = Sizes {
    n: 12,
    seq_len: 4,
    d: 11,
    m: 7,
    m1: 5,
    fillers: FillerMode::Sampled,
};

/// Width below the vocabulary size, so the Gram matrices are singular.
pub const NARROW: Sizes = Sizes {
    n: 6,
    seq_len: 5,
    d: 13,
    m: 3,
    m1: 9,
    fillers: FillerMode::Sampled,
};

/// Distinct fillers; d is sized by the generator.
pub const DISTINCT: Sizes = Sizes {
    n: 6,
    seq_len: 4,
    d: 0,
    m: 8,
    m1: 3,
    fillers: FillerMode::Distinct,
};

pub fn data(sizes: Sizes, seed: u64) -> TaskData {
    let spec = TaskSpec {
        n: sizes.n,
        seq_len: sizes.seq_len,
        vocab_size: (sizes.fillers == FillerMode::Sampled).then_some(sizes.d),
        fillers: sizes.fillers,
        n_test: 6,
    };
    spec.generate(&mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

/// Gaussian weights large enough that attention is far from uniform.
pub fn params(data: &TaskData, sizes: Sizes, sigma0: f64, sigma1: f64, seed: u64) -> Params {
    let dims = Dims {
        d: data.train.vocab_size,
        seq_len: sizes.seq_len,
        m: sizes.m,
        m1: sizes.m1,
    };
    InitScheme::Gaussian { sigma0, sigma1 }
        .sample(dims, &mut ChaCha8Rng::seed_from_u64(seed + 1000))
        .unwrap()
}

pub fn parameter_dynamics(data: &TaskData, params: &Params) -> (Dynamics, Vec<f64>) {
    let (engine, y) = ParameterEngine::new(params);
    (Dynamics::new(data.clone(), Box::new(engine)), y)
}

pub fn reduced_dynamics(data: &TaskData, params: &Params) -> (Dynamics, Vec<f64>) {
    let state = ReducedState::from_params(params);
    let engine = ReducedEngine::new(
        data.train.vocab_size,
        params.width() as f64,
        params.neurons() as f64,
    );
    (
        Dynamics::new(data.clone(), Box::new(engine)),
        state.to_flat(),
    )
}

/// Largest |a - b| over the largest |b| (or 1e-300), entrywise over two equal-length slices.
pub fn relative_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-300f64, |s, v| s.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Integrates gradient flow with `dopri5` from t = 0 to `t_end`, in as many solver calls as
/// it takes, calling `after_call(dynamics, y, t)` after each call.
pub fn integrate(
    dynamics: &mut Dynamics,
    y: &mut Vec<f64>,
    t_end: f64,
    tolerances: Tolerances,
    mut after_call: impl FnMut(&mut Dynamics, &[f64], f64),
) {
    let (mut t, mut hint) = (0.0, 0.0);
    while t < t_end {
        let advance = advance_flow(
            dynamics,
            IntegratorKind::Dopri5,
            tolerances,
            EventWatch::default(),
            y,
            t,
            t_end,
            StepStart::fresh(hint),
            1_000_000,
        )
        .unwrap();
        t = advance.t;
        hint = advance.step_hint;
        after_call(dynamics, y, t);
    }
}
