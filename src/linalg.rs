//! Small dense kernels on slices, written so the compiler vectorizes them.
//!
//! On x86-64 CPUs with AVX2 and FMA each kernel runs a copy compiled for them, chosen at
//! run time, instead of the SSE2 baseline. Both copies perform the same operations in the
//! same order, so results are bit-identical on every machine. Rust never contracts a
//! multiply and an add into an FMA on its own, and kernels that want fused multiply-adds
//! call `f64::mul_add`, which is correctly rounded on every machine (without FMA hardware it
//! is a slower library call).

/// Runs `$generic(args)` through a copy compiled with AVX2 and FMA when the CPU has them.
macro_rules! dispatch {
    ($generic:ident, $avx2:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2($($arg: $ty),*) -> $ret {
            $generic($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { $avx2($($arg),*) };
        }
        return $generic($($arg),*);
    };
}

pub(crate) use dispatch;

/// Computes a dot product with eight independent partial sums, so the loop vectorizes. The
/// summation order is fixed, so results do not depend on the machine or thread count.
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    dispatch!(dot_kernel, dot_avx2, (x: &[f64], y: &[f64]) -> f64);
}

/// y += alpha x.
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    assert_eq!(x.len(), y.len());
    dispatch!(axpy_kernel, axpy_avx2, (alpha: f64, x: &[f64], y: &mut [f64]) -> ());
}

/// Writes out[k] = dot(row k of `matrix`, x) for the rows of `matrix` (row-major, rows of
/// x.len() entries), with the bits of [`dot`].
pub fn row_dots(matrix: &[f64], x: &[f64], out: &mut [f64]) {
    assert_eq!(matrix.len(), out.len() * x.len());
    dispatch!(row_dots_kernel, row_dots_avx2, (matrix: &[f64], x: &[f64], out: &mut [f64]) -> ());
}

#[inline(always)]
fn row_dots_kernel(matrix: &[f64], x: &[f64], out: &mut [f64]) {
    let len = x.len();
    for (k, value) in out.iter_mut().enumerate() {
        *value = dot_kernel(&matrix[k * len..(k + 1) * len], x);
    }
}

/// Writes out = sum_k weights[k] (row k of `matrix`), added row by row as by [`axpy`] and
/// skipping zero weights. `matrix` is row-major with rows of out.len() entries.
pub fn weighted_rows(matrix: &[f64], weights: &[f64], out: &mut [f64]) {
    assert_eq!(matrix.len(), weights.len() * out.len());
    dispatch!(weighted_rows_kernel, weighted_rows_avx2, (matrix: &[f64], weights: &[f64], out: &mut [f64]) -> ());
}

#[inline(always)]
fn weighted_rows_kernel(matrix: &[f64], weights: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    for (row, &weight) in matrix.chunks_exact(out.len().max(1)).zip(weights) {
        if weight != 0.0 {
            axpy_kernel(weight, row, out);
        }
    }
}

/// Writes the outer product x y^T into `out` (row-major, x.len() rows of y.len() entries).
pub fn outer(x: &[f64], y: &[f64], out: &mut [f64]) {
    assert_eq!(out.len(), x.len() * y.len());
    dispatch!(outer_kernel, outer_avx2, (x: &[f64], y: &[f64], out: &mut [f64]) -> ());
}

#[inline(always)]
fn outer_kernel(x: &[f64], y: &[f64], out: &mut [f64]) {
    for (row, &scale) in out.chunks_exact_mut(y.len().max(1)).zip(x) {
        for (entry, &value) in row.iter_mut().zip(y) {
            *entry = scale * value;
        }
    }
}

#[inline(always)]
pub(crate) fn dot_kernel(x: &[f64], y: &[f64]) -> f64 {
    let mut partial = [0.0; 8];
    let chunks = x.len() / 8 * 8;
    for (xs, ys) in x[..chunks].chunks_exact(8).zip(y[..chunks].chunks_exact(8)) {
        for lane in 0..8 {
            partial[lane] = xs[lane].mul_add(ys[lane], partial[lane]);
        }
    }
    finish_dot(&partial, &x[chunks..], &y[chunks..])
}

