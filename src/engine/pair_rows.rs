//! Key and query increments of the parameter engine as sparse-times-dense products.
//!
//! With Delta non-zero only at the training pairs (key k, query k'), the increments
//!
//! ```text
//! dW_K^T[k, :]  += Delta[k, k'] W_Q^T[k', :]     dW_Q^T[k', :] += Delta[k, k'] W_K^T[k, :]
//! ```
//!
//! are summed per target row. Visiting the pairs grouped by target row (in their original
//! order within a row) keeps a tile of the row in registers while all its terms are added,
//! instead of loading and storing the row once per pair. Each entry receives the same terms
//! in the same order as the pair-by-pair loop, so the results are bit-identical to it.

use crate::linalg::dispatch;

/// Columns of a row tile held in registers (eight AVX2 registers).
const TILE: usize = 32;

/// The pairs of a dataset grouped by key row and by query row.
pub struct PairRows {
    /// Pair indices sorted by key, stable, so pairs of one key keep their order.
    by_key: Vec<u32>,
    /// Pair indices sorted by query, stable.
    by_query: Vec<u32>,
    /// The pair list these orders were built for.
    pairs: Vec<(usize, usize)>,
}

impl PairRows {
    pub fn new(pairs: &[(usize, usize)]) -> PairRows {
        let mut by_key: Vec<u32> = (0..pairs.len() as u32).collect();
        let mut by_query = by_key.clone();
        by_key.sort_by_key(|&p| pairs[p as usize].0);
        by_query.sort_by_key(|&p| pairs[p as usize].1);
        PairRows {
            by_key,
            by_query,
            pairs: pairs.to_vec(),
        }
    }

    /// Whether these orders were built for `pairs`.
    pub fn matches(&self, pairs: &[(usize, usize)]) -> bool {
        self.pairs == pairs
    }

    /// Adds the key increments to `d_keys` and the query increments to `d_queries` (both
    /// token-major d x m), reading `keys` and `queries` (token-major d x m).
    pub fn accumulate(
        &self,
        delta: &[f64],
        keys: &[f64],
        queries: &[f64],
        d_keys: &mut [f64],
        d_queries: &mut [f64],
        m: usize,
    ) {
        let pairs = &self.pairs;
        add_rows(&self.by_key, pairs, Side::Key, delta, queries, d_keys, m);
        add_rows(
            &self.by_query,
            pairs,
            Side::Query,
            delta,
            keys,
            d_queries,
            m,
        );
    }
}

/// Token of a pair that names the target row. The other token names the source row.
#[derive(Clone, Copy)]
enum Side {
    Key,
    Query,
}

impl Side {
    /// (target token, source token) of a pair.
    #[inline(always)]
    fn split(self, (key, query): (usize, usize)) -> (usize, usize) {
        match self {
            Side::Key => (key, query),
            Side::Query => (query, key),
        }
    }
}

/// For each pair p in `order` (grouped by target row): row target(p) of `out` gains
/// delta[p] times row source(p) of `rows`.
fn add_rows(
    order: &[u32],
    pairs: &[(usize, usize)],
    side: Side,
    delta: &[f64],
    rows: &[f64],
    out: &mut [f64],
    m: usize,
) {
    dispatch!(add_rows_kernel, add_rows_avx2, (order: &[u32], pairs: &[(usize, usize)], side: Side, delta: &[f64], rows: &[f64], out: &mut [f64], m: usize) -> ());
}

#[inline(always)]
fn add_rows_kernel(
    order: &[u32],
    pairs: &[(usize, usize)],
    side: Side,
    delta: &[f64],
    rows: &[f64],
    out: &mut [f64],
    m: usize,
) {
    let target = |p: u32| side.split(pairs[p as usize]).0;
    let tiles = m / TILE * TILE;
    let mut start = 0;
    while start < order.len() {
        let row = target(order[start]);
        let length = order[start..]
            .iter()
            .take_while(|&&p| target(p) == row)
            .count();
        let run = &order[start..start + length];
        let out_row = &mut out[row * m..(row + 1) * m];

        // Pairs with Delta = 0 add nothing; the pair-by-pair loop skips them too.
        for column in (0..tiles).step_by(TILE) {
            let mut tile = [0.0; TILE];
            tile.copy_from_slice(&out_row[column..column + TILE]);
            for &p in run {
                let weight = delta[p as usize];
                if weight == 0.0 {
                    continue;
                }
                let offset = side.split(pairs[p as usize]).1 * m + column;
                for (acc, &x) in tile.iter_mut().zip(&rows[offset..offset + TILE]) {
                    *acc += weight * x;
                }
            }
            out_row[column..column + TILE].copy_from_slice(&tile);
        }
        for &p in run {
            let weight = delta[p as usize];
            if weight == 0.0 {
                continue;
            }
            let offset = side.split(pairs[p as usize]).1 * m;
            for (acc, &x) in out_row[tiles..]
                .iter_mut()
                .zip(&rows[offset + tiles..offset + m])
            {
                *acc += weight * x;
            }
        }
        start += length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::axpy;

    #[test]
    fn matches_pair_by_pair_loop() {
        // m = 70 has two full tiles and a partial one; d = 6; pair 3 has Delta = 0 and
        // pair (1, 4) repeats, so both the skip and the per-row order matter.
        let (d, m) = (6, 70);
        let pairs = vec![
            (1, 4),
            (0, 0),
            (5, 1),
            (2, 2),
            (1, 3),
            (5, 4),
            (1, 4),
            (0, 5),
        ];
        let delta = [0.3, -1.7, 2.2, 0.0, 1e-3, -0.4, 0.9, 5.5];
        let value = |i: usize| ((i * 37 % 101) as f64 - 50.0) / 7.0;
        let keys: Vec<f64> = (0..d * m).map(value).collect();
        let queries: Vec<f64> = (0..d * m).map(|i| value(i + 13)).collect();
        let start: Vec<f64> = (0..d * m).map(|i| value(i + 29) * 1e-3).collect();

        let (mut expected_keys, mut expected_queries) = (start.clone(), start.clone());
        for (&(key, query), &weight) in pairs.iter().zip(&delta) {
            if weight == 0.0 {
                continue;
            }
            let q_row = &queries[query * m..][..m];
            axpy(weight, q_row, &mut expected_keys[key * m..][..m]);
            let k_row = &keys[key * m..][..m];
            axpy(weight, k_row, &mut expected_queries[query * m..][..m]);
        }

        let rows = PairRows::new(&pairs);
        assert!(rows.matches(&pairs));
        let (mut d_keys, mut d_queries) = (start.clone(), start);
        rows.accumulate(&delta, &keys, &queries, &mut d_keys, &mut d_queries, m);
        assert_eq!(d_keys, expected_keys);
        assert_eq!(d_queries, expected_queries);
    }
}
