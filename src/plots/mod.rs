//! Figures of a run folder and of a sweep, written as PNG and SVG.
//!
//! [`plot_run`] reads `trajectory.csv`, `summary.json` (for T1) and, when present,
//! `predictions.csv` (the theory curves written by `attnflow check`) and draws:
//!
//! | file | shows |
//! |---|---|
//! | `attention-scores` | off-diagonal S entries among targets 1, 2 and common token 3, and their change since t = 0 |
//! | `loss` | training loss, per-group losses and test loss (log-log) |
//! | `balance` | g(I2)/g(I3) and R against its predicted root R* |
//! | `loss-law` | 1/loss against t with the fitted line after T1 |
//! | `readouts` | gamma_1..3 and the margins, beside the frozen-attention baseline |
//!
//! [`plot_sweep`] draws `width-scaling` (T1 x kappa and c / beta against m) from a sweep's
//! `runs.csv`. Time axes are gradient-flow time t; a dashed vertical line marks T1.

mod attention;
mod balance;
pub mod figure;
pub mod inputs;
mod loss;
mod loss_law;
mod readouts;
mod render;
pub mod style;
mod ticks;
mod width_scaling;

use std::path::{Path, PathBuf};

pub use figure::Figure;
pub use inputs::{PREDICTIONS, RunData, SweepRun};

use crate::error::Error;

/// Label of every time axis.
const TIME_LABEL: &str = "time t (gradient flow; gradient descent: learning rate x steps)";

/// Files written by [`plot_run`].
#[derive(Clone, Debug)]
pub struct RunPlots {
    /// PNG and SVG files, in pairs.
    pub files: Vec<PathBuf>,
    /// Whether `predictions.csv` was found, so that R*, the loss-law fit and the baseline
    /// are drawn.
    pub predictions_found: bool,
    /// Whether `summary.json` was found; without it T1 is not marked.
    pub summary_found: bool,
}

/// Builds the figures of one run, in the order of the table in the module docs.
pub fn run_figures(data: &RunData) -> Vec<Figure> {
    vec![
        attention::figure(data),
        loss::figure(data),
        balance::figure(data),
        loss_law::figure(data),
        readouts::figure(data),
    ]
}

/// Builds the width-scaling figure of a sweep.
pub fn sweep_figure(runs: &[SweepRun]) -> Figure {
    width_scaling::figure(runs)
}

/// Draws every figure of the run folder `run_dir` into `out_dir` (created if missing).
pub fn plot_run(run_dir: &Path, out_dir: &Path) -> Result<RunPlots, Error> {
    let data = RunData::read(run_dir)?;
    let files = write_figures(&run_figures(&data), out_dir)?;
    Ok(RunPlots {
        files,
        predictions_found: data.predictions.is_some(),
        summary_found: data.summary_found,
    })
}

/// Draws the width-scaling figure of the sweep table `runs_csv` into `out_dir`.
pub fn plot_sweep(runs_csv: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let runs = inputs::read_sweep(runs_csv)?;
    if runs.is_empty() {
        return Err(Error::invalid_data(format!(
            "{} has no rows; run the sweep first",
            runs_csv.display()
        )));
    }
    write_figures(&[sweep_figure(&runs)], out_dir)
}

fn write_figures(figures: &[Figure], out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut files = Vec::new();
    for figure in figures {
        files.extend(render::write_figure(figure, out_dir)?);
    }
    Ok(files)
}
