//! Tick positions of an axis, in plot coordinates (log10 of the data on log axes).
//!
//! Linear axes get steps of 1, 2 or 5 times a power of ten. Log axes get powers of ten when
//! they span more than one and a half decades and hold three powers, and 1-2-5 sequences (or
//! 1-2-3-5 when those give fewer than four ticks) down to 0.6 decades. Below that they get
//! linear steps in data units, so that every label is a round number.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use super::figure::Scale;

/// Major ticks (labelled, with a grid line) and minor ticks (grid line only).
#[derive(Clone, Debug, PartialEq)]
pub struct Ticks {
    pub major: Vec<f64>,
    pub minor: Vec<f64>,
}

/// A linear plotters coordinate over [low, high] with precomputed ticks.
///
/// plotters' own f64 coordinate picks its ticks itself, and wrapping it with fixed key
/// points loses its label formatting, so this type supplies both.
#[derive(Clone, Debug)]
pub struct TickedRange {
    pub low: f64,
    pub high: f64,
    pub ticks: Ticks,
}

impl Ranged for TickedRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    /// Maps a coordinate to a pixel between `limit.0` (at `low`) and `limit.1` (at `high`).
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.low) / (self.high - self.low);
        let pixels = f64::from(limit.1 - limit.0);
        limit.0 + (pixels * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.ticks.minor.clone()
        } else {
            self.ticks.major.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.low..self.high
    }
}

/// Aim for about this many major ticks.
const TARGET_MAJOR: f64 = 6.0;

/// Ticks inside [low, high] (plot coordinates, low < high).
pub fn ticks(scale: Scale, low: f64, high: f64) -> Ticks {
    match scale {
        Scale::Linear => linear_ticks(low, high),
        Scale::Log => log_ticks(low, high),
    }
}

/// Chooses a step of 1, 2 or 5 times a power of ten close to `span / TARGET_MAJOR` and
/// returns it with the number of minor steps in it.
fn nice_step(span: f64) -> (f64, usize) {
    let raw = span / TARGET_MAJOR;
    let power = 10f64.powf(raw.log10().floor());
    match raw / power {
        m if m < 1.5 => (power, 5),
        m if m < 3.5 => (2.0 * power, 4),
        m if m < 7.5 => (5.0 * power, 5),
        _ => (10.0 * power, 5),
    }
}

