//! The loss law of Phase 2: 1/loss grows linearly in t after T1.

use super::TIME_LABEL;
use super::figure::{Axis, Figure, Panel, Series, Stroke, columns};
use super::inputs::RunData;

/// Plots 1/loss against t on linear axes, with the fitted line
/// 1/loss = c (t - T1) + 1/loss(T1) from `predictions.csv`.
pub fn figure(data: &RunData) -> Figure {
    let mut panel = Panel::new(
        "Phase 2 predicts 1/loss = c (t - T1) + 1/loss(T1)",
        Axis::linear(TIME_LABEL),
        Axis::linear("1 / training loss (1/nats)"),
    );
    let measured = columns(&data.trajectory, |o| o.t, |o| 1.0 / o.loss);
    panel
        .series
        .push(Series::new("1 / training loss", measured, 0));
    if let Some(predictions) = &data.predictions {
        let points = columns(predictions, |p| p.t, |p| p.loss_law_inverse);
        let fit = Series::new("fitted loss law after T1", points, 3);
        panel.series.push(fit.with_stroke(Stroke::Dashed));
    }
    panel.mark_t1(data.t1);

    Figure {
        name: "loss-law".into(),
        title: "Loss law: inverse loss against time".into(),
        grid: (1, 1),
        panels: vec![panel],
    }
}