/// Completes [`dot`] from its eight lane sums over the whole chunks of 8 and the remaining
/// entries `x_tail`, `y_tail`, in its fixed summation order.
#[inline(always)]
pub(crate) fn finish_dot(partial: &[f64; 8], x_tail: &[f64], y_tail: &[f64]) -> f64 {
    let mut tail = 0.0;
    for (a, b) in x_tail.iter().zip(y_tail) {
        tail = a.mul_add(*b, tail);
    }
    let pairs = [
        partial[0] + partial[4],
        partial[1] + partial[5],
        partial[2] + partial[6],
        partial[3] + partial[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// [`axpy`] without the length check and dispatch, for kernels that dispatch once outside
/// a loop of many short updates.
#[inline(always)]
pub(crate) fn axpy_kernel(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = alpha.mul_add(*xi, *yi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum() {
        for len in [0, 1, 7, 8, 9, 33] {
            let x: Vec<f64> = (0..len).map(|i| i as f64 * 0.5 - 3.0).collect();
            let y: Vec<f64> = (0..len).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            let naive: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((dot(&x, &y) - naive).abs() < 1e-12, "len {len}");
        }
    }

    /// Values of mixed signs and magnitudes, so that any change of rounding shows.
    fn values(len: usize, seed: u64) -> Vec<f64> {
        (0..len as u64)
            .map(|i| {
                let bits = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
                (bits % 20_011) as f64 / 997.0 - 10.0 + (bits % 7) as f64 * 1e-9
            })
            .collect()
    }

    #[test]
    fn fallback_kernels_match_dispatched() {
        // The builds for CPUs without AVX2 and FMA run the generic kernels, whose mul_add
        // is a correctly rounded library call: the results must be the same bits.
        for len in [0, 1, 7, 8, 9, 33, 1001] {
            let (x, y) = (values(len, 1), values(len, 2));
            assert_eq!(
                dot_kernel(&x, &y).to_bits(),
                dot(&x, &y).to_bits(),
                "dot, len {len}"
            );
            let (mut generic, mut dispatched) = (y.clone(), y.clone());
            axpy_kernel(0.37, &x, &mut generic);
            axpy(0.37, &x, &mut dispatched);
            assert_eq!(generic, dispatched, "axpy, len {len}");
        }
    }

    #[test]
    fn row_kernels_match_single_rows() {
        // Row counts and lengths around the 8-wide chunks, with one zero weight.
        for (rows, len) in [(0, 5), (1, 0), (3, 7), (4, 8), (5, 33)] {
            let matrix = values(rows * len, 3);
            let x = values(len, 4);
            let weights: Vec<f64> = (0..rows)
                .map(|k| if k == 1 { 0.0 } else { 0.3 * k as f64 - 0.5 })
                .collect();

            let mut dots = vec![f64::NAN; rows];
            row_dots(&matrix, &x, &mut dots);
            let mut sum = vec![f64::NAN; len];
            weighted_rows(&matrix, &weights, &mut sum);
            let mut product = vec![f64::NAN; rows * len];
            outer(&weights, &x, &mut product);

            let mut expected_sum = vec![0.0; len];
            for k in 0..rows {
                let row = &matrix[k * len..(k + 1) * len];
                assert_eq!(
                    dots[k].to_bits(),
                    dot(row, &x).to_bits(),
                    "row {k} of {rows}"
                );
                if weights[k] != 0.0 {
                    axpy(weights[k], row, &mut expected_sum);
                }
                for j in 0..len {
                    assert_eq!(product[k * len + j], weights[k] * x[j], "outer ({k}, {j})");
                }
            }
            assert_eq!(sum, expected_sum, "weighted rows, {rows} x {len}");

            let mut generic = vec![f64::NAN; len];
            weighted_rows_kernel(&matrix, &weights, &mut generic);
            assert_eq!(generic, sum, "generic weighted rows, {rows} x {len}");
            let mut generic_dots = vec![f64::NAN; rows];
            row_dots_kernel(&matrix, &x, &mut generic_dots);
            assert_eq!(generic_dots, dots, "generic row dots, {rows} x {len}");
            let mut generic_product = vec![f64::NAN; rows * len];
            outer_kernel(&weights, &x, &mut generic_product);
            assert_eq!(generic_product, product, "generic outer, {rows} x {len}");
        }
    }

    #[test]
    fn axpy_adds_scaled() {
        let mut y = vec![1.0, 2.0, 3.0];
        axpy(2.0, &[1.0, -1.0, 0.5], &mut y);
        assert_eq!(y, vec![3.0, 0.0, 4.0]);
    }
}
