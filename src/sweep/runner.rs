//! Runs the planned runs of one shard in parallel, skipping finished ones and resuming
//! partial ones, then writes `runs.csv`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::error::Error;
use crate::experiment::{RunOptions, execute};
use crate::output::{self, Checkpoint};
use crate::run::StopReason;
use crate::sweep::plan::{PlanFile, PlannedRun};
use crate::sweep::shard::Shard;
use crate::sweep::table::{
    ERROR_FILE, PLAN, RUNS_FOLDER, RUNS_TABLE, collect_rows, finished_summary, write_table,
};

/// Settings of one `attnflow sweep` invocation.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub shard: Shard,
    /// Runs executed at once, each on one thread.
    pub jobs: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Write `dataset.npz` and `init_weights.npz` into each run folder.
    pub save_inputs: bool,
}

/// Outcome of one run in this invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A finished result with the same config was already in its folder.
    AlreadyDone,
    /// Ran to a normal stop; `resumed` is true when it continued from a checkpoint.
    Finished { resumed: bool },
    /// Stopped by the cancel flag; its checkpoint lets the next invocation continue it.
    Interrupted,
    /// Failed with this error message (also written to `error.txt` in its folder).
    Failed(String),
    /// Not started because the cancel flag was set first.
    NotStarted,
}

/// Counts of the outcomes of one invocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    /// Runs in the whole sweep.
    pub planned: usize,
    /// Runs in this shard.
    pub selected: usize,
    pub already_done: usize,
    /// Runs finished now, including resumed ones.
    pub finished: usize,
    /// Runs finished now that continued from a checkpoint.
    pub resumed: usize,
    pub interrupted: usize,
    pub not_started: usize,
    /// (run name, error message) of each failed run.
    pub failed: Vec<(String, String)>,
    /// Rows written to `runs.csv`.
    pub rows: usize,
}

impl SweepReport {
    fn add(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Outcome::AlreadyDone => self.already_done += 1,
            Outcome::Finished { resumed } => {
                self.finished += 1;
                self.resumed += usize::from(resumed);
            }
            Outcome::Interrupted => self.interrupted += 1,
            Outcome::Failed(message) => self.failed.push((name.to_string(), message)),
            Outcome::NotStarted => self.not_started += 1,
        }
    }
}

/// Runs the shard's part of `runs` into `out/runs/<name>/` and writes `out/plan.json` and
/// `out/runs.csv`.
///
/// `runs.csv` lists every run of the sweep that has a finished result in `out`, so shards
/// that share one output folder fill one table. Setting `cancel` interrupts the running
/// runs (they write a checkpoint) and starts no new one; the table is still written.
pub fn run_sweep(
    runs: &[PlannedRun],
    out: &Path,
    options: &SweepOptions,
    cancel: &AtomicBool,
) -> Result<SweepReport, Error> {
    let runs_dir = out.join(RUNS_FOLDER);
    std::fs::create_dir_all(&runs_dir).map_err(|e| Error::io(&runs_dir, e))?;
    let plan = PlanFile::new(runs);
    output::write_json(&out.join(PLAN), &plan)?;

    let selected: Vec<&PlannedRun> = runs
        .iter()
        .filter(|run| options.shard.contains(run.index))
        .collect();
    let tracker = Tracker::new(selected.len(), options.progress);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .map_err(|e| {
            Error::config(format!(
                "failed to start {} worker threads: {e}",
                options.jobs
            ))
        })?;

    let report = Mutex::new(SweepReport {
        planned: runs.len(),
        selected: selected.len(),
        ..SweepReport::default()
    });
    pool.install(|| {
        selected.par_iter().with_max_len(1).for_each(|run| {
            let folder = runs_dir.join(&run.name);
            tracker.start();
            // A panic in one run (a bug) fails that run only, so the others still finish.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run_one(run, &folder, options.save_inputs, cancel)
            }))
            .unwrap_or_else(|panic| {
                let message = panic_message(panic.as_ref());
                log::error!("run {} panicked: {message}", run.name);
                Outcome::Failed(format!("panicked: {message}"))
            });
            tracker.finish(&outcome);
            report
                .lock()
                .expect("no thread panics while holding the report")
                .add(&run.name, outcome);
        });
    });
    tracker.bar.finish_and_clear();

    let mut report = report.into_inner().expect("no thread panicked");
    let (rows, _) = collect_rows(&[out.to_path_buf()], &plan.runs)?;
    write_table(&out.join(RUNS_TABLE), &rows)?;
    report.rows = rows.len();
    Ok(report)
}

