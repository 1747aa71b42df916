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
//! instead of loading and storing the row once per pair. The columns are swept in panels of
//! one tile width across all rows, so the source rows of a panel (d x 32 doubles, 16 KiB at
//! d = 64) can stay in the L1 cache while every target row reads them. Each panel is first
//! packed into a contiguous buffer, because the rows are m doubles apart, often a power of
//! two, and their tiles would otherwise fall into a few cache sets. Both blocks' panels are
//! packed before either changes, so a gradient-descent step can update keys and queries in
//! place while every term reads the rows from before the step. Each entry receives the same
//! terms in the same order as the pair-by-pair loop, so the results are bit-identical to it.
//!
//! The scores S at the pairs are dot products of a key row and a query row. Grouped by key
//! row, several of them share each load of the key row.

use super::PairList;
use crate::linalg::{dispatch, dot_kernel, finish_dot};

/// Columns of a row tile held in registers (eight AVX2 registers).
const TILE: usize = 32;

/// The pairs of a dataset grouped by key row and by query row.
pub struct PairRows {
    /// Key increments: target = key row, source = query row.
    keys: SideRows,
    /// Query increments: target = query row, source = key row.
    queries: SideRows,
    /// The pair list these orders were built for.
    pairs: PairList,
    /// One column panel of the key rows and one of the query rows, packed contiguously;
    /// scratch.
    panels: Vec<f64>,
}

/// The terms of one side's increments, grouped by target row.
struct SideRows {
    /// (target row, range of `terms`) for each target row that receives terms.
    runs: Vec<(usize, std::ops::Range<usize>)>,
    /// (pair index, source row), grouped by target row, in pair order within a row.
    terms: Vec<(u32, u32)>,
}

impl SideRows {
    /// Groups the pairs by `target` with a stable sort, so pairs of one row keep their order.
    fn new(pairs: &[(usize, usize)], split: impl Fn((usize, usize)) -> (usize, usize)) -> Self {
        let mut order: Vec<u32> = (0..pairs.len() as u32).collect();
        order.sort_by_key(|&p| split(pairs[p as usize]).0);
        let mut runs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        let mut terms = Vec::with_capacity(order.len());
        for (position, &p) in order.iter().enumerate() {
            let (target, source) = split(pairs[p as usize]);
            match runs.last_mut() {
                Some((row, range)) if *row == target => range.end = position + 1,
                _ => runs.push((target, position..position + 1)),
            }
            terms.push((p, source as u32));
        }
        SideRows { runs, terms }
    }

    /// Sets to zero the rows of `out` (rows of m entries) that receive no terms.
    fn clear_idle_rows(&self, out: &mut [f64], m: usize) {
        let mut next = 0;
        for &(row, _) in &self.runs {
            out[next * m..row * m].fill(0.0);
            next = row + 1;
        }
        out[next * m..].fill(0.0);
    }
}

impl PairRows {
    pub fn new(pairs: &PairList) -> PairRows {
        PairRows {
            keys: SideRows::new(pairs, |(key, query)| (key, query)),
            queries: SideRows::new(pairs, |(key, query)| (query, key)),
            pairs: pairs.clone(),
            panels: Vec::new(),
        }
    }

    /// Whether these orders were built for `pairs`.
    pub fn matches(&self, pairs: &PairList) -> bool {
        // While this clone of the list lives, no caller can change it, and its allocation
        // cannot be reused, so equal pointers mean equal lists.
        PairList::ptr_eq(&self.pairs, pairs) || self.pairs == *pairs
    }

    /// Adds the key increments to `d_keys` and the query increments to `d_queries` (both
    /// token-major d x m), reading `keys` and `queries` (token-major d x m).
    #[cfg(test)]
    pub fn accumulate(
        &mut self,
        delta: &[f64],
        keys: &[f64],
        queries: &[f64],
        d_keys: &mut [f64],
        d_queries: &mut [f64],
        m: usize,
    ) {
        let sources = Sources::Separate { keys, queries };
        self.update(delta, 1.0, sources, false, d_keys, d_queries, m);
    }

    /// Writes the key increments to `d_keys` and the query increments to `d_queries` (both
    /// token-major d x m), reading `keys` and `queries` (token-major d x m). The old values
    /// of the outputs are not read.
    pub fn write(
        &mut self,
        delta: &[f64],
        keys: &[f64],
        queries: &[f64],
        d_keys: &mut [f64],
        d_queries: &mut [f64],
        m: usize,
    ) {
        let sources = Sources::Separate { keys, queries };
        self.update(delta, 1.0, sources, true, d_keys, d_queries, m);
    }

