//! The files the figures are drawn from: a run folder's `trajectory.csv`, `summary.json`
//! and optional `predictions.csv`, and a sweep's `runs.csv`.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;
use crate::observables::{Observation, read_trajectory};
use crate::output;

/// File name of the theory predictions written by `attnflow check` into a run folder.
pub const PREDICTIONS: &str = "predictions.csv";

/// One row of `predictions.csv`: the theory's curves at time t, NaN where undefined.
#[derive(Clone, Debug, Deserialize)]
pub struct Prediction {
    /// Gradient-flow time.
    pub t: f64,
    /// Training loss of the frozen-attention baseline (attention fixed at p = 1/L, GV fixed
    /// at its initial value).
    pub baseline_loss: f64,
    pub baseline_gamma_1: f64,
    pub baseline_gamma_2: f64,
    pub baseline_gamma_3: f64,
    /// Positive root R* of A R^2 + B R + C = 0, the value R(t) is attracted to in Phase 2.
    #[serde(rename = "R_star")]
    pub r_star: f64,
    /// Loss law 1/loss = c (t - T1) + 1/loss(T1), fitted after T1.
    pub loss_law_inverse: f64,
}

/// Everything drawn from one run folder.
#[derive(Clone, Debug)]
pub struct RunData {
    pub trajectory: Vec<Observation>,
    /// End of Phase 1 (first time every training sample is correct), if reached.
    pub t1: Option<f64>,
    /// `None` when the folder has no `predictions.csv`.
    pub predictions: Option<Vec<Prediction>>,
    /// Whether the folder has a `summary.json`. A run that failed (a non-finite loss, for
    /// example) writes none but keeps its trajectory, which is drawn without T1.
    pub summary_found: bool,
}

impl RunData {
    /// Reads `trajectory.csv`, `summary.json` and, if present, `predictions.csv` from
    /// `run_dir`.
    pub fn read(run_dir: &Path) -> Result<RunData, Error> {
        let trajectory_path = run_dir.join(output::TRAJECTORY);
        if !trajectory_path.exists() {
            return Err(Error::invalid_data(format!(
                "{} not found; pass a run folder written by `attnflow run`",
                trajectory_path.display()
            )));
        }
        let trajectory = read_trajectory(&trajectory_path)?;
        if trajectory.is_empty() {
            return Err(Error::invalid_data(format!(
                "{} has no rows; the run recorded nothing to plot",
                trajectory_path.display()
            )));
        }
        // All figures but loss-law plot against log t, which cannot show t = 0, and a single
        // point of 1/loss tells nothing about the loss law. Such a run would give empty axes.
        if trajectory.iter().all(|row| row.t <= 0.0) {
            return Err(Error::invalid_data(format!(
                "{} has only the t = 0 row, which the log time axes of the figures cannot \
                 show; let the run go past t = 0 (resume an interrupted run with --resume, raise \
                 train.max_steps, or lower train.target_loss below the initial loss) and plot \
                 again",
                trajectory_path.display()
            )));
        }

        let summary_path = run_dir.join(output::SUMMARY);
        let summary_found = summary_path.exists();
        let t1 = if summary_found {
            read_t1(&summary_path)?
        } else {
            None
        };
        let predictions_path = run_dir.join(PREDICTIONS);
        let predictions = if predictions_path.exists() {
            Some(read_predictions(&predictions_path)?)
        } else {
            None
        };
        Ok(RunData {
            trajectory,
            t1,
            predictions,
            summary_found,
        })
    }
}

/// Reads T1 (the `t1` field, a number or null) from a run's `summary.json`.
fn read_t1(path: &Path) -> Result<Option<f64>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let summary: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::invalid_data(format!("failed to parse {} as JSON: {e}", path.display()))
    })?;
    match summary.get("t1") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| {
            Error::invalid_data(format!(
                "{}: t1 = {value} is not a number; expected a time or null",
                path.display()
            ))
        }),
    }
}

/// Reads `predictions.csv`; `NaN` cells parse as NaN.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, Error> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
    reader
        .deserialize()
        .collect::<Result<Vec<Prediction>, _>>()
        .map_err(|e| csv_error(path, e))
}

/// One row of a sweep's `runs.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRun {
    /// Attention width.
    pub m: f64,
    pub seed: String,
    /// T1 x kappa, with kappa = beta(0) + m1 trace(GV(0)) / d.
    pub t1_kappa: f64,
    /// Loss-law slope c divided by beta.
    pub c_over_beta: f64,
}

/// Columns of `runs.csv` that the width-scaling figure needs; others are ignored.
const SWEEP_COLUMNS: [&str; 4] = ["m", "seed", "t1_kappa", "c_over_beta"];

/// Columns of `runs.csv` that describe a run's config apart from m and the seed. The
/// figure averages over the seeds at each m, so these must not vary. sigma0 and sigma1
/// follow m under the theory scheme and are checked only under the others.
const FIXED_COLUMNS: [&str; 9] = [
    "n",
    "L",
    "d",
    "m1",
    "engine",
    "integrator",
    "init_scheme",
    "c0",
    "c1",
];

