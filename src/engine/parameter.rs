//! Gradient flow in parameter space.
//!
//! The head W enters the model only through `u = W^T a`, and its gradient `a (W_V rho)^T`
//! always points along the fixed vector a. So W(t) = W(0) + a z(t)^T exactly, for gradient
//! flow and for gradient descent alike, and the engine integrates z (length m) instead of
//! the m1 x m entries of W. W is rebuilt from W(0) and z whenever weights are read out.
//!
//! The flat state is `[z, W_V^T, W_K^T, W_Q^T]`, each row-major. z has length m, and the
//! other three are stored token-major as (d, m). So row k is the value, key or query vector
//! of token k, and every update below runs over contiguous rows. With
//! `u = W(0)^T a + (a . a) z`, `rho = -dL/dgamma` and `Delta = -dL/dS`:
//!
//! ```text
//! dz/dt   = W_V rho              dW_V/dt = u rho^T
//! dW_K/dt = W_Q Delta^T          dW_Q/dt = W_K Delta
//! ```
//!
//! Delta is non-zero only at the (key, query) pairs that co-occur in a training sequence, so
//! the key and query updates cost O(pairs x m) instead of O(d^2 m).

use ndarray::{Array1, Array2, ArrayView2};

use super::pair_rows::{PairRows, pair_dots};
use super::{Engine, EngineKind, GramSummary, PairList, ReducedState, Sensitivities};
use crate::linalg::{axpy, axpy_kernel, dispatch, dot, outer, row_dots, weighted_rows};
use crate::model::Params;

pub struct ParameterEngine {
    /// Initial head W(0), (m1, m) row-major.
    w0: Vec<f64>,
    a: Vec<f64>,
    /// W(0)^T a.
    u0: Vec<f64>,
    /// a . a, which is m1 since every entry of a is +1 or -1.
    a_squared_norm: f64,
    m: usize,
    m1: usize,
    d: usize,
    /// u = W^T a of the state last passed to `readouts`.
    u: Vec<f64>,
    /// W_V rho, scratch.
    value_direction: Vec<f64>,
    /// Pairs grouped by key and by query row, for the last two pair lists seen (the
    /// training and the test set), most recent first.
    pair_rows: Vec<PairRows>,
}

/// Offsets of the four blocks in the flat state.
struct Layout {
    z: std::ops::Range<usize>,
    v: std::ops::Range<usize>,
    k: std::ops::Range<usize>,
    q: std::ops::Range<usize>,
}

impl ParameterEngine {
    /// Builds the engine and the flat initial state (z = 0) from explicit weights.
    pub fn new(params: &Params) -> (ParameterEngine, Vec<f64>) {
        let (m1, m) = (params.neurons(), params.width());
        let w0: Vec<f64> = params.w.iter().copied().collect();
        let a = params.a.to_vec();
        let mut u0 = vec![0.0; m];
        for (row, &sign) in w0.chunks_exact(m).zip(&a) {
            axpy(sign, row, &mut u0);
        }
        let engine = ParameterEngine {
            a_squared_norm: dot(&a, &a),
            w0,
            a,
            u0,
            m,
            m1,
            d: params.vocab_size(),
            u: vec![0.0; m],
            value_direction: vec![0.0; m],
            pair_rows: Vec::new(),
        };
        let mut y = Vec::with_capacity(engine.state_len());
        y.resize(m, 0.0);
        for matrix in [&params.w_v, &params.w_k, &params.w_q] {
            y.extend(matrix.t().iter());
        }
        (engine, y)
    }

    fn layout(&self) -> Layout {
        let block = self.d * self.m;
        let z = 0..self.m;
        Layout {
            v: z.end..z.end + block,
            k: z.end + block..z.end + 2 * block,
            q: z.end + 2 * block..z.end + 3 * block,
            z,
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
        let z = &y[layout.z.clone()];
        let mut w = self.w0.clone();
        for (row, &sign) in w.chunks_exact_mut(self.m).zip(&self.a) {
            axpy(sign, z, row);
        }
        Params {
            w: Array2::from_shape_vec((self.m1, self.m), w).expect("block has m1 * m entries"),
            w_v: token_major(layout.v),
            w_k: token_major(layout.k),
            w_q: token_major(layout.q),
            a: Array1::from(self.a.clone()),
        }
    }

    fn row<'a>(&self, block: &'a [f64], k: usize) -> &'a [f64] {
        &block[k * self.m..(k + 1) * self.m]
    }

    /// Returns the pair orders for `pairs`, built on first use and kept for the last two
    /// lists.
    fn pair_rows(&mut self, pairs: &PairList) -> &mut PairRows {
        match self.pair_rows.iter().position(|rows| rows.matches(pairs)) {
            Some(0) => {}
            Some(position) => self.pair_rows.swap(0, position),
            None => {
                self.pair_rows.insert(0, PairRows::new(pairs));
                self.pair_rows.truncate(2);
            }
        }
        &mut self.pair_rows[0]
    }

    /// u = W(0)^T a + (a . a) z, which equals W^T a for W = W(0) + a z^T.
    fn compute_u(&mut self, z: &[f64]) {
        self.u.copy_from_slice(&self.u0);
        axpy(self.a_squared_norm, z, &mut self.u);
    }

    /// value_direction = W_V rho.
    fn compute_value_direction(&mut self, values: &[f64], rho: &[f64]) {
        weighted_rows(values, rho, &mut self.value_direction);
    }
}

