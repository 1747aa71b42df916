//! Outputs of a check: `check.json`, `predictions.csv` and the table printed on a terminal.

use std::path::Path;

use serde::Serialize;

use super::balance::r_star;
use super::baseline::BaselinePoint;
use super::{CheckReport, LossLawFit, RunRecord};
use crate::error::Error;
use crate::output;

/// File name of the check report in a run folder.
pub const CHECK: &str = "check.json";
/// File name of the predictions in a run folder.
pub const PREDICTIONS: &str = "predictions.csv";

/// One row of `predictions.csv`, at one recorded time of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredictionRow {
    pub t: f64,
    /// Training loss of the frozen-attention baseline.
    pub baseline_loss: f64,
    pub baseline_gamma_1: f64,
    pub baseline_gamma_2: f64,
    pub baseline_gamma_3: f64,
    pub baseline_beta: f64,
    pub baseline_min_margin: f64,
    /// Positive root of the balance equation from the recorded g'(I) sums.
    #[serde(rename = "R_star")]
    pub r_star: f64,
    /// The fitted line for 1/loss, NaN before T1.
    pub loss_law_inverse: f64,
}

/// Builds the rows of `predictions.csv`, one per recorded row of the run.
pub fn prediction_rows(
    record: &RunRecord,
    baseline: &[BaselinePoint],
    loss_law: Option<&LossLawFit>,
) -> Vec<PredictionRow> {
    record
        .rows
        .iter()
        .zip(baseline)
        .map(|(row, point)| PredictionRow {
            t: row.t,
            baseline_loss: point.loss,
            baseline_gamma_1: point.gamma[0],
            baseline_gamma_2: point.gamma[1],
            baseline_gamma_3: point.gamma[2],
            baseline_beta: point.beta,
            baseline_min_margin: point.min_margin,
            r_star: r_star(row),
            loss_law_inverse: loss_law.map_or(f64::NAN, |fit| fit.inverse_loss_at(row.t)),
        })
        .collect()
}

pub fn write_check(dir: &Path, report: &CheckReport) -> Result<(), Error> {
    output::write_json(&dir.join(CHECK), report)
}

pub fn write_predictions(dir: &Path, rows: &[PredictionRow]) -> Result<(), Error> {
    let path = dir.join(PREDICTIONS);
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .serialize(row)
            .map_err(|e| Error::invalid_data(format!("failed to write {}: {e}", path.display())))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| Error::invalid_data(format!("failed to write {}: {e}", path.display())))?;
    output::write_atomic(&path, &bytes)
}

/// Formats the report as two summary lines and a table with one row per claim: id, claim,
/// measured, predicted or bound, verdict.
pub fn format_table(report: &CheckReport) -> String {
    let mut lines = summary_lines(report);
    let header = ["id", "claim", "measured", "predicted or bound", "verdict"].map(str::to_string);
    let rows: Vec<[String; 5]> = report
        .claims
        .iter()
        .map(|claim| {
            [
                claim.id.to_string(),
                claim.statement.clone(),
                claim.measured_text.clone(),
                claim.predicted.clone(),
                claim.verdict.name().to_string(),
            ]
        })
        .collect();

    let mut widths = header.clone().map(|cell| cell.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    lines.push(format_row(&header, &widths));
    let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
    lines.push(rule.join("-+-"));
    lines.extend(rows.iter().map(|row| format_row(row, &widths)));
    lines.join("\n")
}

/// Formats kappa, T1 of the run and of the baseline, and the final readout directions.
fn summary_lines(report: &CheckReport) -> Vec<String> {
    let time = |t: Option<f64>| t.map_or("not reached".to_string(), |t| format!("{t:.6e}"));
    let direction = report.final_direction;
    vec![
        format!(
            "kappa = beta(0) + m1 trace(GV(0)) / d = {:.6e}; T1 = {}; baseline T1 = {}",
            report.kappa,
            time(report.t1),
            time(report.baseline_t1),
        ),
        format!(
            "final readout direction gamma_1 : gamma_2 : gamma_3 = 1 : {:.3} : {:.3} (run), \
             1 : {:.3} : {:.3} (baseline)",
            direction.run[0], direction.run[1], direction.baseline[0], direction.baseline[1]
        ),
    ]
}

/// Pads each cell to its column width and joins the cells with " | ".
fn format_row(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, &width)| format!("{cell:<width$}"))
        .collect();
    padded.join(" | ").trim_end().to_string()
}
