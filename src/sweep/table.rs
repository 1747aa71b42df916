//! `runs.csv`: one row per finished run, built from the run folders, and the merge of
//! several sweep folders (the shards of one sweep) into one table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;
use crate::experiment::Summary;
use crate::observables::read_trajectory;
use crate::output;
use crate::run::StopReason;
use crate::sweep::plan::{PlanEntry, PlanFile};
use crate::theory::{CheckReport, check_run};

pub const RUNS_TABLE: &str = "runs.csv";
pub const PLAN: &str = "plan.json";
pub const RUNS_FOLDER: &str = "runs";
/// Written into a run folder when the run fails, with the error message.
pub const ERROR_FILE: &str = "error.txt";

/// One row of `runs.csv`. Empty cells (pandas reads them as NaN) mark values that do not
/// exist, such as T1 for a run that never classified every sample correctly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// Folder name under `runs/`.
    pub run: String,
    pub seed: u64,
    pub n: usize,
    #[serde(rename = "L")]
    pub seq_len: usize,
    pub d: usize,
    pub m: u64,
    pub m1: u64,
    pub engine: String,
    pub integrator: String,
    pub init_scheme: String,
    pub c0: Option<f64>,
    pub c1: Option<f64>,
    pub sigma0: f64,
    pub sigma1: f64,
    pub stop_reason: String,
    pub t1: Option<f64>,
    pub final_t: f64,
    pub final_loss: f64,
    pub final_test_loss: f64,
    pub steps: u64,
    pub wall_seconds: f64,
    /// beta at t = 0.
    pub beta0: f64,
    /// kappa = beta(0) + m1 trace(GV(0)) / d.
    pub kappa: f64,
    pub t1_kappa: Option<f64>,
    /// Slope of 1/loss against t over T1 and the trajectory rows after it.
    pub c: Option<f64>,
    /// R^2 of that fit.
    pub c_r2: Option<f64>,
    /// Number of trajectory rows in that fit.
    pub c_points: Option<usize>,
    /// c / beta(0).
    pub c_over_beta: Option<f64>,
    /// c over the mean of beta across the fitted rows.
    pub c_over_mean_beta: Option<f64>,
    /// Verdict of each claim of `attnflow check` ("holds", "fails", "not-applicable") and
    /// its headline measured value.
    pub claim_01: String,
    pub claim_01_measured: f64,
    pub claim_02: String,
    pub claim_02_measured: f64,
    pub claim_03: String,
    pub claim_03_measured: f64,
    pub claim_04: String,
    pub claim_04_measured: f64,
    pub claim_05: String,
    pub claim_05_measured: f64,
    pub claim_06: String,
    pub claim_06_measured: f64,
    pub claim_07: String,
    pub claim_07_measured: f64,
    pub claim_08: String,
    pub claim_08_measured: f64,
    pub claim_09: String,
    pub claim_09_measured: f64,
    pub claim_10: String,
    pub claim_10_measured: f64,
    pub claim_11: String,
    pub claim_11_measured: f64,
    pub claim_12: String,
    pub claim_12_measured: f64,
}

impl RunRow {
    /// Fills the claim columns from a check report, or marks them "check-failed".
    fn set_claims(&mut self, report: Option<&CheckReport>) {
        let columns: [(&mut String, &mut f64); 12] = [
            (&mut self.claim_01, &mut self.claim_01_measured),
            (&mut self.claim_02, &mut self.claim_02_measured),
            (&mut self.claim_03, &mut self.claim_03_measured),
            (&mut self.claim_04, &mut self.claim_04_measured),
            (&mut self.claim_05, &mut self.claim_05_measured),
            (&mut self.claim_06, &mut self.claim_06_measured),
            (&mut self.claim_07, &mut self.claim_07_measured),
            (&mut self.claim_08, &mut self.claim_08_measured),
            (&mut self.claim_09, &mut self.claim_09_measured),
            (&mut self.claim_10, &mut self.claim_10_measured),
            (&mut self.claim_11, &mut self.claim_11_measured),
            (&mut self.claim_12, &mut self.claim_12_measured),
        ];
        for (id, (verdict, measured)) in (1u8..).zip(columns) {
            match report.map(|report| report.claim(id)) {
                Some(Some(claim)) => {
                    *verdict = claim.verdict.name().replace(' ', "-");
                    *measured = claim.measured;
                }
                Some(None) => {
                    *verdict = "missing".to_string();
                    *measured = f64::NAN;
                }
                None => {
                    *verdict = "check-failed".to_string();
                    *measured = f64::NAN;
                }
            }
        }
    }
}

/// Reads the summary of the run in `folder`, returning it only if the run finished (was not
/// interrupted) under the config with hash `config_hash`.
pub fn finished_summary(folder: &Path, config_hash: &str) -> Option<Summary> {
    let path = folder.join(output::SUMMARY);
    if !path.exists() {
        return None;
    }
    let summary: Summary = output::read_json(&path).ok()?;
    let finished =
        summary.config_hash == config_hash && summary.stop_reason != StopReason::Interrupted;
    finished.then_some(summary)
}