/// Multiples of `step` inside [low, high].
fn multiples(step: f64, low: f64, high: f64) -> Vec<f64> {
    // The slack keeps a tick that sits on a bound despite rounding (0.9 / 0.1 > 9).
    let first = (low / step - 1e-9).ceil() as i64;
    let last = (high / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn linear_ticks(low: f64, high: f64) -> Ticks {
    let (step, subdivisions) = nice_step(high - low);
    let major = multiples(step, low, high);
    let minor = multiples(step / subdivisions as f64, low, high)
        .into_iter()
        .filter(|v| !major.iter().any(|m| (m - v).abs() < 1e-9 * step))
        .collect();
    Ticks { major, minor }
}

fn log_ticks(low: f64, high: f64) -> Ticks {
    let decades = high - low;
    let first = low.ceil() as i64;
    let last = high.floor() as i64;
    let slack = 1e-9 * decades;
    let in_range = |v: &f64| *v >= low - slack && *v <= high + slack;
    let mantissas = |set: &[f64], k: i64| -> Vec<f64> {
        set.iter().map(move |m| m.log10() + k as f64).collect()
    };

    // Powers of ten alone when at least three fit.
    if decades > 1.5 && last - first >= 2 {
        let count = (last - first + 1) as f64;
        let stride = (count / 8.0).ceil().max(1.0) as i64;
        let major: Vec<f64> = (first..=last)
            .filter(|k| k.rem_euclid(stride) == 0)
            .map(|k| k as f64)
            .collect();
        let minor: Vec<f64> = if stride == 1 {
            (first - 1..=last)
                .flat_map(|k| mantissas(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], k))
                .filter(in_range)
                .collect()
        } else {
            (first..=last)
                .filter(|k| k.rem_euclid(stride) != 0)
                .map(|k| k as f64)
                .collect()
        };
        return Ticks { major, minor };
    }

    if decades > 0.6 {
        let powers = low.floor() as i64..=high.ceil() as i64;
        let sequence = |labelled: &[f64], unlabelled: &[f64]| Ticks {
            major: powers
                .clone()
                .flat_map(|k| mantissas(labelled, k))
                .filter(in_range)
                .collect(),
            minor: powers
                .clone()
                .flat_map(|k| mantissas(unlabelled, k))
                .filter(in_range)
                .collect(),
        };
        let one_two_five = sequence(&[1.0, 2.0, 5.0], &[3.0, 4.0, 6.0, 7.0, 8.0, 9.0]);
        if one_two_five.major.len() >= 4 {
            return one_two_five;
        }
        let denser = sequence(&[1.0, 2.0, 3.0, 5.0], &[4.0, 6.0, 7.0, 8.0, 9.0]);
        if denser.major.len() >= 2 {
            return denser;
        }
    }

    // Below 0.6 decades, or when fewer than two 1-2-5 ticks fit: round steps in data units.
    let data = linear_ticks(10f64.powf(low), 10f64.powf(high));
    let to_log = |values: Vec<f64>| -> Vec<f64> {
        values
            .into_iter()
            .filter(|v| *v > 0.0)
            .map(f64::log10)
            .filter(in_range)
            .collect()
    };
    Ticks {
        major: to_log(data.major),
        minor: to_log(data.minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_values(coordinates: &[f64]) -> Vec<f64> {
        coordinates
            .iter()
            .map(|c| (10f64.powf(*c) * 1e6).round() / 1e6)
            .collect()
    }

    #[test]
    fn linear_steps_are_round() {
        let ticks = ticks(Scale::Linear, -0.3, 2.9);
        assert_eq!(ticks.major, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert!(ticks.minor.contains(&0.1) || ticks.minor.iter().any(|v| (v - 0.1).abs() < 1e-12));
    }

    #[test]
    fn log_over_many_decades_uses_powers() {
        let ticks = ticks(Scale::Log, -3.2, 2.6);
        assert_eq!(ticks.major, vec![-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]);
        // 7, 8, 9 x 1e-4, then 2..9 x 10^k for k = -3..1, then 2, 3 x 100.
        assert_eq!(ticks.minor.len(), 3 + 5 * 8 + 2);
    }

    #[test]
    fn log_over_twenty_decades_strides() {
        let ticks = ticks(Scale::Log, -10.0, 10.0);
        assert!(ticks.major.len() <= 8, "{:?}", ticks.major);
        assert!(ticks.major.contains(&0.0));
    }

    #[test]
    fn log_over_one_decade_uses_one_two_five() {
        let ticks = ticks(Scale::Log, 2f64.log10() - 0.01, 20f64.log10() + 0.01);
        assert_eq!(data_values(&ticks.major), vec![2.0, 5.0, 10.0, 20.0]);
        assert_eq!(
            data_values(&ticks.minor),
            vec![3.0, 4.0, 6.0, 7.0, 8.0, 9.0]
        );
    }

    #[test]
    fn log_with_few_ticks_adds_threes() {
        let ticks = ticks(Scale::Log, 1.3f64.log10(), 5.5f64.log10());
        assert_eq!(data_values(&ticks.major), vec![2.0, 3.0, 5.0]);
    }

    #[test]
    fn log_with_two_powers_uses_one_two_five() {
        let ticks = ticks(Scale::Log, 0.15f64.log10(), 40f64.log10());
        assert_eq!(
            data_values(&ticks.major),
            vec![0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        );
    }

    #[test]
    fn log_around_one_uses_one_two_five() {
        let low = 0.45f64.log10();
        let high = 2.2f64.log10();
        let ticks = ticks(Scale::Log, low, high);
        let values = data_values(&ticks.major);
        assert_eq!(values, vec![0.5, 1.0, 2.0]);
    }

    #[test]
    fn log_inside_one_decade_uses_linear_steps() {
        let ticks = ticks(Scale::Log, 0.9f64.log10(), 1.6f64.log10());
        let values = data_values(&ticks.major);
        assert_eq!(values, vec![0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]);
    }
}
