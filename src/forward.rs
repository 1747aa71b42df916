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
use crate::task::Dataset;

/// The distinct (key token, query token) pairs of a dataset and, for every sample i and
/// positions (l, h), the index of pair (x_h, x_l).
#[derive(Clone, Debug)]
pub struct PairIndex {
    /// Distinct pairs as (key token, query token).
    pub pairs: PairList,
    /// Shape (n, L, L): entry [i][l][h] is the index in `pairs` of (x_h, x_l).
    pub sample_pairs: Vec<u32>,
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
        PairIndex {
            pairs: pairs.into(),
            sample_pairs,
        }
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

/// Both `softplus(z)` and `logistic(z)` from one exponential, with the same bits as the two
/// functions.
fn softplus_and_logistic(z: f64) -> (f64, f64) {
    let e = (-z.abs()).exp();
    let softplus = z.max(0.0) + e.ln_1p();
    let logistic = if z >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (softplus, logistic)
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
fn shifted_exp(scores: [f64; 4], scale: f64, shift: [f64; 4]) -> [f64; 4] {
    let scaled = f64x4::from(scores) * f64x4::splat(scale);
    let shift = f64x4::from(shift);
    let difference = scaled - shift;
    let shift_part = difference - scaled;
    let scaled_part = difference - shift_part;
    let error = (scaled - scaled_part) + (-shift - shift_part);
    let exp = difference.exp();
    let mut values = exp.mul_add(error, exp).to_array();
    for (value, argument) in values.iter_mut().zip(difference.to_array()) {
        // wide's exp returns 0 for non-finite arguments, where NaN must stay NaN, and the
        // error of a non-finite difference is NaN.
        if !argument.is_finite() {
            *value = argument.exp();
        }
    }
    values
}

/// Fills `row` with exp(s_h - max_h s_h) from the scores of the row's pairs and returns its
/// sum, at least 1.
fn shifted_row_exp(row: &mut [f64], row_ids: &[u32], scores: &[f64], scale: f64) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for (p, &id) in row.iter_mut().zip(row_ids) {
        *p = scores[id as usize] * scale;
        max = max.max(*p);
    }
    let mut sum = 0.0;
    for p in row.iter_mut() {
        *p = (*p - max).exp();
        sum += *p;
    }
    sum
}

/// Results of one forward pass over a dataset, with reusable buffers.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Mean logistic loss (1/n) sum_i log(1 + exp(-y_i F_i)).
    pub loss: f64,
    /// Outputs F_i, length n.
    pub outputs: Vec<f64>,
    /// Gradient weights g_i = 1 / (1 + exp(y_i F_i)), length n.
    pub g: Vec<f64>,
    /// Per-sample losses log(1 + exp(-y_i F_i)), length n.
    pub sample_loss: Vec<f64>,
    /// -dL/dgamma, length d. Filled only when sensitivities are requested.
    pub rho: Vec<f64>,
    /// -dL/dS at each pair of the [`PairIndex`]. Filled only when sensitivities are requested.
    pub delta: Vec<f64>,
    attention: Vec<f64>,
    received: Vec<f64>,
    mean_readout: Vec<f64>,
    /// gamma[x_h] at each position h of the current sample.
    position_readout: Vec<f64>,
    /// exp(s_p - shift) for each pair of the [`PairIndex`]; see [`pair_exponentials`].
    pair_exp: Vec<f64>,
    /// Largest scaled score per query token, length d.
    query_shift: Vec<f64>,
}

impl Evaluation {
    pub fn new(data: &Dataset, index: &PairIndex) -> Evaluation {
        let seq_len = data.seq_len;
        Evaluation {
            loss: 0.0,
            outputs: vec![0.0; data.len()],
            g: vec![0.0; data.len()],
            sample_loss: vec![0.0; data.len()],
            rho: vec![0.0; data.vocab_size],
            delta: vec![0.0; index.pairs.len()],
            attention: vec![0.0; seq_len * seq_len],
            received: vec![0.0; seq_len],
            mean_readout: vec![0.0; seq_len],
            position_readout: vec![0.0; seq_len],
            pair_exp: vec![0.0; index.pairs.len()],
            query_shift: vec![0.0; data.vocab_size],
        }
    }

