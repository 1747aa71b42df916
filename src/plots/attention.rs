//! Attention score correlations among the targets and the common token over training. Figure
//! 1a of Yang, Kailkhura, Wang and Liang (NeurIPS 2024) shows the same entries.

use super::TIME_LABEL;
use super::figure::{Axis, Column, Figure, Panel, Series, columns};
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
    let mut panel = Panel::new(
        "Off-diagonal entries among targets 1, 2 and common token 3",
        Axis::log(TIME_LABEL),
        Axis::linear("S[key, query] = sqrt(m) x attention score"),
    );
    for (color, (label, value)) in ENTRIES.iter().enumerate() {
        let points = columns(&data.trajectory, |o| o.t, value);
        panel.series.push(Series::new(*label, points, color));
    }
    panel.mark_t1(data.t1);

    Figure {
        name: "attention-scores".into(),
        title: "Attention score correlations S = W_K^T W_Q".into(),
        grid: (1, 1),
        panels: vec![panel],
    }
}
