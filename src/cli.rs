//! The `attnflow` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, prefix_config_error};
use crate::engine::EngineKind;
use crate::error::Error;
use crate::experiment::{self, RunOptions};
use crate::integrator::IntegratorKind;
use crate::npz;
use crate::output;
use crate::plots;
use crate::run::StopReason;
use crate::sweep::command::{MergeArgs, SweepArgs, merge_command, sweep_command};

/// Exact training dynamics of a one-layer transformer on the word co-occurrence task.
///
/// Time is gradient-flow time t throughout: gradient descent with step eta reaches
/// t = eta x steps. Set RUST_LOG=info (or debug) for log messages on stderr.
#[derive(Parser, Debug)]
#[command(name = "attnflow", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train from a config and write a run folder (config.toml, trajectory.csv,
    /// summary.json, checkpoint.json, dataset.npz, init_weights.npz).
    Run(RunArgs),
    /// Write the dataset and initial weights of a config as .npz files, without training.
    Init(InitArgs),
    /// Run a grid or list of configs in parallel, one folder each, plus runs.csv.
    Sweep(SweepArgs),
    /// Join the runs.csv of the shards of one sweep.
    Merge(MergeArgs),
    /// Compare a finished run with the theory: print one row per claim and write
    /// check.json and predictions.csv into the run folder.
    Check(CheckArgs),
    /// Draw the figures of a run folder as PNG and SVG (attention scores, losses, balancing,
    /// loss law, readouts); theory curves need predictions.csv from `attnflow check`.
    Plot(PlotArgs),
    /// Draw T1 x kappa and c / beta(0) against the width m from a sweep's runs.csv.
    PlotSweep(PlotSweepArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Experiment config (TOML); see experiments/ for examples.
    pub config: Option<PathBuf>,

    /// Output folder; created if missing.
    #[arg(long)]
    pub out: PathBuf,

    /// Continue the run in --out from its checkpoint, with the config saved there.
    #[arg(long)]
    pub resume: bool,

    /// Dataset .npz (tokens, labels) replacing the generated data; overrides task.dataset.
    #[arg(long, value_name = "FILE")]
    pub dataset: Option<PathBuf>,

    /// Initial weights .npz (W, W_V, W_K, W_Q, a); overrides init.weights.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,

    /// Engine: parameter (weights, memory ~ m (m1 + 3d)) or reduced (Gram matrices, memory
    /// ~ 4 d^2, independent of m); overrides train.engine.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,

    /// Integrator; overrides train.integrator.
    #[arg(long, value_enum)]
    pub integrator: Option<IntegratorKind>,

    /// Seed of the dataset and weight draws; overrides seed.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Final time t (flow time units); overrides train.t_end.
    // A negative value is read as a value, so that validation names it, not as a flag.
    #[arg(long, allow_negative_numbers = true)]
    pub t_end: Option<f64>,

    /// Do not write dataset.npz and init_weights.npz into the output folder.
    #[arg(long)]
    pub no_save_inputs: bool,

    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// After the run, compare it with the theory as `attnflow check` does.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Run folder written by `attnflow run`.
    pub run_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Experiment config (TOML).
    pub config: PathBuf,

    /// Output folder for dataset.npz and init_weights.npz.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folder with trajectory.csv and summary.json.
    pub run_dir: PathBuf,

    /// Folder for the figures; created if missing. Default: RUN_DIR/figures.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PlotSweepArgs {
    /// Sweep table with the columns m, seed, t1_kappa and c_over_beta, one row per run.
    pub runs_csv: PathBuf,

    /// Folder for the figure; created if missing.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> Result<i32> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Init(args) => init_command(args),
        Command::Sweep(args) => sweep_command(args),
        Command::Merge(args) => merge_command(args),
        Command::Check(args) => check_command(&args.run_dir),
        Command::Plot(args) => plot_command(args),
        Command::PlotSweep(args) => plot_sweep_command(args),
    }
}

