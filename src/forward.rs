//! Forward pass, logistic loss and its sensitivities, shared by both engines.
//!
//! The output of the model depends on the weights only through the token readouts
//! `gamma = W_V^T W^T a` (length d) and the score correlations `S = W_K^T W_Q` (d x d, row =
//! key token, column = query token). For a sequence x_1..x_L,
//!
//! ```text
//! s_{l,h} = S[x_h, x_l] / sqrt(m),   p_l = softmax_h(s_{l,.}),   r_h = sum_l p_{l,h},
//! F = sum_h r_h gamma[x_h].
//! ```
//!
//! A dataset only ever reads S at the (key, query) token pairs that co-occur in one of its
//! sequences, so [`PairIndex`] lists those pairs once and the engines supply S only there.
//! The sensitivities returned are
//!
//! ```text
//! c_i   = y_i g_i / n,  g_i = 1 / (1 + exp(y_i F_i))                (= -dL/dF_i)
//! rho_k = sum_i c_i sum_{h: x_h = k} r_h                              (= -dL/dgamma_k)
//! Delta[k, k'] = (1/sqrt m) sum_i c_i sum_{l,h: x_h = k, x_l = k'} p_{l,h} (G_h - gbar_l)
//!                                                                     (= -dL/dS[k, k'])
//! ```
//!
//! with `G_h = gamma[x_h]` and `gbar_l = sum_h p_{l,h} G_h`.

use std::collections::HashMap;

use wide::f64x4;

use crate::engine::PairList;
use crate::linalg::dispatch;
use crate::task::Dataset;

/// Samples evaluated side by side, one per vector lane of the forward pass.
const LANES: usize = 4;

/// The distinct (key token, query token) pairs of a dataset and, for every sample and
/// positions (l, h), the index of pair (x_h, x_l).
#[derive(Clone, Debug)]
pub struct PairIndex {
    /// Distinct pairs as (key token, query token).
    pub pairs: PairList,
    /// Pair indices of blocks of [`LANES`] samples: entry (b L + l) L + h contains, in lane j,
    /// the index in `pairs` of (x_h, x_l) of sample LANES b + j. The lanes after the last
    /// sample repeat sample 0 and are ignored.
    block_pairs: Vec<[u32; LANES]>,
    /// Tokens of the same blocks: entry b L + h contains x_h of sample LANES b + j in lane j.
    block_tokens: Vec<[u32; LANES]>,
}

impl PairIndex {
    pub fn new(data: &Dataset) -> PairIndex {
        let seq_len = data.seq_len;
        let mut lookup: HashMap<(usize, usize), u32> = HashMap::new();
        let mut pairs = Vec::new();
        let mut sample_pairs = Vec::with_capacity(data.len() * seq_len * seq_len);
        for i in 0..data.len() {
            let x = data.sample(i);
            for &query in x {
                for &key in x {
                    let next = pairs.len() as u32;
                    let id = *lookup.entry((key, query)).or_insert(next);
                    if id == next {
                        pairs.push((key, query));
                    }
                    sample_pairs.push(id);
                }
            }
        }

        let blocks = data.len().div_ceil(LANES);
        let positions = seq_len * seq_len;
        let mut block_pairs = vec![[0; LANES]; blocks * positions];
        let mut block_tokens = vec![[0; LANES]; blocks * seq_len];
        for block in 0..blocks {
            for lane in 0..LANES {
                let i = LANES * block + lane;
                let i = if i < data.len() { i } else { 0 };
                let ids = &sample_pairs[i * positions..][..positions];
                for (entry, &id) in block_pairs[block * positions..].iter_mut().zip(ids) {
                    entry[lane] = id;
                }
                for (entry, &token) in block_tokens[block * seq_len..]
                    .iter_mut()
                    .zip(data.sample(i))
                {
                    entry[lane] = token as u32;
                }
            }
        }
        PairIndex {
            pairs: pairs.into(),
            block_pairs,
            block_tokens,
        }
    }