/// Runs one planned run in `folder`: skips it when finished, continues it from a matching
/// checkpoint, otherwise starts it afresh.
fn run_one(run: &PlannedRun, folder: &Path, save_inputs: bool, cancel: &AtomicBool) -> Outcome {
    let hash = run.config_hash();
    if finished_summary(folder, &hash).is_some() {
        log::info!("run {} already finished; skipped", run.name);
        return Outcome::AlreadyDone;
    }
    if cancel.load(Ordering::SeqCst) {
        return Outcome::NotStarted;
    }

    let resume = has_checkpoint(folder, &hash);
    if !resume {
        remove_stale_files(folder);
    }
    let mut options = RunOptions {
        resume,
        progress: false,
        save_inputs,
    };
    let mut result = execute(&run.config, folder, &options, cancel);
    if resume
        && matches!(
            result,
            Err(Error::Config(_) | Error::InvalidData(_) | Error::Io { .. })
        )
    {
        let error = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        log::warn!(
            "run {}: cannot resume ({error}); starting it again",
            run.name
        );
        remove_stale_files(folder);
        options.resume = false;
        result = execute(&run.config, folder, &options, cancel);
    }

    match result {
        Ok(summary) if summary.stop_reason == StopReason::Interrupted => Outcome::Interrupted,
        Ok(_) => {
            let _ = std::fs::remove_file(folder.join(ERROR_FILE));
            Outcome::Finished { resumed: resume }
        }
        Err(error) => {
            let message = error.to_string();
            log::error!("run {} failed: {message}", run.name);
            if let Err(write_error) =
                output::write_atomic(&folder.join(ERROR_FILE), format!("{message}\n").as_bytes())
            {
                log::error!("run {}: {write_error}", run.name);
            }
            Outcome::Failed(message)
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Checks whether `folder` has a checkpoint of the config with hash `hash`.
fn has_checkpoint(folder: &Path, hash: &str) -> bool {
    let path = folder.join(output::CHECKPOINT);
    path.exists()
        && output::read_json::<Checkpoint>(&path)
            .map(|checkpoint| checkpoint.config_hash == hash)
            .unwrap_or(false)
}

/// Removes the summary, checkpoint and error file of an earlier config, so that a crash
/// of the fresh run never leaves them next to its new files.
fn remove_stale_files(folder: &Path) {
    for name in [output::SUMMARY, output::CHECKPOINT, ERROR_FILE] {
        let path: PathBuf = folder.join(name);
        if path.exists() {
            if let Err(error) = std::fs::remove_file(&path) {
                log::warn!("failed to remove {}: {error}", path.display());
            }
        }
    }
}

/// Progress bar over the runs of a shard: runs done, running, left and failed.
struct Tracker {
    bar: ProgressBar,
    running: AtomicUsize,
    failed: AtomicUsize,
}

impl Tracker {
    fn new(total: usize, show: bool) -> Tracker {
        let bar = if show {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} runs done, {msg} ({eta} left)",
                )
                .expect("template is valid")
                .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Tracker {
            bar,
            running: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn start(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.show();
    }

    fn finish(&self, outcome: &Outcome) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Outcome::AlreadyDone | Outcome::Finished { .. } => self.bar.inc(1),
            Outcome::Failed(_) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                self.bar.inc(1);
            }
            Outcome::Interrupted | Outcome::NotStarted => {}
        }
        self.show();
    }

    fn show(&self) {
        let running = self.running.load(Ordering::SeqCst) as u64;
        let total = self.bar.length().unwrap_or(0);
        let left = total.saturating_sub(self.bar.position() + running);
        self.bar.set_message(format!(
            "{running} running, {left} left, {} failed",
            self.failed.load(Ordering::SeqCst)
        ));
    }
}
