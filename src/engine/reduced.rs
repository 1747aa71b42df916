//! The width-free Gram-matrix flow.
//!
//! The flat state is `[gamma (d), beta, GV, S, GK, GQ]` with the d x d matrices row-major and S
//! indexed [key, query]. Gradient flow on the weights moves it by
//!
//! ```text
//! d gamma/dt = beta rho + m1 GV rho        d beta/dt = 2 m1 gamma . rho
//! d GV/dt    = rho gamma^T + gamma rho^T   d S/dt    = GK Delta + Delta GQ
//! d GK/dt    = S Delta^T + Delta S^T       d GQ/dt   = S^T Delta + Delta^T S
//! ```
//!
//! and one gradient-descent step of size eta on the weights moves it exactly by eta times the
//! above plus the second-order terms
//!
//! ```text
//! gamma: eta^2 m1 (gamma . rho) rho        beta: eta^2 m1^2 rho^T GV rho
//! GV:    eta^2 beta rho rho^T              S:    eta^2 Delta S^T Delta
//! GK:    eta^2 Delta GQ Delta^T            GQ:   eta^2 Delta^T GK Delta
//! ```
//!
//! Delta is non-zero only at the (key, query) pairs of the training set, so every product with
//! Delta costs O(pairs x d).

use super::{Engine, EngineKind, GramSummary, PairList, ReducedState, Sensitivities};
use crate::linalg::{axpy, axpy_kernel, dispatch, dot};

pub struct ReducedEngine {
    d: usize,
    m: f64,
    m1: f64,
    scratch: Scratch,
}

/// d x d work matrices, row-major.
struct Scratch {
    /// S^T.
    s_t: Vec<f64>,
    /// Delta GQ.
    delta_gq: Vec<f64>,
    /// Delta^T GK.
    delta_t_gk: Vec<f64>,
    /// Delta S^T.
    delta_s_t: Vec<f64>,
    /// Delta^T S.
    delta_t_s: Vec<f64>,
    /// GV rho (length d).
    gv_rho: Vec<f64>,
    /// Second-order product and its transpose, used by gradient descent only.
    second: Vec<f64>,
    transposed: Vec<f64>,
    /// Transpose of a first-order product, used by gradient descent only.
    product_t: Vec<f64>,
    /// Increment of a gradient-descent step, kept so that steps do not allocate.
    step: Vec<f64>,
}

impl ReducedEngine {
    /// Builds the engine for vocabulary size `d`, attention width `m` and `m1` neurons.
    ///
    /// `m` and `m1` are real numbers here because they enter only as the score scale
    /// 1/sqrt(m) and as a . a = m1.
    pub fn new(d: usize, m: f64, m1: f64) -> ReducedEngine {
        let square = || vec![0.0; d * d];
        ReducedEngine {
            d,
            m,
            m1,
            scratch: Scratch {
                s_t: square(),
                delta_gq: square(),
                delta_t_gk: square(),
                delta_s_t: square(),
                delta_t_s: square(),
                gv_rho: vec![0.0; d],
                second: square(),
                transposed: square(),
                product_t: square(),
                step: Vec::new(),
            },
        }
    }

    /// Computes S^T, Delta GQ, Delta^T GK, Delta S^T, Delta^T S and GV rho into scratch.
    fn products(&mut self, y: &[f64], sens: &Sensitivities) {
        let d = self.d;
        let blocks = Blocks::new(y, d);
        let scratch = &mut self.scratch;
        transpose_into(blocks.s, &mut scratch.s_t, d);
        for buffer in [
            &mut scratch.delta_gq,
            &mut scratch.delta_t_gk,
            &mut scratch.delta_s_t,
            &mut scratch.delta_t_s,
        ] {
            buffer.iter_mut().for_each(|v| *v = 0.0);
        }

        let sources = [blocks.gq, blocks.gk, &scratch.s_t, blocks.s];
        let targets = [
            &mut scratch.delta_gq,
            &mut scratch.delta_t_gk,
            &mut scratch.delta_s_t,
            &mut scratch.delta_t_s,
        ];
        pair_products(sens.pairs, sens.delta, sources, targets, d);

        for (k, out) in scratch.gv_rho.iter_mut().enumerate() {
            *out = dot(row(blocks.gv, k, d), sens.rho);
        }
    }
}

