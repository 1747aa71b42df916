//! Gradient flow in parameter space.
//!
//! The flat state is `[W, W_V^T, W_K^T, W_Q^T]`, each row-major: W is (m1, m) and the other
//! three are stored token-major as (d, m), so row k is the value, key or query vector of token
//! k and every update below runs over contiguous rows. With `u = W^T a`, `rho = -dL/dgamma`
//! and `Delta = -dL/dS`:
//!
//! ```text
//! dW/dt   = a (W_V rho)^T        dW_V/dt = u rho^T
//! dW_K/dt = W_Q Delta^T          dW_Q/dt = W_K Delta
//! ```
//!
//! Delta is non-zero only at the (key, query) pairs that co-occur in a training sequence, so
//! the key and query updates cost O(pairs x m) instead of O(d^2 m).

use ndarray::{Array1, Array2, ArrayView2};

use super::pair_rows::PairRows;
use super::{Engine, EngineKind, GramSummary, ReducedState, Sensitivities};
use crate::linalg::{axpy, dot};
use crate::model::Params;

pub struct ParameterEngine {
    a: Vec<f64>,
    m: usize,
    m1: usize,
    d: usize,
    /// u = W^T a of the state last passed to `readouts`.
    u: Vec<f64>,
    /// W_V rho, scratch.
    value_direction: Vec<f64>,
    /// Key and query increments of a gradient-descent step, kept so that steps do not
    /// allocate.
    step: Vec<f64>,
    /// Training pairs grouped by key and by query row.
    pair_rows: Option<PairRows>,
}

/// Offsets of the four blocks in the flat state.
struct Layout {
    w: std::ops::Range<usize>,
    v: std::ops::Range<usize>,
    k: std::ops::Range<usize>,
    q: std::ops::Range<usize>,
}

impl ParameterEngine {
    /// Builds the engine and the flat initial state from explicit weights.
    pub fn new(params: &Params) -> (ParameterEngine, Vec<f64>) {
        let engine = ParameterEngine {
            a: params.a.to_vec(),
            m: params.width(),
            m1: params.neurons(),
            d: params.vocab_size(),
            u: vec![0.0; params.width()],
            value_direction: vec![0.0; params.width()],
            step: Vec::new(),
            pair_rows: None,
        };
        let mut y = Vec::with_capacity(engine.state_len());
        y.extend(params.w.iter());
        for matrix in [&params.w_v, &params.w_k, &params.w_q] {
            y.extend(matrix.t().iter());
        }
        (engine, y)
    }

    fn layout(&self) -> Layout {
        let head = self.m1 * self.m;
        let block = self.d * self.m;
        Layout {
            w: 0..head,
            v: head..head + block,
            k: head + block..head + 2 * block,
            q: head + 2 * block..head + 3 * block,
        }
    }

    /// Converts a flat state back to weights in the (out, in) shapes of the file format.
    pub fn params(&self, y: &[f64]) -> Params {
        let layout = self.layout();
        let token_major = |range: std::ops::Range<usize>| {
            ArrayView2::from_shape((self.d, self.m), &y[range])
                .expect("block has d * m entries")
                .t()
                .to_owned()
        };
        Params {
            w: Array2::from_shape_vec((self.m1, self.m), y[layout.w.clone()].to_vec())
                .expect("block has m1 * m entries"),
            w_v: token_major(layout.v),
            w_k: token_major(layout.k),
            w_q: token_major(layout.q),
            a: Array1::from(self.a.clone()),
        }
    }

    fn row<'a>(&self, block: &'a [f64], k: usize) -> &'a [f64] {
        &block[k * self.m..(k + 1) * self.m]
    }

    /// The pair orders for `pairs`, rebuilt only when the pair list changes.
    fn pair_rows(&mut self, pairs: &[(usize, usize)]) -> &PairRows {
        if !self
            .pair_rows
            .as_ref()
            .is_some_and(|rows| rows.matches(pairs))
        {
            self.pair_rows = Some(PairRows::new(pairs));
        }
        self.pair_rows.as_ref().expect("set just above")
    }

    /// u = W^T a.
    fn compute_u(&mut self, w: &[f64]) {
        self.u.iter_mut().for_each(|v| *v = 0.0);
        for (row, &sign) in w.chunks_exact(self.m).zip(&self.a) {
            axpy(sign, row, &mut self.u);
        }
    }
}