/// Reads a sweep's `runs.csv`. Empty cells and `NaN` read as NaN (a run without T1 or
/// without a loss-law fit); the figure leaves those points out.
pub fn read_sweep(path: &Path) -> Result<Vec<SweepRun>, Error> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let mut index = [0usize; 4];
    for (slot, name) in index.iter_mut().zip(SWEEP_COLUMNS) {
        *slot = headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::invalid_data(format!(
                "{} has no column `{name}`; a sweep table needs the columns {}",
                path.display(),
                SWEEP_COLUMNS.join(", ")
            ))
        })?;
    }

    let mut runs = Vec::new();
    let mut records = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let number = |column: usize| -> Result<f64, Error> {
            let cell = record.get(index[column]).unwrap_or("").trim();
            if cell.is_empty() {
                return Ok(f64::NAN);
            }
            cell.parse::<f64>().map_err(|_| {
                Error::invalid_data(format!(
                    "{} row {}: `{}` = {cell:?} is not a number",
                    path.display(),
                    row + 1,
                    SWEEP_COLUMNS[column]
                ))
            })
        };
        runs.push(SweepRun {
            m: number(0)?,
            seed: record.get(index[1]).unwrap_or("").trim().to_string(),
            t1_kappa: number(2)?,
            c_over_beta: number(3)?,
        });
        records.push(record);
    }
    check_one_setting(path, &headers, &records)?;
    Ok(runs)
}

/// Rejects a sweep whose runs differ in a config column other than m and the seed, which
/// the width-scaling figure would pool into one mean per width.
fn check_one_setting(
    path: &Path,
    headers: &csv::StringRecord,
    records: &[csv::StringRecord],
) -> Result<(), Error> {
    let column = |name: &str| headers.iter().position(|h| h == name);
    let values = |index: usize| -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for record in records {
            let value = record.get(index).unwrap_or("").trim();
            if !seen.contains(&value) {
                seen.push(value);
            }
        }
        seen
    };
    let theory = column("init_scheme").is_some_and(|i| values(i) == ["theory"]);
    let sigmas: &[&str] = if theory { &[] } else { &["sigma0", "sigma1"] };
    for &name in FIXED_COLUMNS.iter().chain(sigmas) {
        let Some(index) = column(name) else {
            continue;
        };
        let seen = values(index);
        if seen.len() > 1 {
            return Err(Error::invalid_data(format!(
                "the runs of {} differ in `{name}` ({}) as well as in m, and the width-scaling \
                 figure would average them together at each m; plot one value at a time by \
                 keeping only its rows in a copy of the file",
                path.display(),
                seen.join(", ")
            )));
        }
    }
    Ok(())
}

fn csv_error(path: &Path, error: csv::Error) -> Error {
    Error::invalid_data(format!("failed to read {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn predictions_read_nan_cells() {
        let dir = tempfile::tempdir().unwrap();
        let text = "t,baseline_loss,baseline_gamma_1,baseline_gamma_2,baseline_gamma_3,\
                    R_star,loss_law_inverse\n\
                    0.5,0.6,0.1,0.2,-0.3,NaN,NaN\n\
                    2,0.1,1.5,1.4,-2,1.4,7.5\n";
        let rows = read_predictions(&write(dir.path(), PREDICTIONS, text)).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].r_star.is_nan());
        assert!(rows[0].loss_law_inverse.is_nan());
        assert_eq!(rows[1].t, 2.0);
        assert_eq!(rows[1].baseline_gamma_3, -2.0);
        assert_eq!(rows[1].r_star, 1.4);
    }

    #[test]
    fn predictions_missing_column_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), PREDICTIONS, "t,baseline_loss\n1,0.5\n");
        let error = read_predictions(&path).unwrap_err().to_string();
        assert!(error.contains("baseline_gamma_1"), "{error}");
    }

    #[test]
    fn sweep_reads_columns_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let text = "seed,extra,c_over_beta,m,t1_kappa\n3,x,0.5,128,2.25\n4,y,,256,NaN\n";
        let runs = read_sweep(&write(dir.path(), "runs.csv", text)).unwrap();
        assert_eq!(
            runs[0],
            SweepRun {
                m: 128.0,
                seed: "3".into(),
                t1_kappa: 2.25,
                c_over_beta: 0.5
            }
        );
        assert!(runs[1].c_over_beta.is_nan());
        assert!(runs[1].t1_kappa.is_nan());
    }

    #[test]
    fn sweep_of_two_settings_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let text = "m,seed,init_scheme,c1,sigma0,t1_kappa,c_over_beta\n\
                    64,0,theory,0.1,0.01,1.4,38\n128,0,theory,0.1,0.007,2.2,20\n";
        // sigma0 follows m under the theory scheme, so one setting reads fine.
        assert_eq!(
            read_sweep(&write(dir.path(), "one.csv", text))
                .unwrap()
                .len(),
            2
        );
        let two = format!("{text}64,1,theory,0.3,0.01,1.5,30\n");
        let error = read_sweep(&write(dir.path(), "two.csv", &two))
            .unwrap_err()
            .to_string();
        assert!(error.contains("differ in `c1` (0.1, 0.3)"), "{error}");
    }

    #[test]
    fn sweep_missing_column_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "runs.csv", "m,seed,t1_kappa\n128,0,1\n");
        let error = read_sweep(&path).unwrap_err().to_string();
        assert!(error.contains("no column `c_over_beta`"), "{error}");
    }

    #[test]
    fn sweep_bad_number_names_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "runs.csv",
            "m,seed,t1_kappa,c_over_beta\n128,0,1,0.5\nwide,1,1,0.5\n",
        );
        let error = read_sweep(&path).unwrap_err().to_string();
        assert!(error.contains("row 2"), "{error}");
        assert!(error.contains("\"wide\""), "{error}");
    }

    #[test]
    fn t1_null_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "summary.json", r#"{"t1": null}"#);
        assert_eq!(read_t1(&path).unwrap(), None);
        let path = write(dir.path(), "summary.json", r#"{"t1": 0.25}"#);
        assert_eq!(read_t1(&path).unwrap(), Some(0.25));
        let path = write(dir.path(), "summary.json", r#"{"t1": "soon"}"#);
        assert!(read_t1(&path).is_err());
    }
}