    /// Index in `pairs` of (x_h, x_l) of sample i, for sequences of length `seq_len`.
    #[cfg(test)]
    fn sample_pair(&self, seq_len: usize, i: usize, l: usize, h: usize) -> usize {
        let entry = ((i / LANES) * seq_len + l) * seq_len + h;
        self.block_pairs[entry][i % LANES] as usize
    }
}

/// Numerically stable `log(1 + exp(z))`.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Numerically stable `1 / (1 + exp(-z))`.
pub fn logistic(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Row sums below this fall back to [`shifted_row_exp`]. A row whose sum is at least this
/// has its largest term at least 1e-200 / L, so terms that underflowed to subnormals or zero
/// are below 1e-100 of it and their lost digits are far below rounding.
const MIN_ROW_SUM: f64 = 1e-200;

/// Writes `pair_exp[p] = exp(s_p - shift[q])` for every pair p = (key, q), where s_p is the
/// scaled score and shift[q] the largest scaled score of any pair with query token q.
///
/// Every attention row has one query token, so its softmax is these exponentials divided by
/// their row sum: one exponential per distinct pair instead of one per position. No term
/// exceeds 1, so none overflows, but a row whose largest score is far below its query's
/// largest can underflow and then goes through [`shifted_row_exp`]. Four exponentials at a
/// time go through `wide`'s vectorized exp, which agrees with the scalar `f64::exp` to a
/// few units in the last place (checked in the tests). It returns 0 for arguments below
/// about -708, where the scalar one returns subnormal numbers.
#[inline(always)]
fn pair_exponentials(index: &PairIndex, scores: &[f64], scale: f64, out: &mut Evaluation) {
    out.query_shift
        .iter_mut()
        .for_each(|v| *v = f64::NEG_INFINITY);
    for (&(_, query), &score) in index.pairs.iter().zip(scores) {
        let shift = &mut out.query_shift[query];
        *shift = shift.max(score * scale);
    }
    let shifts = &out.query_shift;
    let shift_of = |p: usize| shifts[index.pairs[p].1];
    let done = out.pair_exp.len() / 4 * 4;
    let mut blocks = out.pair_exp.chunks_exact_mut(4);
    for (block_index, block) in (&mut blocks).enumerate() {
        let start = 4 * block_index;
        let block_scores: &[f64; 4] = scores[start..start + 4].try_into().expect("4 scores");
        let shift = [
            shift_of(start),
            shift_of(start + 1),
            shift_of(start + 2),
            shift_of(start + 3),
        ];
        block.copy_from_slice(&shifted_exp(*block_scores, scale, shift));
    }
    // The last one to three pairs go through the same lanes, padded with zero arguments.
    let remainder = blocks.into_remainder();
    if !remainder.is_empty() {
        let mut block_scores = [0.0; 4];
        let mut shift = [0.0; 4];
        for j in 0..remainder.len() {
            block_scores[j] = scores[done + j];
            shift[j] = shift_of(done + j);
        }
        let values = shifted_exp(block_scores, scale, shift);
        remainder.copy_from_slice(&values[..remainder.len()]);
    }
}

/// Returns exp(score scale - shift) on four lanes.
///
/// The difference can be several hundred, and its rounding error (up to about 3e-14) would
/// pass unchanged into the relative error of its exponential. So its exact rounding error
/// (TwoSum) is computed too and each exponential multiplied by 1 + error, which makes a row
/// far below its query's shift as accurate as a row shifted by its own maximum.
#[inline(always)]
fn shifted_exp(scores: [f64; 4], scale: f64, shift: [f64; 4]) -> [f64; 4] {
    let scaled = f64x4::from(scores) * f64x4::splat(scale);
    let shift = f64x4::from(shift);
    let difference = scaled - shift;
    let shift_part = difference - scaled;
    let scaled_part = difference - shift_part;
    let error = (scaled - scaled_part) + (-shift - shift_part);
    let exp = difference.exp();
    let mut values = exp.mul_add(error, exp).to_array();
    // wide's exp returns 0 for non-finite arguments, where NaN must stay NaN, and the error
    // of a non-finite difference is NaN. The error is NaN exactly when the difference is
    // not finite, so one test covers the four lanes.
    if error.is_nan().any() {
        for (value, argument) in values.iter_mut().zip(difference.to_array()) {
            if !argument.is_finite() {
                *value = argument.exp();
            }
        }
    }
    values
}

/// Returns whether a row with this sum of pair exponentials goes through
/// [`shifted_row_exp`]. A NaN sum does too, and stays NaN.
fn needs_row_shift(sum: f64) -> bool {
    sum < MIN_ROW_SUM || sum.is_nan()
}

/// Fills lane `lane` of the attention row `row` with exp(s_h - max_h s_h) from the scores of
/// the row's pairs and returns its sum, at least 1.
fn shifted_row_exp(
    row: &mut [[f64; LANES]],
    row_ids: &[[u32; LANES]],
    lane: usize,
    scores: &[f64],
    scale: f64,
) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for (p, ids) in row.iter_mut().zip(row_ids) {
        p[lane] = scores[ids[lane] as usize] * scale;
        max = max.max(p[lane]);
    }
    let mut sum = 0.0;
    for p in row.iter_mut() {
        p[lane] = (p[lane] - max).exp();
        sum += p[lane];
    }
    sum
}