    /// Adds `scale` times both increments to `keys` and `queries` in place. Every term reads
    /// the rows as they were before the call, as a gradient-descent step needs.
    pub fn step(
        &mut self,
        delta: &[f64],
        scale: f64,
        keys: &mut [f64],
        queries: &mut [f64],
        m: usize,
    ) {
        self.update(delta, scale, Sources::InPlace, false, keys, queries, m);
    }

    /// Adds the increments to the outputs, or writes them over the outputs if `overwrite`.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        delta: &[f64],
        scale: f64,
        sources: Sources,
        overwrite: bool,
        keys_out: &mut [f64],
        queries_out: &mut [f64],
        m: usize,
    ) {
        assert_eq!(keys_out.len(), queries_out.len());
        let d = keys_out.len() / m.max(1);
        if overwrite {
            // The sweep writes every row that receives terms, so only the others are
            // cleared here.
            self.keys.clear_idle_rows(keys_out, m);
            self.queries.clear_idle_rows(queries_out, m);
        }
        // A tile starting on a cache line is loaded without split loads, so each packed
        // panel starts at a 64-byte boundary of the buffer.
        // Packing overwrites every entry that the sweep reads, so a buffer of the right size
        // is reused as it is.
        let len = d * TILE;
        if self.panels.len() != 2 * len + 8 {
            self.panels.clear();
            self.panels.resize(2 * len + 8, 0.0);
        }
        let start = self.panels.as_ptr().align_offset(64).min(8);
        let (packed_keys, packed_queries) = self.panels[start..start + 2 * len].split_at_mut(len);
        let update = &Update {
            key_side: &self.keys,
            query_side: &self.queries,
            delta,
            scale,
            sources,
            overwrite,
            m,
        };
        dispatch!(update_kernel, update_avx2, (update: &Update, keys_out: &mut [f64], queries_out: &mut [f64], packed_keys: &mut [f64], packed_queries: &mut [f64]) -> ());
    }
}

/// Source of the rows that the increments of [`PairRows::update`] multiply.
#[derive(Clone, Copy)]
enum Sources<'a> {
    /// From the output blocks, before they change.
    InPlace,
    /// From separate key and query blocks.
    Separate { keys: &'a [f64], queries: &'a [f64] },
}

/// The inputs of one [`PairRows::update`] call.
struct Update<'a> {
    key_side: &'a SideRows,
    query_side: &'a SideRows,
    delta: &'a [f64],
    scale: f64,
    sources: Sources<'a>,
    /// Start each output tile from zero instead of loading it.
    overwrite: bool,
    m: usize,
}

/// Sweeps the column panels: packs the key and query columns of a panel, then adds each
/// side's terms to its output rows from the packed copy of the other side.
#[inline(always)]
fn update_kernel(
    update: &Update,
    keys_out: &mut [f64],
    queries_out: &mut [f64],
    packed_keys: &mut [f64],
    packed_queries: &mut [f64],
) {
    let &Update {
        key_side,
        query_side,
        delta,
        scale,
        sources,
        overwrite,
        m,
    } = update;
    for column in (0..m).step_by(TILE) {
        let width = TILE.min(m - column);
        // The rows are m doubles apart, often a power of two, so the tiles of one panel
        // would fall into a few cache sets and evict each other. A packed copy does not.
        // In place, the panel's columns have not changed yet when they are packed.
        let (keys, queries) = match sources {
            Sources::InPlace => (&*keys_out, &*queries_out),
            Sources::Separate { keys, queries } => (keys, queries),
        };
        for (packed, block) in [(&mut *packed_keys, keys), (&mut *packed_queries, queries)] {
            for (tile, row) in packed.chunks_exact_mut(TILE).zip(block.chunks_exact(m)) {
                if width == TILE {
                    // A copy of known length compiles to vector moves, not a memcpy call.
                    let source: &[f64; TILE] = row[column..column + TILE]
                        .try_into()
                        .expect("a full panel has TILE columns");
                    tile.copy_from_slice(source);
                } else {
                    tile[..width].copy_from_slice(&row[column..column + width]);
                }
            }
        }
        let panel = Panel {
            column,
            width,
            m,
            delta,
            scale,
            overwrite,
        };
        panel.add(key_side, packed_queries, keys_out);
        panel.add(query_side, packed_keys, queries_out);
    }
}

