//! Automatic balancing of the group gradient weights (claims 8 and 9).
//!
//! With g(I) = sum_{i in I} g_i and g'(I) = sum_{i in I} g_i (1 - g_i), the analysis
//! predicts, after T1:
//! - g(I2)/g(I3) in [1/2, 2] and
//!   g(I4) <= min(g(I2), g(I3)) <= max(g(I2), g(I3)) <= g(I1) <= g(I2 u I3 u I4);
//! - R = (g(I2 u I3 u I4) - g(I1)) / (g(I1) - g(I2)) in [1, 3], drawn to the positive root
//!   R* of A R^2 + B R + C = 0 with A = g'(I1) + g'(I2), B = g'(I3) + g'(I4) - g'(I1),
//!   C = -(g'(I2) + g'(I3) + 2 g'(I1)).

use crate::observables::Observation;

/// R* of a recorded row: the positive root of A R^2 + B R + C = 0.
///
/// A > 0 and C < 0 whenever some g_i lies strictly between 0 and 1, so the roots have
/// opposite signs and the positive one is unique. Returns NaN when A = 0.
pub fn r_star(row: &Observation) -> f64 {
    let a = row.gprime_i1 + row.gprime_i2;
    let b = row.gprime_i3 + row.gprime_i4 - row.gprime_i1;
    let c = -(row.gprime_i2 + row.gprime_i3 + 2.0 * row.gprime_i1);
    if a <= 0.0 {
        return f64::NAN;
    }

    // The form 2C / (-B - sqrt(B^2 - 4AC)) avoids cancellation when B > 0.
    let root = (b * b - 4.0 * a * c).sqrt();
    if b <= 0.0 {
        (-b + root) / (2.0 * a)
    } else {
        2.0 * c / (-b - root)
    }
}

/// Tests whether the group sums of a row are in the predicted order
/// g(I4) <= min(g(I2), g(I3)) <= max(g(I2), g(I3)) <= g(I1) <= g(I2 u I3 u I4).
pub fn is_ordered(row: &Observation) -> bool {
    let (g1, g2, g3, g4) = (row.gsum_i1, row.gsum_i2, row.gsum_i3, row.gsum_i4);
    g4 <= g2.min(g3) && g2.max(g3) <= g1 && g1 <= g2 + g3 + g4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_with_gprime(values: [f64; 4]) -> Observation {
        Observation {
            gprime_i1: values[0],
            gprime_i2: values[1],
            gprime_i3: values[2],
            gprime_i4: values[3],
            ..Observation::default()
        }
    }

    #[test]
    fn r_star_solves_quadratic() {
        for values in [
            [3.0, 1.0, 1.0, 1.0],
            [0.5, 2.0, 0.25, 4.0],
            [1.0, 1e-9, 1e-9, 1.0],
        ] {
            let row = row_with_gprime(values);
            let r = r_star(&row);
            let a = values[0] + values[1];
            let b = values[2] + values[3] - values[0];
            let c = -(values[1] + values[2] + 2.0 * values[0]);
            assert!(r > 0.0);
            assert!((a * r * r + b * r + c).abs() < 1e-12 * (a + b.abs() + c.abs()));
        }
    }

    #[test]
    fn r_star_of_equal_groups() {
        // Equal g' in every group: 2 R^2 + R - 4 = 0.
        let r = r_star(&row_with_gprime([1.0; 4]));
        assert!((r - (-1.0 + 33f64.sqrt()) / 4.0).abs() < 1e-14);
    }

    #[test]
    fn ordering_detects_swapped_groups() {
        let ordered = Observation {
            gsum_i1: 3.0,
            gsum_i2: 1.5,
            gsum_i3: 1.4,
            gsum_i4: 1.0,
            ..Observation::default()
        };
        assert!(is_ordered(&ordered));
        let swapped = Observation {
            gsum_i4: 2.0,
            ..ordered.clone()
        };
        assert!(!is_ordered(&swapped));
    }
}