/// Results of one forward pass over a dataset, with reusable buffers.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Outputs F_i, length n.
    pub outputs: Vec<f64>,
    /// Gradient weights g_i = 1 / (1 + exp(y_i F_i)), length n.
    pub g: Vec<f64>,
    /// Margins y_i F_i, length n.
    margins: Vec<f64>,
    /// -dL/dgamma, length d. Filled only when sensitivities are requested.
    pub rho: Vec<f64>,
    /// -dL/dS at each pair of the [`PairIndex`]. Filled only when sensitivities are requested.
    pub delta: Vec<f64>,
    /// Scratch for one block of samples, one per lane, filled by [`forward_block`].
    block: Block,
    /// exp(s_p - shift) for each pair of the [`PairIndex`]; see [`pair_exponentials`].
    pair_exp: Vec<f64>,
    /// Largest scaled score per query token, length d.
    query_shift: Vec<f64>,
}

/// The forward pass of one block of [`LANES`] samples, one sample per lane.
#[derive(Clone, Debug)]
struct Block {
    /// Attention p_{l,h} at entry l L + h.
    attention: Vec<[f64; LANES]>,
    /// r_h = sum_l p_{l,h}, length L.
    received: Vec<[f64; LANES]>,
    /// gbar_l = sum_h p_{l,h} gamma[x_h], length L.
    mean_readout: Vec<[f64; LANES]>,
    /// gamma[x_h], length L.
    position_readout: Vec<[f64; LANES]>,
    /// Outputs F.
    outputs: [f64; LANES],
    /// Each sample's terms of Delta at entry l L + h, written by [`Block::delta_terms`].
    terms: Vec<[f64; LANES]>,
}

impl Evaluation {
    pub fn new(data: &Dataset, index: &PairIndex) -> Evaluation {
        let seq_len = data.seq_len;
        Evaluation {
            outputs: vec![0.0; data.len()],
            g: vec![0.0; data.len()],
            margins: vec![0.0; data.len()],
            rho: vec![0.0; data.vocab_size],
            delta: vec![0.0; index.pairs.len()],
            block: Block {
                attention: vec![[0.0; LANES]; seq_len * seq_len],
                received: vec![[0.0; LANES]; seq_len],
                mean_readout: vec![[0.0; LANES]; seq_len],
                position_readout: vec![[0.0; LANES]; seq_len],
                outputs: [0.0; LANES],
                terms: vec![[0.0; LANES]; seq_len * seq_len],
            },
            pair_exp: vec![0.0; index.pairs.len()],
            query_shift: vec![0.0; data.vocab_size],
        }
    }