/// Views of the blocks of a flat state.
struct Blocks<'a> {
    gamma: &'a [f64],
    beta: f64,
    gv: &'a [f64],
    s: &'a [f64],
    gk: &'a [f64],
    gq: &'a [f64],
}

impl<'a> Blocks<'a> {
    fn new(y: &'a [f64], d: usize) -> Blocks<'a> {
        let dd = d * d;
        let base = d + 1;
        Blocks {
            gamma: &y[..d],
            beta: y[d],
            gv: &y[base..base + dd],
            s: &y[base + dd..base + 2 * dd],
            gk: &y[base + 2 * dd..base + 3 * dd],
            gq: &y[base + 3 * dd..base + 4 * dd],
        }
    }
}

/// Adds, for each pair (key, query) with weight Delta[key, query], Delta times a row of each
/// source matrix to a row of the matching target: row k of Delta M gains Delta[k, k'] M[k', :]
/// and row k' of Delta^T M gains Delta[k, k'] M[k, :]. The sources are GQ, GK, S^T, S and
/// the targets Delta GQ, Delta^T GK, Delta S^T, Delta^T S (all d x d, row-major).
fn pair_products(
    pairs: &[(usize, usize)],
    delta: &[f64],
    sources: [&[f64]; 4],
    targets: [&mut Vec<f64>; 4],
    d: usize,
) {
    dispatch!(pair_products_kernel, pair_products_avx2, (pairs: &[(usize, usize)], delta: &[f64], sources: [&[f64]; 4], targets: [&mut Vec<f64>; 4], d: usize) -> ());
}

#[inline(always)]
fn pair_products_kernel(
    pairs: &[(usize, usize)],
    delta: &[f64],
    sources: [&[f64]; 4],
    targets: [&mut Vec<f64>; 4],
    d: usize,
) {
    let [gq, gk, s_t, s] = sources;
    let [delta_gq, delta_t_gk, delta_s_t, delta_t_s] = targets;
    for (&(key, query), &weight) in pairs.iter().zip(delta) {
        if weight == 0.0 {
            continue;
        }
        axpy_kernel(weight, row(gq, query, d), row_mut(delta_gq, key, d));
        axpy_kernel(weight, row(gk, key, d), row_mut(delta_t_gk, query, d));
        axpy_kernel(weight, row(s_t, query, d), row_mut(delta_s_t, key, d));
        axpy_kernel(weight, row(s, key, d), row_mut(delta_t_s, query, d));
    }
}

fn row(matrix: &[f64], k: usize, d: usize) -> &[f64] {
    &matrix[k * d..(k + 1) * d]
}

fn row_mut(matrix: &mut [f64], k: usize, d: usize) -> &mut [f64] {
    &mut matrix[k * d..(k + 1) * d]
}

fn transpose_into(src: &[f64], dst: &mut [f64], d: usize) {
    for i in 0..d {
        for j in 0..d {
            dst[j * d + i] = src[i * d + j];
        }
    }
}

/// out[i, j] = scale (a[i, j] + b[j, i]).
fn add_with_transpose(a: &[f64], b: &[f64], scale: f64, out: &mut [f64], d: usize) {
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = scale * (a[i * d + j] + b[j * d + i]);
        }
    }
}