/// One column panel of an update.
struct Panel<'a> {
    column: usize,
    width: usize,
    m: usize,
    delta: &'a [f64],
    scale: f64,
    overwrite: bool,
}

impl Panel<'_> {
    /// For each term (p, source) of each run of `side`: the panel's columns of row `target`
    /// of `out` gain scale delta[p] times row `source` of the packed panel `sources`.
    #[inline(always)]
    fn add(&self, side: &SideRows, sources: &[f64], out: &mut [f64]) {
        if self.width == TILE {
            self.add_tiles::<TILE>(side, sources, out);
        } else {
            self.add_tiles::<0>(side, sources, out);
        }
    }

    /// [`Panel::add`] with `WIDTH` columns known at compile time, or any width for 0.
    #[inline(always)]
    fn add_tiles<const WIDTH: usize>(&self, side: &SideRows, sources: &[f64], out: &mut [f64]) {
        let width = if WIDTH == 0 { self.width } else { WIDTH };
        for (row, range) in &side.runs {
            let out_tile = &mut out[row * self.m + self.column..][..width];
            let mut tile = [0.0; TILE];
            if !self.overwrite {
                tile[..width].copy_from_slice(out_tile);
            }
            for &(p, source) in &side.terms[range.clone()] {
                let delta = self.delta[p as usize];
                // Pairs with Delta = 0 add nothing; the pair-by-pair loop skips them too.
                if delta == 0.0 {
                    continue;
                }
                let weight = self.scale * delta;
                let start = source as usize * TILE;
                let source_tile: &[f64; TILE] = sources[start..start + TILE]
                    .try_into()
                    .expect("packed tiles have TILE entries");
                for (acc, &x) in tile[..width].iter_mut().zip(source_tile) {
                    *acc = weight.mul_add(x, *acc);
                }
            }
            out_tile.copy_from_slice(&tile[..width]);
        }
    }
}

/// Writes `out[p] = dot(row key(p) of keys, row query(p) of queries)` for every pair p,
/// with the same partial sums and summation order as [`crate::linalg::dot`], so the results
/// are bit-identical to it.
pub fn pair_dots(rows: &PairRows, keys: &[f64], queries: &[f64], out: &mut [f64], m: usize) {
    assert_eq!(keys.len(), queries.len());
    assert_eq!(keys.len() % m.max(1), 0);
    let side = &rows.keys;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { pair_dots_avx2(side, keys, queries, out, m) };
        return;
    }
    pair_dots_generic(side, keys, queries, out, m);
}

/// Computes [`pair_dots`] on CPUs without AVX2 and FMA.
fn pair_dots_generic(side: &SideRows, keys: &[f64], queries: &[f64], out: &mut [f64], m: usize) {
    for (row, range) in &side.runs {
        let key = &keys[row * m..][..m];
        for &(p, source) in &side.terms[range.clone()] {
            out[p as usize] = dot_kernel(key, &queries[source as usize * m..][..m]);
        }
    }
}

/// Pairs of one key row whose dot products share each load of the key row.
#[cfg(target_arch = "x86_64")]
const DOT_BLOCK: usize = 4;

