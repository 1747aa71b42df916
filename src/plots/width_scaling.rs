//! Width scaling over a sweep: T1 x kappa and c / beta(0) against the attention width m, one
//! point per run.

use std::collections::BTreeMap;

use super::figure::{Axis, Figure, Panel, Series, Stroke};
use super::inputs::SweepRun;

/// The theory predicts T1 ~ 1/kappa with kappa = beta(0) + m1 trace(GV(0)) / d, and a loss-law
/// slope c ~ beta, so both T1 x kappa and c / beta(0) should stay of order one as m grows.
pub fn figure(runs: &[SweepRun]) -> Figure {
    let time = panel(
        runs,
        "End of Phase 1: T1 x kappa",
        "T1 x kappa (dimensionless, log scale)",
        |run| run.t1_kappa,
    );
    let slope = panel(
        runs,
        "Loss-law slope: c / beta(0)",
        "c / beta(0) (dimensionless, log scale)",
        |run| run.c_over_beta,
    );
    Figure {
        name: "width-scaling".into(),
        title: "Width scaling over seeds, kappa = beta(0) + m1 trace(GV(0)) / d".into(),
        grid: (1, 2),
        panels: vec![time, slope],
    }
}

fn panel(runs: &[SweepRun], title: &str, y_label: &str, value: fn(&SweepRun) -> f64) -> Panel {
    let mut width_axis = Axis::log("attention width m (neurons, log scale)");
    width_axis.ticks = sweep_widths(runs);
    let mut panel = Panel::new(title, width_axis, Axis::log(y_label));
    let points: Vec<(f64, f64)> = runs.iter().map(|run| (run.m, value(run))).collect();
    let seeds = distinct_seeds(runs);
    let label = format!("one run ({seeds} seeds)");
    panel
        .series
        .push(Series::new(label, points.clone(), 0).with_stroke(Stroke::Points));
    let mean = Series::new("geometric mean over seeds", geometric_means(&points), 3);
    panel.series.push(mean);
    panel
}

/// Returns the widths of the sweep as tick values, or `None` when there are more than ten.
fn sweep_widths(runs: &[SweepRun]) -> Option<Vec<f64>> {
    let mut widths: Vec<f64> = runs.iter().map(|run| run.m).filter(|m| *m > 0.0).collect();
    widths.sort_by(f64::total_cmp);
    widths.dedup();
    (widths.len() <= 10).then_some(widths)
}

fn distinct_seeds(runs: &[SweepRun]) -> usize {
    let mut seeds: Vec<&str> = runs.iter().map(|run| run.seed.as_str()).collect();
    seeds.sort_unstable();
    seeds.dedup();
    seeds.len()
}

/// Geometric mean of y for each x, in increasing x, over the points with positive finite x
/// and y (the only ones a log-log plot can show).
fn geometric_means(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut groups: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    let shown = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0);
    for &(x, y) in shown {
        // The bits of a positive f64 sort like the number.
        let entry = groups.entry(x.to_bits()).or_insert((0.0, 0));
        entry.0 += y.ln();
        entry.1 += 1;
    }
    groups
        .into_iter()
        .map(|(bits, (log_sum, count))| (f64::from_bits(bits), (log_sum / count as f64).exp()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_means_per_width() {
        let points = [
            (256.0, 8.0),
            (128.0, 1.0),
            (128.0, 4.0),
            (256.0, 2.0),
            (256.0, f64::NAN),
            (512.0, 0.0),
        ];
        let means = geometric_means(&points);
        assert_eq!(means.len(), 2);
        assert_eq!(means[0].0, 128.0);
        assert!((means[0].1 - 2.0).abs() < 1e-12);
        assert_eq!(means[1].0, 256.0);
        assert!((means[1].1 - 4.0).abs() < 1e-12);
    }

    #[test]
    fn seeds_are_counted_once() {
        let run = |seed: &str| SweepRun {
            m: 1.0,
            seed: seed.into(),
            t1_kappa: 1.0,
            c_over_beta: 1.0,
        };
        assert_eq!(distinct_seeds(&[run("0"), run("1"), run("0")]), 2);
    }
}
