//! The two engines that integrate the same dynamics in different coordinates.
//!
//! - [`ParameterEngine`] stores the weights W_V, W_K, W_Q themselves and the head W as its
//!   initial value plus a rank-one change along a (state size m + 3 m d).
//! - [`ReducedEngine`] holds the Gram-matrix state (gamma, beta, GV, S, GK, GQ), whose size
//!   1 + d + 4 d^2 does not depend on the widths m and m1.
//!
//! Both expose the state as one flat `f64` slice, so the same integrators drive them.

mod pair_rows;
mod parameter;
mod reduced;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

pub use parameter::ParameterEngine;
pub use reduced::ReducedEngine;

/// Engine choice in configs and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Weights in parameter space.
    Parameter,
    /// Width-free Gram-matrix state.
    Reduced,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Parameter => "parameter",
            EngineKind::Reduced => "reduced",
        }
    }
}

/// A list of (key token, query token) pairs, shared and immutable, so that an engine can
/// keep data derived from it and recognize it again by pointer.
pub type PairList = std::sync::Arc<[(usize, usize)]>;

/// Loss sensitivities that drive both engines: `rho = -dL/dgamma` (length d) and
/// `delta = -dL/dS` at each (key, query) pair of `pairs`.
pub struct Sensitivities<'a> {
    pub rho: &'a [f64],
    pub pairs: &'a PairList,
    pub delta: &'a [f64],
}

/// Cheap observables read from a state: beta, the 3 x 3 blocks of GV and S on the target and
/// common tokens, and the two scalar invariants of gradient flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GramSummary {
    pub beta: f64,
    /// GV[i][j] for token ids i, j in 0..3.
    pub gv: [[f64; 3]; 3],
    /// S[i][j] for token ids i, j in 0..3 (row = key, column = query).
    pub s: [[f64; 3]; 3],
    /// m1 trace(GV) - beta, constant under gradient flow.
    pub value_invariant: f64,
    /// trace(GK) - trace(GQ), constant under gradient flow.
    pub key_query_invariant: f64,
}

/// A state in the dynamics' coordinates: one flat vector plus the engine that reads it.
pub trait Engine: Send {
    fn kind(&self) -> EngineKind;

    /// Length of the flat state vector.
    fn state_len(&self) -> usize;

    /// Attention width m (enters the scores as 1/sqrt(m)).
    fn width(&self) -> f64;

    /// Number of MLP neurons m1 (= a . a).
    fn neurons(&self) -> f64;

    /// Vocabulary size d.
    fn vocab_size(&self) -> usize;

    /// Writes the token readouts gamma (length d) of state `y`.
    ///
    /// Engines may cache intermediate vectors here for the next [`Engine::flow`] or
    /// [`Engine::descent_step`] call on the same `y`, so call this first.
    fn readouts(&mut self, y: &[f64], gamma: &mut [f64]);

    /// Writes S[key, query] for each pair of `pairs` (unscaled by 1/sqrt(m)).
    fn scores(&mut self, y: &[f64], pairs: &PairList, out: &mut [f64]);

    /// Writes the gradient-flow vector field dy/dt = -grad L at `y`.
    fn flow(&mut self, y: &[f64], sens: &Sensitivities, dy: &mut [f64]);

    /// Applies one gradient-descent step of size `eta` on the weights, exactly, in this
    /// engine's coordinates.
    fn descent_step(&mut self, y: &mut [f64], sens: &Sensitivities, eta: f64);

    /// Reads beta, the target/common blocks of GV and S, and the invariants.
    fn summary(&self, y: &[f64]) -> GramSummary;

    /// Computes the full reduced state of `y`.
    fn reduced_state(&self, y: &[f64]) -> ReducedState;
}

/// The width-free state: gamma (d), beta, and the d x d matrices GV, S, GK, GQ.
///
/// `s` is indexed [key token, query token]; `gv`, `gk`, `gq` are symmetric.
#[derive(Clone, Debug, PartialEq)]
pub struct ReducedState {
    pub gamma: Array1<f64>,
    pub beta: f64,
    pub gv: Array2<f64>,
    pub s: Array2<f64>,
    pub gk: Array2<f64>,
    pub gq: Array2<f64>,
}

impl ReducedState {
    /// Length of the flat layout for vocabulary size d: 1 + d + 4 d^2.
    pub fn flat_len(d: usize) -> usize {
        1 + d + 4 * d * d
    }

    pub fn vocab_size(&self) -> usize {
        self.gamma.len()
    }

    /// Flat layout [gamma, beta, GV, S, GK, GQ], matrices row-major.
    pub fn to_flat(&self) -> Vec<f64> {
        let mut flat = Vec::with_capacity(Self::flat_len(self.vocab_size()));
        flat.extend(self.gamma.iter());
        flat.push(self.beta);
        for matrix in [&self.gv, &self.s, &self.gk, &self.gq] {
            flat.extend(matrix.iter());
        }
        flat
    }

    /// Inverse of [`ReducedState::to_flat`].
    pub fn from_flat(flat: &[f64], d: usize) -> ReducedState {
        assert_eq!(flat.len(), Self::flat_len(d));
        let block = |b: usize| {
            let start = d + 1 + b * d * d;
            Array2::from_shape_vec((d, d), flat[start..start + d * d].to_vec())
                .expect("block length is d * d")
        };
        ReducedState {
            gamma: Array1::from(flat[..d].to_vec()),
            beta: flat[d],
            gv: block(0),
            s: block(1),
            gk: block(2),
            gq: block(3),
        }
    }

    /// Reads the cheap observables of this state.
    pub fn summary(&self, m1: f64) -> GramSummary {
        let block = |matrix: &Array2<f64>| {
            let mut out = [[0.0; 3]; 3];
            for (i, row) in out.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = matrix[[i, j]];
                }
            }
            out
        };
        let trace = |matrix: &Array2<f64>| matrix.diag().sum();
        GramSummary {
            beta: self.beta,
            gv: block(&self.gv),
            s: block(&self.s),
            value_invariant: m1 * trace(&self.gv) - self.beta,
            key_query_invariant: trace(&self.gk) - trace(&self.gq),
        }
    }

    /// Gram state of explicit weights.
    pub fn from_params(params: &crate::model::Params) -> ReducedState {
        let u = params.u();
        ReducedState {
            gamma: params.w_v.t().dot(&u),
            beta: u.dot(&u),
            gv: params.w_v.t().dot(&params.w_v),
            s: params.w_k.t().dot(&params.w_q),
            gk: params.w_k.t().dot(&params.w_k),
            gq: params.w_q.t().dot(&params.w_q),
        }
    }
}