    /// Margins y_i F_i.
    pub fn margins(&self) -> &[f64] {
        &self.margins
    }

    /// Smallest margin min_i y_i F_i, or +inf for no samples.
    pub fn min_margin(&self) -> f64 {
        self.margins.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Logistic loss log(1 + exp(-y_i F_i)) of sample i.
    pub fn sample_loss(&self, i: usize) -> f64 {
        softplus(-self.margins[i])
    }

    /// Mean logistic loss (1/n) sum_i log(1 + exp(-y_i F_i)), computed from the margins on
    /// each call, so that evaluations that need only the gradient skip its logarithms.
    pub fn loss(&self) -> f64 {
        let total: f64 = self.margins.iter().map(|&margin| softplus(-margin)).sum();
        total / self.margins.len() as f64
    }
}

/// Runs the forward pass over `data` and, if `sensitivities` is set, accumulates `rho` and
/// `delta`.
///
/// `gamma` has length d; `scores` contains S at each pair of `index` (unscaled); `width` is m.
pub fn evaluate(
    data: &Dataset,
    index: &PairIndex,
    gamma: &[f64],
    scores: &[f64],
    width: f64,
    sensitivities: bool,
    out: &mut Evaluation,
) {
    let scale = 1.0 / width.sqrt();
    if sensitivities {
        out.rho.iter_mut().for_each(|v| *v = 0.0);
        out.delta.iter_mut().for_each(|v| *v = 0.0);
    }
    let pass = &Pass {
        data,
        index,
        gamma,
        scores,
        scale,
        sensitivities,
    };
    dispatch!(evaluate_kernel, evaluate_avx2, (pass: &Pass, out: &mut Evaluation) -> ());
}

/// The inputs of one [`evaluate`] call.
struct Pass<'a> {
    data: &'a Dataset,
    index: &'a PairIndex,
    gamma: &'a [f64],
    scores: &'a [f64],
    scale: f64,
    sensitivities: bool,
}

/// Runs [`evaluate`]: the pair exponentials, then the samples block by block.
///
/// Each sample receives the same operations in the same order as in a loop over one sample
/// at a time. rho and Delta receive their terms sample by sample, so the results do not
/// depend on the block size or the vector width.
#[inline(always)]
fn evaluate_kernel(pass: &Pass, out: &mut Evaluation) {
    let &Pass {
        data,
        index,
        gamma,
        scores,
        scale,
        sensitivities,
    } = pass;
    pair_exponentials(index, scores, scale, out);
    let seq_len = data.seq_len;
    let n = data.len();
    let positions = seq_len * seq_len;
    let blocks = index
        .block_pairs
        .chunks_exact(positions)
        .zip(index.block_tokens.chunks_exact(seq_len));
    for (b, (ids, tokens)) in blocks.enumerate() {
        forward_block(
            ids,
            tokens,
            gamma,
            scores,
            &out.pair_exp,
            scale,
            &mut out.block,
        );
        let lanes = LANES.min(n - LANES * b);
        let mut c_scaled = [0.0; LANES];
        for lane in 0..lanes {
            let i = LANES * b + lane;
            let y = data.labels[i];
            let output = out.block.outputs[lane];
            out.outputs[i] = output;
            let margin = output * y;
            out.margins[i] = margin;
            out.g[i] = logistic(-margin);
            if !sensitivities {
                continue;
            }

            // Back-propagate c_i = y g_i / n into rho here, and into Delta below.
            let c = y * out.g[i] / n as f64;
            for (token, total) in tokens.iter().zip(&out.block.received) {
                out.rho[token[lane] as usize] += c * total[lane];
            }
            c_scaled[lane] = c * scale;
        }
        if sensitivities {
            let block = &mut out.block;
            block.delta_terms(&c_scaled, seq_len);
            for lane in 0..lanes {
                for (term, id) in block.terms.iter().zip(ids) {
                    out.delta[id[lane] as usize] += term[lane];
                }
            }
        }
    }
}

