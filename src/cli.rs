//! The `attnflow` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::engine::EngineKind;
use crate::experiment::{self, RunOptions};
use crate::integrator::IntegratorKind;
use crate::npz;
use crate::output;
use crate::run::StopReason;

/// Exact training dynamics of a one-layer transformer on the word co-occurrence task.
///
/// Time is gradient-flow time t throughout: gradient descent with step eta reaches
/// t = eta x steps. Set RUST_LOG=info (or debug) for log messages on stderr.
#[derive(Parser, Debug)]
#[command(name = "attnflow", version, about, long_about = None)]
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
    #[arg(long)]
    pub t_end: Option<f64>,

    /// Do not write dataset.npz and init_weights.npz into the output folder.
    #[arg(long)]
    pub no_save_inputs: bool,

    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Experiment config (TOML).
    pub config: PathBuf,

    /// Output folder for dataset.npz and init_weights.npz.
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
    }
}

/// Applies the command-line overrides to a config and validates the result.
fn apply_overrides(mut config: Config, args: &RunArgs) -> Result<Config> {
    // Absolute paths keep working when `--resume` reads the config saved in the run folder.
    if let Some(path) = &args.dataset {
        config.task.dataset = Some(std::path::absolute(path)?);
    }
    if let Some(path) = &args.init_weights {
        config.init.weights = Some(std::path::absolute(path)?);
    }
    if let Some(engine) = args.engine {
        config.train.engine = engine;
    }
    if let Some(integrator) = args.integrator {
        config.train.integrator = integrator;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(t_end) = args.t_end {
        config.train.t_end = Some(t_end);
    }
    config.validate()?;
    Ok(config)
}

fn run_command(args: RunArgs) -> Result<i32> {
    let config = if args.resume {
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
        apply_overrides(Config::from_file(path)?, &args)?
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
    let summary = experiment::execute(&config, &args.out, &options, &cancel)?;

    let t1 = summary
        .t1
        .map_or_else(|| "not reached".to_string(), |t| format!("{t:.6e}"));
    println!(
        "stopped: {} at t = {:.6e} after {} steps in {:.2} s",
        stop_text(summary.stop_reason),
        summary.final_t,
        summary.steps,
        summary.wall_seconds
    );
    println!("T1 (all training samples correct): {t1}");
    println!(
        "final loss {:.6e}, test loss {:.6e}",
        summary.final_loss, summary.final_test_loss
    );
    println!("outputs in {}", args.out.display());
    Ok(if summary.stop_reason == StopReason::Interrupted {
        130
    } else {
        0
    })
}

fn stop_text(reason: StopReason) -> &'static str {
    match reason {
        StopReason::ReachedEnd => "reached t_end",
        StopReason::TargetLoss => "reached the target loss",
        StopReason::StepLimit => "reached the step limit",
        StopReason::Interrupted => "interrupted; continue with --resume",
    }
}

fn init_command(args: InitArgs) -> Result<i32> {
    let config = Config::from_file(&args.config)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create {}", args.out.display()))?;
    let prepared = experiment::prepare(&config)?;
    npz::write_dataset(&args.out.join(output::DATASET), &prepared.dynamics.data)?;
    match &prepared.params {
        Some(params) => npz::write_weights(&args.out.join(output::INIT_WEIGHTS), params)?,
        None => anyhow::bail!(
            "this config draws the reduced state directly (init.reduced_from = \"wishart\"), \
             so there are no weights to write"
        ),
    }
    println!(
        "wrote {} and {}",
        args.out.join(output::DATASET).display(),
        args.out.join(output::INIT_WEIGHTS).display()
    );
    Ok(0)
}
