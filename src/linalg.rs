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
    fn axpy_adds_scaled() {
        let mut y = vec![1.0, 2.0, 3.0];
        axpy(2.0, &[1.0, -1.0, 0.5], &mut y);
        assert_eq!(y, vec![3.0, 0.0, 4.0]);
    }
}