    /// Margins y_i F_i.
    pub fn margins<'a>(&'a self, data: &'a Dataset) -> impl Iterator<Item = f64> + 'a {
        self.outputs.iter().zip(&data.labels).map(|(f, y)| f * y)
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
    let seq_len = data.seq_len;
    let n = data.len();
    let scale = 1.0 / width.sqrt();
    if sensitivities {
        out.rho.iter_mut().for_each(|v| *v = 0.0);
        out.delta.iter_mut().for_each(|v| *v = 0.0);
    }
    let mut total_loss = 0.0;
    pair_exponentials(index, scores, scale, out);

    let Evaluation {
        outputs,
        g,
        sample_loss,
        rho,
        delta,
        attention,
        received,
        mean_readout,
        position_readout,
        pair_exp,
        ..
    } = out;
    let samples = data
        .tokens
        .chunks_exact(seq_len)
        .zip(index.sample_pairs.chunks_exact(seq_len * seq_len))
        .zip(&data.labels);
    for (i, ((x, ids), &y)) in samples.enumerate() {
        for (readout, &token) in position_readout.iter_mut().zip(x) {
            *readout = gamma[token];
        }

        // Attention rows p_l = softmax_h(s_{l,h}) from the shifted exponentials of the
        // pairs, and what each key receives.
        received.iter_mut().for_each(|v| *v = 0.0);
        let rows = attention
            .chunks_exact_mut(seq_len)
            .zip(ids.chunks_exact(seq_len));
        for ((row, row_ids), mean_out) in rows.zip(mean_readout.iter_mut()) {
            let mut sum = 0.0;
            for (p, &id) in row.iter_mut().zip(row_ids) {
                *p = pair_exp[id as usize];
                sum += *p;
            }
            // A NaN sum also takes this branch and stays NaN.
            if sum < MIN_ROW_SUM || sum.is_nan() {
                sum = shifted_row_exp(row, row_ids, scores, scale);
            }
            let inverse_sum = 1.0 / sum;
            let mut mean = 0.0;
            for ((p, total), &readout) in row
                .iter_mut()
                .zip(received.iter_mut())
                .zip(&*position_readout)
            {
                *p *= inverse_sum;
                *total += *p;
                mean += *p * readout;
            }
            *mean_out = mean;
        }

        // Output, loss and gradient weight of the sample.
        let output: f64 = received
            .iter()
            .zip(&*position_readout)
            .map(|(r, readout)| r * readout)
            .sum();
        let margin = y * output;
        outputs[i] = output;
        (sample_loss[i], g[i]) = softplus_and_logistic(-margin);
        total_loss += sample_loss[i];

        if !sensitivities {
            continue;
        }

        // Back-propagate c_i = y g_i / n into rho and Delta.
        let c = y * g[i] / n as f64;
        for (&token, &total) in x.iter().zip(&*received) {
            rho[token] += c * total;
        }
        let c_scaled = c * scale;
        let rows = attention
            .chunks_exact(seq_len)
            .zip(ids.chunks_exact(seq_len));
        for ((row, row_ids), &mean) in rows.zip(&*mean_readout) {
            for ((&p, &id), &readout) in row.iter().zip(row_ids).zip(&*position_readout) {
                delta[id as usize] += c_scaled * p * (readout - mean);
            }
        }
    }
    out.loss = total_loss / n as f64;
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
        assert_eq!(index.sample_pairs.len(), 2 * 9);
        for i in 0..2 {
            let x = data.sample(i);
            for l in 0..3 {
                for h in 0..3 {
                    let id = index.sample_pairs[i * 9 + l * 3 + h] as usize;
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

            // `attention` contains the rows of the last sample.
            let x = data.sample(1);
            for l in 0..3 {
                let row: Vec<f64> = x.iter().map(|&h| scaled(h, x[l])).collect();
                for (h, direct) in softmax(&row).into_iter().enumerate() {
                    let value = eval.attention[l * 3 + h];
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
        assert!((eval.loss - softplus(-2.25)).abs() < 1e-15);
        assert!((eval.rho[0] - logistic(-2.25)).abs() < 1e-15);
        assert_eq!(eval.rho[3], 0.0);
    }
}
