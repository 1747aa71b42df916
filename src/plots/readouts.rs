//! Token readouts gamma_k = u . (W_V e_k) and the margins they form, beside the
//! frozen-attention baseline.

use super::TIME_LABEL;
use super::figure::{Axis, Column, Figure, Marker, Panel, Series, Stroke, columns};
use super::inputs::{Prediction, RunData};
use crate::observables::Observation;

/// gamma_1, gamma_2 (targets) and gamma_3 (common token), measured and in the baseline.
const READOUTS: [(&str, Column<Observation>, Column<Prediction>); 3] = [
    ("gamma_1 (target 1)", |o| o.gamma_1, |p| p.baseline_gamma_1),
    ("gamma_2 (target 2)", |o| o.gamma_2, |p| p.baseline_gamma_2),
    (
        "gamma_3 (common token)",
        |o| o.gamma_3,
        |p| p.baseline_gamma_3,
    ),
];

/// Sums of readouts whose signs decide the groups without fillers: positive for I1, negative
/// for I2 and I3. Phase 2 predicts that all three keep growing in magnitude.
const MARGINS: [(&str, Column<Observation>, Column<Prediction>); 3] = [
    (
        "gamma_1 + gamma_2 + gamma_3 (I1, > 0)",
        |o| o.gamma_1 + o.gamma_2 + o.gamma_3,
        |p| p.baseline_gamma_1 + p.baseline_gamma_2 + p.baseline_gamma_3,
    ),
    (
        "gamma_1 + gamma_3 (I2, < 0)",
        |o| o.gamma_1 + o.gamma_3,
        |p| p.baseline_gamma_1 + p.baseline_gamma_3,
    ),
    (
        "gamma_2 + gamma_3 (I3, < 0)",
        |o| o.gamma_2 + o.gamma_3,
        |p| p.baseline_gamma_2 + p.baseline_gamma_3,
    ),
];

pub fn figure(data: &RunData) -> Figure {
    let readouts = panel(
        data,
        "Readouts gamma_k = a^T W W_V e_k",
        "readout gamma (output units)",
        &READOUTS,
        0,
        0,
    );
    let margins = panel(
        data,
        "Margins without fillers",
        "sum of readouts (output units)",
        &MARGINS,
        3,
        1,
    );
    Figure {
        name: "readouts".into(),
        title: "Readouts and margins".into(),
        grid: (1, 2),
        panels: vec![readouts, margins],
    }
}

/// Builds one panel of measured curves, each with its baseline when predictions exist.
/// Curves `symmetric` and `symmetric + 1` are the pair that coincides when the data are
/// symmetric in the two targets (gamma_1 and gamma_2, or the I2 and I3 margins).
fn panel(
    data: &RunData,
    title: &str,
    y_label: &str,
    curves: &[(&str, Column<Observation>, Column<Prediction>)],
    first_color: usize,
    symmetric: usize,
) -> Panel {
    let mut panel = Panel::new(title, Axis::log(TIME_LABEL), Axis::linear(y_label));
    for (index, (label, measured, baseline)) in curves.iter().enumerate() {
        let color = first_color + index;
        let points = columns(&data.trajectory, |o| o.t, measured);
        let series = Series::new(*label, points, color);
        let series = if index == symmetric {
            series.widened()
        } else {
            series
        };
        panel.series.push(series);
        if let Some(predictions) = &data.predictions {
            let points = columns(predictions, |p| p.t, baseline);
            let series = Series::new("", points, color);
            panel.series.push(series.with_stroke(Stroke::Dashed));
        }
    }
    if data.predictions.is_some() {
        let note = "frozen-attention baseline (darker shade)".to_string();
        panel.notes.push((note, Stroke::Dashed));
    }
    panel.horizontal.push(Marker {
        value: 0.0,
        label: None,
    });
    panel.mark_t1(data.t1);
    panel
}