/// Reads the config file, applies the command-line overrides and validates the result.
///
/// The overrides go in before validation, so a flag can replace an invalid value of the
/// file. A validation error names the flag for each overridden key that its message
/// mentions, and the file for the other values.
fn read_with_overrides(path: &Path, args: &RunArgs) -> Result<Config> {
    let mut config = Config::read_file(path)?;
    // (config key, flag) of each override given.
    let mut overridden: Vec<(&str, &str)> = Vec::new();
    // Absolute paths keep working when `--resume` reads the config saved in the run folder.
    if let Some(dataset) = &args.dataset {
        config.task.dataset = Some(std::path::absolute(dataset)?);
        overridden.push(("task.dataset", "--dataset"));
    }
    if let Some(weights) = &args.init_weights {
        config.init.weights = Some(std::path::absolute(weights)?);
        overridden.push(("init.weights", "--init-weights"));
    }
    if let Some(engine) = args.engine {
        config.train.engine = engine;
        overridden.push(("train.engine", "--engine"));
    }
    if let Some(integrator) = args.integrator {
        config.train.integrator = integrator;
        overridden.push(("train.integrator", "--integrator"));
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
        overridden.push(("seed", "--seed"));
    }
    if let Some(t_end) = args.t_end {
        config.train.t_end = Some(t_end);
        overridden.push(("train.t_end", "--t-end"));
    }

    let Err(error) = config.validate() else {
        return Ok(config);
    };
    let Error::Config(message) = &error else {
        return Err(error.into());
    };
    // NOTE: a key counts as mentioned when its name appears in the message as a whole
    // word, so a message about a file value that also names an overridden key in passing
    // is credited to the flag as well.
    let sources: Vec<String> = overridden
        .iter()
        .filter(|(key, _)| mentions_key(message, key))
        .map(|(key, flag)| format!("{key} is set by {flag}"))
        .collect();
    if sources.is_empty() {
        return Err(prefix_config_error(error, path).into());
    }
    Err(Error::config(format!(
        "{message} ({}; the other values come from {})",
        sources.join(", "),
        path.display()
    ))
    .into())
}

/// Returns whether `message` contains `key` as a whole word: not as part of a longer key
/// or name.
fn mentions_key(message: &str, key: &str) -> bool {
    let is_word_char = |c: char| c.is_alphanumeric() || c == '_';
    message.match_indices(key).any(|(start, _)| {
        // A dot before the match makes it the tail of a longer key, as in `x.seed`, but a
        // dot after it can end a sentence.
        let before = message[..start].chars().next_back();
        let after = message[start + key.len()..].chars().next();
        let starts_word = !before.is_some_and(|c| is_word_char(c) || c == '.');
        let ends_word = !after.is_some_and(is_word_char);
        starts_word && ends_word
    })
}

fn run_command(args: RunArgs) -> Result<i32> {
    let config = if args.resume {
        let overrides = [
            ("--dataset", args.dataset.is_some()),
            ("--init-weights", args.init_weights.is_some()),
            ("--engine", args.engine.is_some()),
            ("--integrator", args.integrator.is_some()),
            ("--seed", args.seed.is_some()),
            ("--t-end", args.t_end.is_some()),
        ];
        if let Some((flag, _)) = overrides.iter().find(|(_, given)| *given) {
            anyhow::bail!(
                "{flag} cannot change a resumed run, which continues with the config saved in \
                 {}; start a new run in another folder instead",
                args.out.join(output::CONFIG).display()
            );
        }
        if args.config.is_some() {
            anyhow::bail!(
                "--resume takes its config from {}; remove the config argument",
                args.out.join(output::CONFIG).display()
            );
        }
        Config::from_file(&args.out.join(output::CONFIG))?
    } else {
        let path = args
            .config
            .as_ref()
            .context("missing CONFIG; pass a config file, e.g. experiments/paper-figure1.toml")?;
        read_with_overrides(path, &args)?
    };

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second signal ends the process at once.
            std::process::exit(130);
        }
    })
    .context("failed to install the Ctrl-C handler")?;

    let options = RunOptions {
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        save_inputs: !args.no_save_inputs,
    };
    if !args.resume {
        reject_interrupted_run(&args.out)?;
    }
    let summary = experiment::execute(&config, &args.out, &options, &cancel)?;

    let t1 = summary
        .t1
        .map_or_else(|| "not reached".to_string(), |t| format!("{t:.6e}"));
    crate::outln!(
        "stopped: {} at t = {:.6e} after {} steps in {:.2} s",
        stop_text(summary.stop_reason),
        summary.final_t,
        summary.steps,
        summary.wall_seconds
    )?;
    crate::outln!("T1 (all training samples correct): {t1}")?;
    crate::outln!(
        "final loss {:.6e}, test loss {:.6e}",
        summary.final_loss,
        summary.final_test_loss
    )?;
    crate::outln!("outputs in {}", args.out.display())?;
    if summary.stop_reason == StopReason::Interrupted {
        crate::outln!(
            "continue with: attnflow run --resume --out {}",
            args.out.display()
        )?;
    }
    if args.check && summary.stop_reason != StopReason::Interrupted {
        crate::outln!()?;
        check_command(&args.out)?;
    }
    Ok(if summary.stop_reason == StopReason::Interrupted {
        130
    } else {
        0
    })
}