impl Block {
    /// Writes c_scaled p_{l,h} (gamma[x_h] - gbar_l) into `terms` at entry l L + h, for
    /// sequences of length `seq_len`: each sample's terms of Delta.
    #[inline(always)]
    fn delta_terms(&mut self, c_scaled: &[f64; LANES], seq_len: usize) {
        let rows = self
            .attention
            .chunks_exact(seq_len)
            .zip(self.terms.chunks_exact_mut(seq_len))
            .zip(&self.mean_readout);
        for ((row, terms), mean) in rows {
            for ((p, term), readout) in row.iter().zip(terms).zip(&self.position_readout) {
                *term = std::array::from_fn(|lane| {
                    c_scaled[lane] * p[lane] * (readout[lane] - mean[lane])
                });
            }
        }
    }
}

/// Computes the attention rows p_l = softmax_h(s_{l,h}) of one block of samples from the
/// shifted exponentials of the pairs, what each key receives, the mean readout of each row
/// and the outputs.
#[inline(always)]
fn forward_block(
    ids: &[[u32; LANES]],
    tokens: &[[u32; LANES]],
    gamma: &[f64],
    scores: &[f64],
    pair_exp: &[f64],
    scale: f64,
    block: &mut Block,
) {
    let seq_len = tokens.len();
    for (readout, token) in block.position_readout.iter_mut().zip(tokens) {
        *readout = token.map(|t| gamma[t as usize]);
    }
    block.received.fill([0.0; LANES]);
    let rows = block
        .attention
        .chunks_exact_mut(seq_len)
        .zip(ids.chunks_exact(seq_len))
        .zip(block.mean_readout.iter_mut());
    for ((row, row_ids), mean_out) in rows {
        // Whole-array operations compile to vector instructions, where updates of one lane
        // at a time compiled to scalar stores.
        let mut sum = [0.0; LANES];
        for (p, id) in row.iter_mut().zip(row_ids) {
            *p = id.map(|id| pair_exp[id as usize]);
            sum = std::array::from_fn(|lane| sum[lane] + p[lane]);
        }
        if sum.iter().any(|&lane_sum| needs_row_shift(lane_sum)) {
            for (lane, lane_sum) in sum.iter_mut().enumerate() {
                if needs_row_shift(*lane_sum) {
                    *lane_sum = shifted_row_exp(row, row_ids, lane, scores, scale);
                }
            }
        }
        let inverse_sum: [f64; LANES] = std::array::from_fn(|lane| 1.0 / sum[lane]);
        let mut mean = [0.0; LANES];
        let terms = row
            .iter_mut()
            .zip(block.received.iter_mut())
            .zip(&block.position_readout);
        for ((p, total), readout) in terms {
            let scaled: [f64; LANES] = std::array::from_fn(|lane| p[lane] * inverse_sum[lane]);
            *p = scaled;
            *total = std::array::from_fn(|lane| total[lane] + scaled[lane]);
            mean = std::array::from_fn(|lane| mean[lane] + scaled[lane] * readout[lane]);
        }
        *mean_out = mean;
    }

    // F = sum_h r_h gamma[x_h], summed from -0.0 as `Iterator::sum` does.
    let mut outputs = [-0.0; LANES];
    for (total, readout) in block.received.iter().zip(&block.position_readout) {
        outputs = std::array::from_fn(|lane| outputs[lane] + total[lane] * readout[lane]);
    }
    block.outputs = outputs;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_extreme_arguments() {
        assert_eq!(softplus(1e4), 1e4);
        assert_eq!(softplus(-1e4), 0.0);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((softplus(-30.0) - (-30f64).exp()).abs() < 1e-25);
    }

    #[test]
    fn logistic_extreme_arguments() {
        assert_eq!(logistic(1e4), 1.0);
        assert_eq!(logistic(-1e4), 0.0);
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(-40.0) - (-40f64).exp()).abs() < 1e-30);
    }

    #[test]
    fn pair_index_covers_all_positions() {
        let data = Dataset::new(vec![0, 1, 2, 2, 5, 2], vec![1.0, -1.0], 3, 6).unwrap();
        let index = PairIndex::new(&data);
        for i in 0..2 {
            let x = data.sample(i);
            for l in 0..3 {
                for h in 0..3 {
                    let id = index.sample_pair(3, i, l, h);
                    assert_eq!(index.pairs[id], (x[h], x[l]));
                }
            }
        }
        // The second sample repeats (2, 2) four times, so it adds only (5,2), (2,5), (5,5).
        assert_eq!(index.pairs.len(), 9 + 3);
    }

    /// Softmax of one attention row computed directly, max-shifted.
    fn softmax(scores: &[f64]) -> Vec<f64> {
        let max = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    #[test]
    fn underflowing_rows_fall_back_to_row_shift() {
        // Both samples have a row with query token 2. The pairs with token 0 or 1 (only in
        // sample 0) get scaled scores near 900 and all others near -900. So in sample 1's
        // row of query 2, exp(s - 900) underflows, and the row must be shifted by its own
        // maximum.
        let data = Dataset::new(vec![0, 1, 2, 3, 4, 2], vec![1.0, -1.0], 3, 5).unwrap();
        let index = PairIndex::new(&data);
        let width: f64 = 4.0;
        let scaled = |key: usize, query: usize| {
            let base = if key < 2 || query < 2 { 900.0 } else { -900.0 };
            base + key as f64 - 0.5 * query as f64
        };
        let scores: Vec<f64> = index
            .pairs
            .iter()
            .map(|&(key, query)| scaled(key, query) * width.sqrt())
            .collect();
        let gamma = [0.3, -0.7, 1.1, 0.2, -0.4];
        let mut eval = Evaluation::new(&data, &index);
        evaluate(&data, &index, &gamma, &scores, width, true, &mut eval);

        for i in 0..2 {
            let x = data.sample(i);
            let mut expected = 0.0;
            for l in 0..3 {
                let row: Vec<f64> = x.iter().map(|&h| scaled(h, x[l])).collect();
                for (p, &h) in softmax(&row).iter().zip(x) {
                    expected += p * gamma[h];
                }
            }
            let output = eval.outputs[i];
            assert!(output.is_finite(), "sample {i}: output {output}");
            assert!(
                (output - expected).abs() <= 1e-14 * expected.abs().max(1.0),
                "sample {i}: output {output}, direct softmax gives {expected}"
            );
        }
    }

    #[test]
    fn rows_far_below_shift_stay_accurate() {
        // Key token 0 gives scaled scores of `gap` at query tokens 1 and 2 in sample 0.
        // Sample 1 has no token 0, so its row of query 2 lies about `gap` below that query's
        // shift. Its attention must still match a softmax shifted by the row's own maximum.
        let data = Dataset::new(vec![0, 1, 2, 3, 4, 2], vec![1.0, -1.0], 3, 5).unwrap();
        let index = PairIndex::new(&data);
        let gamma = [0.3, -0.7, 1.1, 0.2, -0.4];
        for gap in [1.0, 10.0, 100.0, 300.0, 460.0] {
            let scaled = |key: usize, query: usize| {
                if key == 0 {
                    gap
                } else {
                    0.1 * key as f64 + 0.01 * query as f64 + 0.123456789
                }
            };
            let scores: Vec<f64> = index.pairs.iter().map(|&(k, q)| scaled(k, q)).collect();
            let mut eval = Evaluation::new(&data, &index);
            evaluate(&data, &index, &gamma, &scores, 1.0, true, &mut eval);

            // The only block contains sample 1 in lane 1.
            let x = data.sample(1);
            for l in 0..3 {
                let row: Vec<f64> = x.iter().map(|&h| scaled(h, x[l])).collect();
                for (h, direct) in softmax(&row).into_iter().enumerate() {
                    let value = eval.block.attention[l * 3 + h][1];
                    assert!(
                        (value - direct).abs() <= 4.0 * f64::EPSILON * direct,
                        "gap {gap}, row {l}, position {h}: {value}, direct softmax {direct}"
                    );
                }
            }
        }
    }

    #[test]
    fn pair_exponentials_match_scalar_exp() {
        // 23 pairs, all with query token 0: five blocks of four and a remainder of three,
        // with arguments from 0 down to -887 (exp underflows below -745), and one NaN score
        // that must stay NaN.
        let tokens: Vec<usize> = (0..5).collect();
        let data = Dataset::new(tokens, vec![1.0], 5, 5).unwrap();
        let mut index = PairIndex::new(&data);
        index.pairs = (0..23).map(|p| (p % 5, 0)).collect();
        let mut scores: Vec<f64> = (0..23).map(|p| -(p as f64).powi(3) / 12.0).collect();
        scores[17] = f64::NAN;
        let mut eval = Evaluation::new(&data, &index);
        eval.pair_exp.resize(23, 0.0);
        pair_exponentials(&index, &scores, 1.0, &mut eval);

        for (p, &(_, query)) in index.pairs.iter().enumerate() {
            let argument = scores[p] - eval.query_shift[query];
            let (value, expected) = (eval.pair_exp[p], argument.exp());
            if p == 17 {
                assert!(value.is_nan(), "pair 17: {value} for a NaN score");
            } else if expected < 1e-300 {
                assert!(
                    value < 1e-300,
                    "pair {p}: {value} where exp gives {expected}"
                );
            } else {
                assert!(
                    (value - expected).abs() <= 4.0 * f64::EPSILON * expected,
                    "pair {p}: {value} where exp({argument}) = {expected}"
                );
            }
        }
    }

    /// Outputs, loss, rho and Delta of one sample at a time, from the formulas of the
    /// module documentation with a max-shifted softmax per row.
    fn reference(data: &Dataset, gamma: &[f64], score: impl Fn(usize, usize) -> f64) -> Reference {
        let n = data.len();
        let mut result = Reference {
            outputs: Vec::new(),
            loss: 0.0,
            rho: vec![0.0; data.vocab_size],
            delta: HashMap::new(),
        };
        for i in 0..n {
            let x = data.sample(i);
            let rows: Vec<Vec<f64>> = x
                .iter()
                .map(|&query| softmax(&x.iter().map(|&key| score(key, query)).collect::<Vec<_>>()))
                .collect();
            let received: Vec<f64> = (0..x.len())
                .map(|h| rows.iter().map(|row| row[h]).sum())
                .collect();
            let output: f64 = received
                .iter()
                .zip(x)
                .map(|(r, &token)| r * gamma[token])
                .sum();
            let y = data.labels[i];
            result.outputs.push(output);
            result.loss += softplus(-y * output) / n as f64;

            let c = y * logistic(-y * output) / n as f64;
            for (&token, total) in x.iter().zip(&received) {
                result.rho[token] += c * total;
            }
            for (l, row) in rows.iter().enumerate() {
                let mean: f64 = row.iter().zip(x).map(|(p, &token)| p * gamma[token]).sum();
                for (h, p) in row.iter().enumerate() {
                    *result.delta.entry((x[h], x[l])).or_insert(0.0) +=
                        c * p * (gamma[x[h]] - mean);
                }
            }
        }
        result
    }

    struct Reference {
        outputs: Vec<f64>,
        loss: f64,
        rho: Vec<f64>,
        /// -dL/dS by (key, query) pair, without the 1/sqrt(m) factor.
        delta: HashMap<(usize, usize), f64>,
    }

    /// Seven samples of length 3 over 8 tokens: one full block of four and three in the
    /// second block, so one lane of the second block is padding and must not reach any
    /// result.
    fn seven_samples() -> Dataset {
        let tokens = vec![
            2, 0, 1, 5, 2, 3, 4, 2, 0, 1, 0, 2, 2, 6, 3, 0, 2, 1, 7, 2, 5,
        ];
        let labels = vec![1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
        Dataset::new(tokens, labels, 3, 8).unwrap()
    }

    #[test]
    fn partial_block_matches_reference() {
        let data = seven_samples();
        let index = PairIndex::new(&data);
        let width: f64 = 9.0;
        let score = |key: usize, query: usize| ((key * 7 + query * 3) % 11) as f64 * 0.4 - 2.0;
        let scores: Vec<f64> = index.pairs.iter().map(|&(k, q)| score(k, q)).collect();
        let gamma = [0.3, -0.7, 1.1, 0.2, -0.4, 0.9, -1.3, 0.05];
        let mut eval = Evaluation::new(&data, &index);
        evaluate(&data, &index, &gamma, &scores, width, true, &mut eval);

        let expected = reference(&data, &gamma, |k, q| score(k, q) / width.sqrt());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * b.abs().max(1.0);
        for (i, (&output, &direct)) in eval.outputs.iter().zip(&expected.outputs).enumerate() {
            assert!(
                close(output, direct),
                "sample {i}: output {output}, reference {direct}"
            );
        }
        assert!(
            close(eval.loss(), expected.loss),
            "loss {} against {}",
            eval.loss(),
            expected.loss
        );
        for (token, (&value, &direct)) in eval.rho.iter().zip(&expected.rho).enumerate() {
            assert!(
                close(value, direct),
                "rho[{token}] = {value}, reference {direct}"
            );
        }
        for (p, &pair) in index.pairs.iter().enumerate() {
            let direct = expected.delta[&pair] / width.sqrt();
            let value = eval.delta[p];
            assert!(
                close(value, direct),
                "Delta at {pair:?} = {value}, reference {direct}"
            );
        }
    }

    #[test]
    fn generic_kernel_matches_dispatched() {
        let data = seven_samples();
        let index = PairIndex::new(&data);
        let scores: Vec<f64> = (0..index.pairs.len())
            .map(|p| ((p * 37 % 23) as f64 - 11.0) * 0.37)
            .collect();
        let gamma = [0.3, -0.7, 1.1, 0.2, -0.4, 0.9, -1.3, 0.05];
        let mut dispatched = Evaluation::new(&data, &index);
        evaluate(&data, &index, &gamma, &scores, 5.0, true, &mut dispatched);

        let mut generic = Evaluation::new(&data, &index);
        let scale = 1.0 / 5f64.sqrt();
        let pass = Pass {
            data: &data,
            index: &index,
            gamma: &gamma,
            scores: &scores,
            scale,
            sensitivities: true,
        };
        evaluate_kernel(&pass, &mut generic);
        assert_eq!(generic.outputs, dispatched.outputs);
        assert_eq!(generic.loss(), dispatched.loss());
        assert_eq!(generic.rho, dispatched.rho);
        assert_eq!(generic.delta, dispatched.delta);
    }

    #[test]
    fn uniform_attention_output() {
        // With all scores zero every p_{l,h} = 1/L, so r_h = 1 and F = sum_h gamma[x_h].
        let data = Dataset::new(vec![0, 1, 2], vec![1.0], 3, 4).unwrap();
        let index = PairIndex::new(&data);
        let gamma = [0.5, -0.25, 2.0, 7.0];
        let scores = vec![0.0; index.pairs.len()];
        let mut eval = Evaluation::new(&data, &index);
        evaluate(&data, &index, &gamma, &scores, 16.0, true, &mut eval);
        assert!((eval.outputs[0] - 2.25).abs() < 1e-15);
        assert!((eval.loss() - softplus(-2.25)).abs() < 1e-15);
        assert!((eval.rho[0] - logistic(-2.25)).abs() < 1e-15);
        assert_eq!(eval.rho[3], 0.0);
    }
}
