//! Training loss, total and per group, with the test loss. Figure 1b of Yang, Kailkhura,
//! Wang and Liang (NeurIPS 2024) shows the same curves.

use super::TIME_LABEL;
use super::figure::{Axis, Column, Figure, Panel, Series, Stroke, columns};
use super::inputs::RunData;
use crate::observables::Observation;

/// Per-group mean losses: I1 has both targets (y = +1); I2, I3 and I4 have target 1 only,
/// target 2 only, or neither (y = -1).
const GROUPS: [(&str, Column<Observation>); 4] = [
    ("group I1 (both targets, y = +1)", |o| o.loss_i1),
    ("group I2 (target 1 only)", |o| o.loss_i2),
    ("group I3 (target 2 only)", |o| o.loss_i3),
    ("group I4 (no target)", |o| o.loss_i4),
];

pub fn figure(data: &RunData) -> Figure {
    let mut panel = Panel::new(
        "Mean logistic loss log(1 + exp(-y F))",
        Axis::log(TIME_LABEL),
        Axis::log("loss (nats, log scale)"),
    );
    let trajectory = &data.trajectory;
    panel.series.push(Series::new(
        "training loss",
        columns(trajectory, |o| o.t, |o| o.loss),
        0,
    ));
    for (index, (label, value)) in GROUPS.iter().enumerate() {
        let points = columns(trajectory, |o| o.t, value);
        let series = Series::new(*label, points, index + 1);
        // I2 and I3 coincide when the data are symmetric in the two targets.
        let series = if index == 1 { series.widened() } else { series };
        panel.series.push(series);
    }
    panel.series.push(Series::new(
        "test loss (fresh samples)",
        columns(trajectory, |o| o.t, |o| o.test_loss),
        5,
    ));
    if let Some(predictions) = &data.predictions {
        let points = columns(predictions, |p| p.t, |p| p.baseline_loss);
        let baseline = Series::new("frozen-attention baseline", points, 7);
        panel.series.push(baseline.with_stroke(Stroke::Dashed));
    }
    panel.mark_t1(data.t1);

    Figure {
        name: "loss".into(),
        title: "Training loss by group".into(),
        grid: (1, 1),
        panels: vec![panel],
    }
}
