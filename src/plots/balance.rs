//! Automatic balancing in Phase 2: the gradient weights of groups I2 and I3 stay comparable,
//! and the ratio R is attracted to the root R*.

use super::TIME_LABEL;
use super::figure::{Axis, Figure, Marker, Panel, Series, Stroke, columns};
use super::inputs::RunData;

/// The interval [1, 3] that R(t) stays in after T1, widened so that the bounds are visible.
const R_SHOWN: (f64, f64) = (0.8, 3.2);

pub fn figure(data: &RunData) -> Figure {
    Figure {
        name: "balance".into(),
        title: "Automatic balancing of the gradient weights g_i = 1 / (1 + exp(y_i F_i))".into(),
        grid: (2, 1),
        panels: vec![balance_panel(data), ratio_panel(data)],
    }
}

/// g(I2) / g(I3), predicted to stay in [1/2, 2] after T1.
fn balance_panel(data: &RunData) -> Panel {
    let mut panel = Panel::new(
        "Balance of the one-target groups",
        Axis::log(TIME_LABEL),
        Axis::log("g(I2) / g(I3) (ratio, log scale)"),
    );
    let points = columns(&data.trajectory, |o| o.t, |o| o.balance_i2_i3);
    panel.series.push(Series::new("g(I2) / g(I3)", points, 0));
    panel.horizontal.push(Marker {
        value: 0.5,
        label: Some("predicted bounds 1/2 and 2".into()),
    });
    panel.horizontal.push(Marker {
        value: 2.0,
        label: None,
    });
    panel.mark_t1(data.t1);
    panel
}

/// R = (g(I2 u I3 u I4) - g(I1)) / (g(I1) - g(I2)) against its predicted root R*.
///
/// Before T1, R can be negative or very large (its denominator g(I1) - g(I2) changes sign),
/// so the y range fits R after T1 and R*, and earlier points outside it are left out.
fn ratio_panel(data: &RunData) -> Panel {
    let mut y = Axis::linear("R (ratio)");
    y.range = Some(ratio_range(data));
    let mut panel = Panel::new(
        "R = (g(I2 u I3 u I4) - g(I1)) / (g(I1) - g(I2)) and its attractor R*",
        Axis::log(TIME_LABEL),
        y,
    );

    let points = columns(&data.trajectory, |o| o.t, |o| o.r);
    panel.series.push(Series::new("R(t)", points, 0));
    if let Some(predictions) = &data.predictions {
        let points = columns(predictions, |p| p.t, |p| p.r_star);
        let root = Series::new("R*: positive root of A R^2 + B R + C", points, 3);
        panel.series.push(root.with_stroke(Stroke::Dashed));
    }
    panel.horizontal.push(Marker {
        value: 1.0,
        label: Some("predicted interval [1, 3]".into()),
    });
    panel.horizontal.push(Marker {
        value: 3.0,
        label: None,
    });
    panel.mark_t1(data.t1);
    panel
}

/// Returns the y range of the R panel: R at and after T1 (all of R without T1), R*, and
/// [`R_SHOWN`], widened by 5%.
fn ratio_range(data: &RunData) -> (f64, f64) {
    let t1 = data.t1.unwrap_or(f64::NEG_INFINITY);
    let measured = data.trajectory.iter().filter(|o| o.t >= t1).map(|o| o.r);
    let predicted = data.predictions.iter().flatten().map(|p| p.r_star);
    let (low, high) = measured
        .chain(predicted)
        .filter(|value| value.is_finite())
        .fold(R_SHOWN, |(low, high), value| {
            (low.min(value), high.max(value))
        });
    let pad = 0.05 * (high - low);
    (low - pad, high + pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observables::Observation;

    fn row(t: f64, r: f64) -> Observation {
        Observation {
            t,
            r,
            ..Observation::default()
        }
    }

    #[test]
    fn ratio_range_ignores_r_before_t1() {
        let data = RunData {
            trajectory: vec![
                row(0.0, -46.0),
                row(1.0, f64::NAN),
                row(2.0, 1.5),
                row(3.0, 4.0),
            ],
            t1: Some(2.0),
            predictions: None,
            summary_found: true,
        };
        let (low, high) = ratio_range(&data);
        let pad = 0.05 * (4.0 - 0.8);
        assert!((low - (0.8 - pad)).abs() < 1e-12, "{low}");
        assert!((high - (4.0 + pad)).abs() < 1e-12, "{high}");
    }
}
