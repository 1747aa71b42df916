//! Attention score correlations among the targets and the common token over training. Figure
//! 1a of Yang, Kailkhura, Wang and Liang (NeurIPS 2024) shows the same entries.

use super::TIME_LABEL;
use super::figure::{Axis, Column, Figure, Marker, Panel, Series, columns};
use super::inputs::RunData;
use crate::observables::Observation;

/// The off-diagonal entries of S = W_K^T W_Q (d x d, row = key token, column = query token)
/// among target 1, target 2 and the common token 3. Phase 2 raises S[1,2] and S[2,1] and
/// lowers S[3,1] and S[3,2].
const ENTRIES: [(&str, Column<Observation>); 6] = [
    ("S_1_2 (key target 1, query target 2)", |o| o.s_1_2),
    ("S_2_1 (key target 2, query target 1)", |o| o.s_2_1),
    ("S_3_1 (key common, query target 1)", |o| o.s_3_1),
    ("S_3_2 (key common, query target 2)", |o| o.s_3_2),
    ("S_1_3 (key target 1, query common)", |o| o.s_1_3),
    ("S_2_3 (key target 2, query common)", |o| o.s_2_3),
];

pub fn figure(data: &RunData) -> Figure {
    let values = panel(
        data,
        "Off-diagonal entries among targets 1, 2 and common token 3",
        "S[key, query] = sqrt(m) x attention score",
    );
    // The change from t = 0 shows the direction of learning even when the random initial
    // values are much larger than what training adds.
    let initial = |value: Column<Observation>| data.trajectory.first().map_or(0.0, value);
    let mut change = panel(
        data,
        "Change since t = 0",
        "S[key, query](t) - S[key, query](0)",
    );
    for (series, (_, value)) in change.series.iter_mut().zip(ENTRIES) {
        let start = initial(value);
        for point in &mut series.points {
            point.1 -= start;
        }
    }
    change.horizontal.push(Marker {
        value: 0.0,
        label: None,
    });

    Figure {
        name: "attention-scores".into(),
        title: "Attention score correlations S = W_K^T W_Q".into(),
        grid: (1, 2),
        panels: vec![values, change],
    }
}

fn panel(data: &RunData, title: &str, y_label: &str) -> Panel {
    let mut panel = Panel::new(title, Axis::log(TIME_LABEL), Axis::linear(y_label));
    for (color, (label, value)) in ENTRIES.iter().enumerate() {
        let points = columns(&data.trajectory, |o| o.t, value);
        panel.series.push(Series::new(*label, points, color));
    }
    panel.mark_t1(data.t1);
    panel
}