impl Engine for ReducedEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Reduced
    }

    fn state_len(&self) -> usize {
        ReducedState::flat_len(self.d)
    }

    fn width(&self) -> f64 {
        self.m
    }

    fn neurons(&self) -> f64 {
        self.m1
    }

    fn vocab_size(&self) -> usize {
        self.d
    }

    fn readouts(&mut self, y: &[f64], gamma: &mut [f64]) {
        gamma.copy_from_slice(&y[..self.d]);
    }

    fn scores(&mut self, y: &[f64], pairs: &PairList, out: &mut [f64]) {
        let d = self.d;
        let s = Blocks::new(y, d).s;
        for (value, &(key, query)) in out.iter_mut().zip(pairs.iter()) {
            *value = s[key * d + query];
        }
    }

    fn flow(&mut self, y: &[f64], sens: &Sensitivities, dy: &mut [f64]) {
        self.products(y, sens);
        let d = self.d;
        let dd = d * d;
        let blocks = Blocks::new(y, d);
        let scratch = &self.scratch;
        let (d_gamma, rest) = dy.split_at_mut(d);
        let (d_beta, rest) = rest.split_at_mut(1);
        let (d_gv, rest) = rest.split_at_mut(dd);
        let (d_s, rest) = rest.split_at_mut(dd);
        let (d_gk, d_gq) = rest.split_at_mut(dd);

        for ((out, &rho), &gv_rho) in d_gamma.iter_mut().zip(sens.rho).zip(&scratch.gv_rho) {
            *out = blocks.beta * rho + self.m1 * gv_rho;
        }
        d_beta[0] = 2.0 * self.m1 * dot(blocks.gamma, sens.rho);
        for i in 0..d {
            for j in 0..d {
                d_gv[i * d + j] = sens.rho[i] * blocks.gamma[j] + blocks.gamma[i] * sens.rho[j];
            }
        }

        // GK Delta = (Delta^T GK)^T because GK is symmetric.
        add_with_transpose(&scratch.delta_gq, &scratch.delta_t_gk, 1.0, d_s, d);
        add_with_transpose(&scratch.delta_s_t, &scratch.delta_s_t, 1.0, d_gk, d);
        add_with_transpose(&scratch.delta_t_s, &scratch.delta_t_s, 1.0, d_gq, d);
    }

    fn descent_step(&mut self, y: &mut [f64], sens: &Sensitivities, eta: f64) {
        let d = self.d;
        let dd = d * d;
        let mut dy = std::mem::take(&mut self.scratch.step);
        dy.resize(y.len(), 0.0);
        self.flow(y, sens, &mut dy);

        // Second-order scalars, from the state before the step.
        let blocks = Blocks::new(y, d);
        let gamma_rho = dot(blocks.gamma, sens.rho);
        let rho_gv_rho = dot(sens.rho, &self.scratch.gv_rho);
        let beta = blocks.beta;
        for (out, &rho) in dy[..d].iter_mut().zip(sens.rho) {
            *out += eta * self.m1 * gamma_rho * rho;
        }
        dy[d] += eta * self.m1 * self.m1 * rho_gv_rho;
        let base = d + 1;
        for i in 0..d {
            for j in 0..d {
                dy[base + i * d + j] += eta * beta * sens.rho[i] * sens.rho[j];
            }
        }

        // S gains eta^2 Delta S^T Delta, and `second` contains its transpose.
        self.second_order(sens, SecondOrder::Score);
        transpose_into(&self.scratch.second, &mut self.scratch.transposed, d);
        axpy(
            eta,
            &self.scratch.transposed,
            &mut dy[base + dd..base + 2 * dd],
        );

        // GK gains eta^2 Delta GQ Delta^T, GQ gains eta^2 Delta^T GK Delta; both symmetric.
        for (which, offset) in [(SecondOrder::Key, 2), (SecondOrder::Query, 3)] {
            self.second_order(sens, which);
            let second = &self.scratch.second;
            add_with_transpose(second, second, 0.5 * eta, &mut self.scratch.transposed, d);
            let start = base + offset * dd;
            axpy(1.0, &self.scratch.transposed, &mut dy[start..start + dd]);
        }

        axpy(eta, &dy, y);
        self.scratch.step = dy;
    }

    fn summary(&self, y: &[f64]) -> GramSummary {
        let d = self.d;
        let blocks = Blocks::new(y, d);
        let mut summary = GramSummary {
            beta: blocks.beta,
            ..GramSummary::default()
        };
        for i in 0..3 {
            for j in 0..3 {
                summary.gv[i][j] = blocks.gv[i * d + j];
                summary.s[i][j] = blocks.s[i * d + j];
            }
        }
        let trace = |matrix: &[f64]| (0..d).map(|k| matrix[k * d + k]).sum::<f64>();
        summary.value_invariant = self.m1 * trace(blocks.gv) - blocks.beta;
        summary.key_query_invariant = trace(blocks.gk) - trace(blocks.gq);
        summary
    }

    fn reduced_state(&self, y: &[f64]) -> ReducedState {
        ReducedState::from_flat(y, self.d)
    }
}