/// Builds the row of a finished run from its folder, running `attnflow check` on it (which
/// also writes `check.json` and `predictions.csv` there).
pub fn read_row(folder: &Path, name: &str, summary: &Summary) -> Result<RunRow, Error> {
    let config = Config::from_file(&folder.join(output::CONFIG))?;
    let trajectory = read_trajectory(&folder.join(output::TRAJECTORY))?;
    // A run whose check fails (for example when the frozen-attention baseline cannot be
    // integrated) still gets its row, with NaN theory columns and "check-failed" verdicts.
    let report = match check_run(folder) {
        Ok(report) => Some(report),
        Err(error) => {
            log::warn!("attnflow check failed on {}: {error}", folder.display());
            None
        }
    };
    let beta0 = trajectory.first().map_or(f64::NAN, |row| row.beta);
    let kappa = report.as_ref().map_or(f64::NAN, |report| report.kappa);
    let law = report.as_ref().and_then(|report| report.loss_law);

    let mut row = RunRow {
        run: name.to_string(),
        seed: summary.seed,
        n: summary.n,
        seq_len: summary.seq_len,
        d: summary.d,
        m: summary.m,
        m1: summary.m1,
        engine: summary.engine.clone(),
        integrator: summary.integrator.clone(),
        init_scheme: summary.init.scheme.clone(),
        c0: config.init.c0,
        c1: config.init.c1,
        sigma0: summary.init.sigma0,
        sigma1: summary.init.sigma1,
        stop_reason: summary.stop_reason.name().to_string(),
        t1: summary.t1,
        final_t: summary.final_t,
        final_loss: summary.final_loss,
        final_test_loss: summary.final_test_loss,
        steps: summary.steps,
        wall_seconds: summary.wall_seconds,
        beta0,
        kappa,
        t1_kappa: summary.t1.map(|t1| t1 * kappa),
        c: law.map(|fit| fit.slope_c),
        c_r2: law.map(|fit| fit.r_squared),
        c_points: law.map(|fit| fit.points),
        c_over_beta: law.map(|fit| fit.slope_c / beta0),
        c_over_mean_beta: law.map(|fit| fit.c_over_beta),
        ..RunRow::default()
    };
    row.set_claims(report.as_ref());
    Ok(row)
}

/// Rows of the finished runs among `entries`, looked up in each of `dirs` in turn (the
/// first folder with a finished run wins), in plan order. Also returns the names of the
/// runs that no folder has finished.
pub fn collect_rows(
    dirs: &[PathBuf],
    entries: &[PlanEntry],
) -> Result<(Vec<RunRow>, Vec<String>), Error> {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for entry in entries {
        let found = dirs.iter().find_map(|dir| {
            let folder = dir.join(RUNS_FOLDER).join(&entry.name);
            finished_summary(&folder, &entry.config_hash).map(|summary| (folder, summary))
        });
        match found {
            Some((folder, summary)) => rows.push(read_row(&folder, &entry.name, &summary)?),
            None => missing.push(entry.name.clone()),
        }
    }
    Ok((rows, missing))
}

/// Writes `rows` to `path` as CSV with a header, atomically.
pub fn write_table(path: &Path, rows: &[RunRow]) -> Result<(), Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer
        .write_record(header())
        .map_err(|e| Error::invalid_data(format!("failed to format {}: {e}", path.display())))?;
    for row in rows {
        writer.serialize(row).map_err(|e| {
            Error::invalid_data(format!("failed to format {}: {e}", path.display()))
        })?;
    }
    let bytes = writer.into_inner().expect("writing to memory cannot fail");
    output::write_atomic(path, &bytes)
}

/// Reads a `runs.csv`.
pub fn read_table(path: &Path) -> Result<Vec<RunRow>, Error> {
    let failed =
        |e: csv::Error| Error::invalid_data(format!("failed to read {}: {e}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(failed)?;
    reader
        .deserialize()
        .collect::<Result<Vec<RunRow>, _>>()
        .map_err(failed)
}

/// Column names of `runs.csv`.
fn header() -> Vec<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .serialize(RunRow::default())
        .expect("a row always serializes");
    let text = String::from_utf8(writer.into_inner().expect("in memory")).expect("utf-8");
    let line = text.lines().next().expect("header line");
    line.split(',').map(str::to_string).collect()
}

/// Reads the `plan.json` of a sweep folder.
pub fn read_plan(dir: &Path) -> Result<PlanFile, Error> {
    let path = dir.join(PLAN);
    if !path.exists() {
        return Err(Error::config(format!(
            "{} is missing; {} is not a folder written by `attnflow sweep`",
            path.display(),
            dir.display()
        )));
    }
    output::read_json(&path)
}

/// Result of [`merge`].
#[derive(Clone, Debug)]
pub struct MergeReport {
    pub rows: Vec<RunRow>,
    /// Runs of the sweep that no input folder has finished.
    pub missing: Vec<String>,
}

/// Merges the sweep folders `dirs` (the shards of one sweep) into `out/runs.csv`, with the
/// rows in sweep order, and copies the plan to `out/plan.json`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<MergeReport, Error> {
    let Some(first) = dirs.first() else {
        return Err(Error::config("merge needs at least one sweep folder"));
    };
    let plan = read_plan(first)?;
    for dir in &dirs[1..] {
        if read_plan(dir)? != plan {
            return Err(Error::config(format!(
                "{} and {} come from different sweeps (their {PLAN} differ); merge only the \
                 shards of one sweep",
                first.display(),
                dir.display()
            )));
        }
    }

    let (rows, missing) = collect_rows(dirs, &plan.runs)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    output::write_json(&out.join(PLAN), &plan)?;
    write_table(&out.join(RUNS_TABLE), &rows)?;
    Ok(MergeReport { rows, missing })
}