/// Rejects a fresh run into a folder that contains an interrupted run, whose checkpoint the
/// fresh run would delete. A finished or failed run there is replaced as before.
fn reject_interrupted_run(out: &Path) -> Result<()> {
    let Ok(summary) = output::read_json::<experiment::Summary>(&out.join(output::SUMMARY)) else {
        return Ok(());
    };
    if summary.stop_reason == StopReason::Interrupted {
        anyhow::bail!(
            "{} contains a run interrupted at t = {:e}; continue it with `attnflow run --resume \
             --out {}`, or remove the folder or choose another --out to start again",
            out.display(),
            summary.final_t,
            out.display()
        );
    }
    Ok(())
}

fn stop_text(reason: StopReason) -> &'static str {
    match reason {
        StopReason::ReachedEnd => "reached t_end",
        StopReason::TargetLoss => "reached the target loss",
        StopReason::StepLimit => "reached the step limit",
        StopReason::Interrupted => "interrupted",
    }
}

fn check_command(run_dir: &std::path::Path) -> Result<i32> {
    let report = crate::theory::check_run(run_dir)
        .with_context(|| format!("failed to check the run in {}", run_dir.display()))?;
    crate::outln!("{}", crate::theory::format_table(&report))?;
    crate::outln!(
        "wrote {} and {}",
        run_dir.join(crate::theory::CHECK).display(),
        run_dir.join(crate::theory::PREDICTIONS).display()
    )?;
    Ok(0)
}

fn init_command(args: InitArgs) -> Result<i32> {
    let config = Config::from_file(&args.config)?;
    let prepared = experiment::prepare(&config)?;
    let Some(params) = &prepared.params else {
        anyhow::bail!(
            "{} draws the reduced state directly (init.reduced_from = \"wishart\"), so it has \
             no weights to write; set init.reduced_from = \"parameters\" to draw weights \
             (memory about m (m1 + 3d) numbers)",
            args.config.display()
        );
    };
    // Created only now, so that a config with nothing to write leaves no empty folder.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create {}", args.out.display()))?;
    npz::write_dataset(&args.out.join(output::DATASET), &prepared.dynamics.data)?;
    npz::write_weights(&args.out.join(output::INIT_WEIGHTS), params)?;
    crate::outln!(
        "wrote {} and {}",
        args.out.join(output::DATASET).display(),
        args.out.join(output::INIT_WEIGHTS).display()
    )?;
    Ok(0)
}

fn plot_command(args: PlotArgs) -> Result<i32> {
    let out = args.out.unwrap_or_else(|| args.run_dir.join("figures"));
    let plots = plots::plot_run(&args.run_dir, &out)?;
    if !plots.summary_found {
        crate::outln!(
            "note: no {} in {}, so the run did not finish (it failed or is still running); \
             its recorded rows are drawn without T1",
            output::SUMMARY,
            args.run_dir.display()
        )?;
    }
    if !plots.predictions_found {
        crate::outln!(
            "note: no {} in {}, so R*, the loss-law fit and the baseline are not drawn; \
             run `attnflow check {}` first to add them",
            plots::PREDICTIONS,
            args.run_dir.display(),
            args.run_dir.display()
        )?;
    }
    crate::outln!("wrote {} files to {}", plots.files.len(), out.display())?;
    Ok(0)
}

fn plot_sweep_command(args: PlotSweepArgs) -> Result<i32> {
    let files = plots::plot_sweep(&args.runs_csv, &args.out)?;
    crate::outln!("wrote {} files to {}", files.len(), args.out.display())?;
    Ok(0)
}