/// Second-order product of a gradient-descent step.
#[derive(Clone, Copy)]
enum SecondOrder {
    /// (Delta S^T Delta)^T.
    Score,
    /// Delta GQ Delta^T (up to transposition).
    Key,
    /// Delta^T GK Delta (up to transposition).
    Query,
}

impl ReducedEngine {
    /// Writes into `scratch.second` the transpose of the requested second-order product,
    /// using the first-order products that `products` left in scratch.
    ///
    /// With P one of Delta S^T, Delta GQ, Delta^T GK, the products are P Delta, P Delta^T
    /// and P Delta; each is formed through its transpose, whose rows gain Delta[k, k'] times
    /// rows of P^T.
    fn second_order(&mut self, sens: &Sensitivities, which: SecondOrder) {
        let d = self.d;
        let scratch = &mut self.scratch;
        let product = match which {
            SecondOrder::Score => &scratch.delta_s_t,
            SecondOrder::Key => &scratch.delta_gq,
            SecondOrder::Query => &scratch.delta_t_gk,
        };
        let product_t = &mut scratch.product_t;
        transpose_into(product, product_t, d);
        scratch.second.iter_mut().for_each(|v| *v = 0.0);
        for (&(key, query), &delta) in sens.pairs.iter().zip(sens.delta) {
            if delta == 0.0 {
                continue;
            }
            // (P Delta)^T = Delta^T P^T: row `query` gains delta * row `key` of P^T.
            // (P Delta^T)^T = Delta P^T: row `key` gains delta * row `query` of P^T.
            let (target, source) = match which {
                SecondOrder::Score | SecondOrder::Query => (query, key),
                SecondOrder::Key => (key, query),
            };
            axpy(
                delta,
                row(product_t, source, d),
                row_mut(&mut scratch.second, target, d),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_pair_products_match_dispatched() {
        // The generic kernel runs on CPUs without AVX2 and FMA; it must give the same bits.
        let d = 7;
        let value = |i: usize| ((i * 7919 % 10_007) as f64 / 10_007.0 - 0.5) * 3.0;
        let matrix = |seed: usize| -> Vec<f64> { (0..d * d).map(|i| value(i + seed)).collect() };
        let sources = [matrix(1), matrix(2), matrix(3), matrix(4)];
        let pairs = [(1, 4), (0, 0), (5, 1), (2, 2), (1, 3), (6, 6)];
        let delta = [0.3, -1.7, 0.0, 2.2, 1e-3, -0.4];
        let start: Vec<Vec<f64>> = (5..9).map(matrix).collect();

        let [mut a, mut b, mut c, mut e] = std::array::from_fn(|i| start[i].clone());
        pair_products(
            &pairs,
            &delta,
            sources.each_ref().map(|m| &m[..]),
            [&mut a, &mut b, &mut c, &mut e],
            d,
        );
        let [mut ga, mut gb, mut gc, mut ge] = std::array::from_fn(|i| start[i].clone());
        pair_products_kernel(
            &pairs,
            &delta,
            sources.each_ref().map(|m| &m[..]),
            [&mut ga, &mut gb, &mut gc, &mut ge],
            d,
        );
        assert_eq!([ga, gb, gc, ge], [a, b, c, e]);
    }
}