impl Engine for ParameterEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Parameter
    }

    fn state_len(&self) -> usize {
        self.m1 * self.m + 3 * self.d * self.m
    }

    fn width(&self) -> f64 {
        self.m as f64
    }

    fn neurons(&self) -> f64 {
        self.m1 as f64
    }

    fn vocab_size(&self) -> usize {
        self.d
    }

    fn readouts(&mut self, y: &[f64], gamma: &mut [f64]) {
        let layout = self.layout();
        self.compute_u(&y[layout.w]);
        let values = &y[layout.v];
        for (k, g) in gamma.iter_mut().enumerate() {
            *g = dot(self.row(values, k), &self.u);
        }
    }

    fn scores(&mut self, y: &[f64], pairs: &[(usize, usize)], out: &mut [f64]) {
        let layout = self.layout();
        let (keys, queries) = (&y[layout.k], &y[layout.q]);
        for (s, &(key, query)) in out.iter_mut().zip(pairs) {
            *s = dot(self.row(keys, key), self.row(queries, query));
        }
    }

    fn flow(&mut self, y: &[f64], sens: &Sensitivities, dy: &mut [f64]) {
        let layout = self.layout();
        let m = self.m;
        dy.iter_mut().for_each(|v| *v = 0.0);

        // Value and head: dW_V^T = rho u^T, dW = a (W_V rho)^T.
        let values = &y[layout.v.clone()];
        self.value_direction.iter_mut().for_each(|v| *v = 0.0);
        for (k, &rho_k) in sens.rho.iter().enumerate() {
            if rho_k != 0.0 {
                axpy(rho_k, self.row(values, k), &mut self.value_direction);
                axpy(rho_k, &self.u, &mut dy[layout.v.start + k * m..][..m]);
            }
        }
        for (row, &sign) in dy[layout.w].chunks_exact_mut(m).zip(&self.a) {
            axpy(sign, &self.value_direction, row);
        }

        // Keys and queries: dW_K^T = Delta W_Q^T, dW_Q^T = Delta^T W_K^T.
        let (keys, queries) = (&y[layout.k.clone()], &y[layout.q.clone()]);
        let (d_keys, d_queries) = dy[layout.k.start..layout.q.end].split_at_mut(self.d * m);
        self.pair_rows(sens.pairs)
            .accumulate(sens.delta, keys, queries, d_keys, d_queries, m);
    }

    fn descent_step(&mut self, y: &mut [f64], sens: &Sensitivities, eta: f64) {
        // Gradient descent is the explicit Euler step of the flow in these coordinates. Each
        // entry of W and W_V gets one flow term, so it is added to y directly; the key and
        // query rows sum several terms per pair, so they are summed in `step` first. Every
        // entry thus gets the same value as y += eta * flow(y).
        let layout = self.layout();
        let m = self.m;
        self.value_direction.iter_mut().for_each(|v| *v = 0.0);
        for (k, &rho_k) in sens.rho.iter().enumerate() {
            if rho_k != 0.0 {
                axpy(
                    rho_k,
                    self.row(&y[layout.v.clone()], k),
                    &mut self.value_direction,
                );
            }
        }
        for (k, &rho_k) in sens.rho.iter().enumerate() {
            if rho_k != 0.0 {
                let row = &mut y[layout.v.start + k * m..][..m];
                for (value, &u) in row.iter_mut().zip(&self.u) {
                    *value += eta * (rho_k * u);
                }
            }
        }
        for (row, &sign) in y[layout.w].chunks_exact_mut(m).zip(&self.a) {
            for (w, &direction) in row.iter_mut().zip(&self.value_direction) {
                *w += eta * (sign * direction);
            }
        }

        let block = self.d * m;
        let mut step = std::mem::take(&mut self.step);
        step.clear();
        step.resize(2 * block, 0.0);
        let (d_keys, d_queries) = step.split_at_mut(block);
        let (keys, queries) = (&y[layout.k.clone()], &y[layout.q.clone()]);
        self.pair_rows(sens.pairs)
            .accumulate(sens.delta, keys, queries, d_keys, d_queries, m);
        axpy(eta, &step, &mut y[layout.k.start..layout.q.end]);
        self.step = step;
    }

    fn summary(&self, y: &[f64]) -> GramSummary {
        let layout = self.layout();
        let (values, keys, queries) = (&y[layout.v], &y[layout.k], &y[layout.q]);
        let mut u = vec![0.0; self.m];
        for (row, &sign) in y[layout.w].chunks_exact(self.m).zip(&self.a) {
            axpy(sign, row, &mut u);
        }
        let mut summary = GramSummary {
            beta: dot(&u, &u),
            ..GramSummary::default()
        };
        for i in 0..3 {
            for j in 0..3 {
                summary.gv[i][j] = dot(self.row(values, i), self.row(values, j));
                summary.s[i][j] = dot(self.row(keys, i), self.row(queries, j));
            }
        }
        let squared_norm = |block: &[f64]| dot(block, block);
        summary.value_invariant = self.m1 as f64 * squared_norm(values) - summary.beta;
        summary.key_query_invariant = squared_norm(keys) - squared_norm(queries);
        summary
    }

    fn reduced_state(&self, y: &[f64]) -> ReducedState {
        ReducedState::from_params(&self.params(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Weights with all dimensions different: m = 12, m1 = 7, d = 9.
    fn random_params(rng: &mut ChaCha8Rng) -> Params {
        let mut matrix = |rows: usize, cols: usize| {
            Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0..1.0))
        };
        let (w, w_v, w_k, w_q) = (matrix(7, 12), matrix(12, 9), matrix(12, 9), matrix(12, 9));
        let a = Array1::from_shape_fn(7, |j| if j % 3 == 0 { -1.0 } else { 1.0 });
        Params {
            w,
            w_v,
            w_k,
            w_q,
            a,
        }
    }

    #[test]
    fn descent_step_is_euler_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let params = random_params(&mut rng);
        let (mut engine, y0) = ParameterEngine::new(&params);
        // Token 4 has rho = 0 and pair (2, 5) has delta = 0, to cover the skipped terms.
        let rho: Vec<f64> = (0..9)
            .map(|k| {
                if k == 4 {
                    0.0
                } else {
                    rng.random_range(-1.0..1.0)
                }
            })
            .collect();
        let pairs = vec![(0, 1), (1, 0), (2, 5), (3, 3), (0, 8), (7, 1), (0, 1)];
        let delta: Vec<f64> = (0..pairs.len())
            .map(|p| {
                if p == 2 {
                    0.0
                } else {
                    rng.random_range(-1.0..1.0)
                }
            })
            .collect();
        let sens = Sensitivities {
            rho: &rho,
            pairs: &pairs,
            delta: &delta,
        };
        let eta = 0.37;

        let mut gamma = vec![0.0; 9];
        engine.readouts(&y0, &mut gamma);
        let mut dy = vec![0.0; y0.len()];
        engine.flow(&y0, &sens, &mut dy);
        let expected: Vec<f64> = y0.iter().zip(&dy).map(|(y, f)| y + eta * f).collect();

        let mut y = y0.clone();
        engine.descent_step(&mut y, &sens, eta);
        assert_eq!(y, expected);
        // A second step reuses the scratch buffers and must not see the first step's values.
        engine.readouts(&y, &mut gamma);
        engine.flow(&y, &sens, &mut dy);
        let expected: Vec<f64> = y.iter().zip(&dy).map(|(y, f)| y + eta * f).collect();
        engine.descent_step(&mut y, &sens, eta);
        assert_eq!(y, expected);
    }
}