/// Writes W_V rho into `direction` and adds eta rho_k u to each value row k of `values`
/// (rows of u.len() entries). Each row adds to W_V rho before it moves, while it is in the
/// L1 cache. Rows with rho_k = 0 are skipped.
fn value_step(values: &mut [f64], rho: &[f64], u: &[f64], eta: f64, direction: &mut [f64]) {
    assert_eq!(values.len(), rho.len() * u.len());
    dispatch!(value_step_kernel, value_step_avx2, (values: &mut [f64], rho: &[f64], u: &[f64], eta: f64, direction: &mut [f64]) -> ());
}

#[inline(always)]
fn value_step_kernel(values: &mut [f64], rho: &[f64], u: &[f64], eta: f64, direction: &mut [f64]) {
    direction.fill(0.0);
    for (row, &rho_k) in values.chunks_exact_mut(u.len().max(1)).zip(rho) {
        if rho_k != 0.0 {
            axpy_kernel(rho_k, row, direction);
            axpy_kernel(eta * rho_k, u, row);
        }
    }
}

impl Engine for ParameterEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Parameter
    }

    fn state_len(&self) -> usize {
        self.m + 3 * self.d * self.m
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
        self.compute_u(&y[layout.z]);
        row_dots(&y[layout.v], &self.u, gamma);
    }

    fn scores(&mut self, y: &[f64], pairs: &PairList, out: &mut [f64]) {
        let layout = self.layout();
        let (keys, queries) = (&y[layout.k], &y[layout.q]);
        let m = self.m;
        pair_dots(self.pair_rows(pairs), keys, queries, out, m);
    }

    fn flow(&mut self, y: &[f64], sens: &Sensitivities, dy: &mut [f64]) {
        let layout = self.layout();
        let m = self.m;

        // Head and value: dz = W_V rho, dW_V^T = rho u^T.
        self.compute_value_direction(&y[layout.v.clone()], sens.rho);
        dy[layout.z].copy_from_slice(&self.value_direction);
        outer(sens.rho, &self.u, &mut dy[layout.v]);

        // Keys and queries: dW_K^T = Delta W_Q^T, dW_Q^T = Delta^T W_K^T.
        let (keys, queries) = (&y[layout.k.clone()], &y[layout.q.clone()]);
        let (d_keys, d_queries) = dy[layout.k.start..layout.q.end].split_at_mut(self.d * m);
        self.pair_rows(sens.pairs)
            .write(sens.delta, keys, queries, d_keys, d_queries, m);
    }

    fn descent_step(&mut self, y: &mut [f64], sens: &Sensitivities, eta: f64) {
        // The step adds eta times each flow term to the state, and every term reads the
        // weights before the step. So z is updated after W_V rho is complete, and the key
        // and query rows are updated together from copies of their old values.
        let layout = self.layout();
        let m = self.m;
        value_step(
            &mut y[layout.v],
            sens.rho,
            &self.u,
            eta,
            &mut self.value_direction,
        );
        axpy(eta, &self.value_direction, &mut y[layout.z]);

        let (keys, queries) = y[layout.k.start..layout.q.end].split_at_mut(self.d * m);
        self.pair_rows(sens.pairs)
            .step(sens.delta, eta, keys, queries, m);
    }

    fn summary(&self, y: &[f64]) -> GramSummary {
        let layout = self.layout();
        let (values, keys, queries) = (&y[layout.v], &y[layout.k], &y[layout.q]);
        let mut u = self.u0.clone();
        axpy(self.a_squared_norm, &y[layout.z], &mut u);
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
    fn value_step_matches_row_loop() {
        // Four rows of 11 entries, one with rho = 0: the dispatched and generic kernels give
        // the bits of the axpy loop they replace.
        let (rows, len, eta) = (4, 11, 0.37);
        let entry = |i: usize| ((i * 7919 % 10_007) as f64 / 10_007.0 - 0.5) * 3.0;
        let start: Vec<f64> = (0..rows * len).map(entry).collect();
        let rho = [0.8, 0.0, -1.3, 0.05];
        let u: Vec<f64> = (0..len).map(|j| entry(j + 101)).collect();

        let mut expected_values = start.clone();
        let mut expected_direction = vec![0.0; len];
        for (row, &rho_k) in expected_values.chunks_exact_mut(len).zip(&rho) {
            if rho_k != 0.0 {
                axpy(rho_k, row, &mut expected_direction);
                axpy(eta * rho_k, &u, row);
            }
        }

        let mut values = start.clone();
        let mut direction = vec![f64::NAN; len];
        value_step(&mut values, &rho, &u, eta, &mut direction);
        assert_eq!(values, expected_values, "dispatched values");
        assert_eq!(direction, expected_direction, "dispatched direction");

        let mut values = start;
        let mut direction = vec![f64::NAN; len];
        value_step_kernel(&mut values, &rho, &u, eta, &mut direction);
        assert_eq!(values, expected_values, "generic values");
        assert_eq!(direction, expected_direction, "generic direction");
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
        let pairs: PairList = vec![(0, 1), (1, 0), (2, 5), (3, 3), (0, 8), (7, 1), (0, 1)].into();
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
        assert_close(&y, &expected);
        // A second step reuses the scratch buffers and must not see the first step's values.
        engine.readouts(&y, &mut gamma);
        engine.flow(&y, &sens, &mut dy);
        let expected: Vec<f64> = y.iter().zip(&dy).map(|(y, f)| y + eta * f).collect();
        engine.descent_step(&mut y, &sens, eta);
        assert_close(&y, &expected);
    }

    /// Asserts entrywise agreement to rounding. The step multiplies eta into the terms
    /// before summing them, so it matches the Euler step to rounding, not bit for bit.
    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-14 * (1.0 + e.abs()),
                "entry {i}: step gives {a}, Euler step {e}"
            );
        }
    }

    #[test]
    fn scores_follow_changing_pair_lists() {
        // The engine keeps the orders of two pair lists. Alternating between three lists,
        // with an empty one, must give each list its own scores.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = random_params(&mut rng);
        let (mut engine, y) = ParameterEngine::new(&params);
        let lists: [PairList; 3] = [
            vec![(0, 1), (8, 8), (0, 1)].into(),
            vec![(2, 0), (5, 7)].into(),
            Vec::new().into(),
        ];
        for &list in &[0, 1, 0, 2, 1, 1, 0, 2, 0] {
            let pairs = &lists[list];
            let mut scores = vec![f64::NAN; pairs.len()];
            engine.scores(&y, pairs, &mut scores);
            for (score, &(key, query)) in scores.iter().zip(pairs.iter()) {
                let expected = params.w_k.column(key).dot(&params.w_q.column(query));
                assert!(
                    (score - expected).abs() <= 1e-13 * (1.0 + expected.abs()),
                    "list {list}, pair ({key}, {query}): {score} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn head_is_rebuilt_from_z() {
        // After steps, W = W(0) + a z^T must equal the head that plain gradient descent on W
        // reaches: W += eta a (W_V rho)^T at each step.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params = random_params(&mut rng);
        let (mut engine, mut y) = ParameterEngine::new(&params);
        let rho: Vec<f64> = (0..9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let pairs: PairList = vec![(0, 1), (2, 2)].into();
        let delta = vec![0.5, -0.25];
        let sens = Sensitivities {
            rho: &rho,
            pairs: &pairs,
            delta: &delta,
        };
        let eta = 0.1;

        let mut w = params.w.clone();
        let mut gamma = vec![0.0; 9];
        for _ in 0..3 {
            engine.readouts(&y, &mut gamma);
            let w_v = engine.params(&y).w_v;
            let direction = w_v.dot(&Array1::from(rho.clone()));
            for (mut row, &sign) in w.rows_mut().into_iter().zip(&params.a) {
                row.scaled_add(eta * sign, &direction);
            }
            engine.descent_step(&mut y, &sens, eta);
        }

        let rebuilt = engine.params(&y).w;
        for (r, e) in rebuilt.iter().zip(&w) {
            assert!((r - e).abs() <= 1e-14 * (1.0 + e.abs()), "{r} vs {e}");
        }

        // u from the factored form equals W^T a of the rebuilt head.
        engine.readouts(&y, &mut gamma);
        let u = rebuilt.t().dot(&params.a);
        for (a, b) in engine.u.iter().zip(&u) {
            assert!((a - b).abs() <= 1e-13 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