/// [`pair_dots`] with AVX2 and FMA: the eight lane sums of `dot` are two 4-wide registers,
/// and blocks of [`DOT_BLOCK`] pairs with the same key row share each load of it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pair_dots_avx2(side: &SideRows, keys: &[f64], queries: &[f64], out: &mut [f64], m: usize) {
    use std::arch::x86_64::{
        __m256d, _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_setzero_pd, _mm256_storeu_pd,
    };

    let chunks = m / 8 * 8;
    let query_row = |source: u32| &queries[source as usize * m..][..m];
    // Lane sums of one pair as the eight partial sums of `dot`.
    let lanes = |low: __m256d, high: __m256d| {
        let mut partial = [0.0; 8];
        // SAFETY: `partial` has room for two 4-wide stores.
        unsafe {
            _mm256_storeu_pd(partial.as_mut_ptr(), low);
            _mm256_storeu_pd(partial.as_mut_ptr().add(4), high);
        }
        partial
    };
    for (row, range) in &side.runs {
        let key = &keys[row * m..][..m];
        let terms = &side.terms[range.clone()];
        let mut blocks = terms.chunks_exact(DOT_BLOCK);
        for block in &mut blocks {
            let rows: [&[f64]; DOT_BLOCK] = [
                query_row(block[0].1),
                query_row(block[1].1),
                query_row(block[2].1),
                query_row(block[3].1),
            ];
            let mut low = [_mm256_setzero_pd(); DOT_BLOCK];
            let mut high = [_mm256_setzero_pd(); DOT_BLOCK];
            for column in (0..chunks).step_by(8) {
                // SAFETY: column + 8 <= chunks <= m, and the key row and every query row
                // have m entries.
                unsafe {
                    let key_low = _mm256_loadu_pd(key.as_ptr().add(column));
                    let key_high = _mm256_loadu_pd(key.as_ptr().add(column + 4));
                    for j in 0..DOT_BLOCK {
                        let query = rows[j].as_ptr().add(column);
                        low[j] = _mm256_fmadd_pd(key_low, _mm256_loadu_pd(query), low[j]);
                        high[j] = _mm256_fmadd_pd(key_high, _mm256_loadu_pd(query.add(4)), high[j]);
                    }
                }
            }
            for j in 0..DOT_BLOCK {
                let partial = lanes(low[j], high[j]);
                out[block[j].0 as usize] = finish_dot(&partial, &key[chunks..], &rows[j][chunks..]);
            }
        }
        for &(p, source) in blocks.remainder() {
            out[p as usize] = dot_kernel(key, query_row(source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::axpy;

    /// Pair lists for `d` tokens: empty, one pair, repeats, a Delta = 0 pair and every pair.
    fn pair_lists(d: usize) -> Vec<Vec<(usize, usize)>> {
        let last = d - 1;
        let all: Vec<(usize, usize)> = (0..d).flat_map(|k| (0..d).map(move |q| (k, q))).collect();
        vec![
            vec![],
            vec![(last, 0)],
            vec![(0, last), (0, last), (last, 0), (0, 0), (0, last)],
            all,
        ]
    }

    #[test]
    fn edge_sizes_match_naive_loops() {
        // Widths below, at and around the 8-wide dot chunks and the 32-wide tiles.
        for m in [1, 2, 7, 8, 9, 31, 32, 33, 65] {
            for d in [1, 3, 6] {
                let value = |i: usize| ((i * 37 % 101) as f64 - 50.0) / 7.0;
                let keys: Vec<f64> = (0..d * m).map(value).collect();
                let queries: Vec<f64> = (0..d * m).map(|i| value(i + 13)).collect();
                let start: Vec<f64> = (0..d * m).map(|i| value(i + 29) * 1e-3).collect();
                for pairs in pair_lists(d) {
                    let case = format!("m = {m}, d = {d}, pairs {pairs:?}");
                    // Every third pair has Delta = 0.
                    let delta: Vec<f64> = (0..pairs.len())
                        .map(|p| if p % 3 == 2 { 0.0 } else { value(p + 5) })
                        .collect();
                    let pairs: PairList = pairs.into();
                    let mut rows = PairRows::new(&pairs);

                    let mut scores = vec![f64::NAN; pairs.len()];
                    pair_dots(&rows, &keys, &queries, &mut scores, m);
                    for (p, &(key, query)) in pairs.iter().enumerate() {
                        let expected =
                            crate::linalg::dot(&keys[key * m..][..m], &queries[query * m..][..m]);
                        assert_eq!(scores[p], expected, "score {p}, {case}");
                    }

                    let (mut expected_keys, mut expected_queries) = (start.clone(), start.clone());
                    for (&(key, query), &weight) in pairs.iter().zip(&delta) {
                        if weight != 0.0 {
                            axpy(
                                weight,
                                &queries[query * m..][..m],
                                &mut expected_keys[key * m..][..m],
                            );
                            axpy(
                                weight,
                                &keys[key * m..][..m],
                                &mut expected_queries[query * m..][..m],
                            );
                        }
                    }
                    let (mut d_keys, mut d_queries) = (start.clone(), start.clone());
                    rows.accumulate(&delta, &keys, &queries, &mut d_keys, &mut d_queries, m);
                    assert_eq!(d_keys, expected_keys, "key increments, {case}");
                    assert_eq!(d_queries, expected_queries, "query increments, {case}");

                    // Writing over NaN gives the increments added to zeros.
                    let zeros = vec![0.0; d * m];
                    let (mut added_keys, mut added_queries) = (zeros.clone(), zeros);
                    rows.accumulate(
                        &delta,
                        &keys,
                        &queries,
                        &mut added_keys,
                        &mut added_queries,
                        m,
                    );
                    let (mut written_keys, mut written_queries) =
                        (vec![f64::NAN; d * m], vec![f64::NAN; d * m]);
                    rows.write(
                        &delta,
                        &keys,
                        &queries,
                        &mut written_keys,
                        &mut written_queries,
                        m,
                    );
                    assert_eq!(written_keys, added_keys, "written keys, {case}");
                    assert_eq!(written_queries, added_queries, "written queries, {case}");

                    let (mut stepped_keys, mut stepped_queries) = (keys.clone(), queries.clone());
                    rows.step(&delta, 1.0, &mut stepped_keys, &mut stepped_queries, m);
                    let (mut plus_keys, mut plus_queries) = (keys.clone(), queries.clone());
                    rows.accumulate(
                        &delta,
                        &keys,
                        &queries,
                        &mut plus_keys,
                        &mut plus_queries,
                        m,
                    );
                    assert_eq!(stepped_keys, plus_keys, "in-place keys, {case}");
                    assert_eq!(stepped_queries, plus_queries, "in-place queries, {case}");
                }
            }
        }
    }

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

        let pairs: PairList = pairs.into();
        let mut rows = PairRows::new(&pairs);
        assert!(rows.matches(&pairs));
        let copy: PairList = pairs.to_vec().into();
        assert!(rows.matches(&copy));
        let shorter: PairList = pairs[1..].into();
        assert!(!rows.matches(&shorter));
        let (mut d_keys, mut d_queries) = (start.clone(), start);
        rows.accumulate(&delta, &keys, &queries, &mut d_keys, &mut d_queries, m);
        assert_eq!(d_keys, expected_keys);
        assert_eq!(d_queries, expected_queries);

        // In place, every term must read the rows from before the call.
        let eta = 0.3;
        let scaled: Vec<f64> = delta.iter().map(|v| eta * v).collect();
        let (mut stepped_keys, mut stepped_queries) = (keys.clone(), queries.clone());
        rows.accumulate(
            &scaled,
            &keys,
            &queries,
            &mut stepped_keys,
            &mut stepped_queries,
            m,
        );
        let (mut in_place_keys, mut in_place_queries) = (keys.clone(), queries.clone());
        rows.step(&delta, eta, &mut in_place_keys, &mut in_place_queries, m);
        assert_eq!(in_place_keys, stepped_keys);
        assert_eq!(in_place_queries, stepped_queries);
    }

    #[test]
    fn fallback_kernels_match_dispatched() {
        // The generic kernels run on CPUs without AVX2 and FMA; they must give the same bits.
        let (d, m) = (9, 70);
        let value = |i: usize| ((i * 7919 % 10_007) as f64 / 10_007.0 - 0.5) * 3.0;
        let keys: Vec<f64> = (0..d * m).map(value).collect();
        let queries: Vec<f64> = (0..d * m).map(|i| value(i + 31)).collect();
        let pairs: PairList = vec![
            (1, 4),
            (0, 0),
            (5, 1),
            (2, 2),
            (1, 3),
            (5, 4),
            (8, 7),
            (1, 1),
        ]
        .into();
        let delta: Vec<f64> = (0..pairs.len()).map(|p| value(p + 3)).collect();
        let mut rows = PairRows::new(&pairs);

        let mut dispatched = vec![0.0; pairs.len()];
        pair_dots(&rows, &keys, &queries, &mut dispatched, m);
        let mut generic = vec![0.0; pairs.len()];
        pair_dots_generic(&rows.keys, &keys, &queries, &mut generic, m);
        assert_eq!(generic, dispatched, "scores");

        let (mut d_keys, mut d_queries) = (vec![0.0; d * m], vec![0.0; d * m]);
        rows.write(&delta, &keys, &queries, &mut d_keys, &mut d_queries, m);
        let (mut generic_keys, mut generic_queries) = (vec![0.0; d * m], vec![0.0; d * m]);
        let (mut packed_keys, mut packed_queries) = (vec![0.0; d * TILE], vec![0.0; d * TILE]);
        let update = Update {
            key_side: &rows.keys,
            query_side: &rows.queries,
            delta: &delta,
            scale: 1.0,
            sources: Sources::Separate {
                keys: &keys,
                queries: &queries,
            },
            overwrite: true,
            m,
        };
        update_kernel(
            &update,
            &mut generic_keys,
            &mut generic_queries,
            &mut packed_keys,
            &mut packed_queries,
        );
        assert_eq!(generic_keys, d_keys, "key increments");
        assert_eq!(generic_queries, d_queries, "query increments");
    }
}
