//! The `sweep` and `merge` subcommands.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;

use crate::error::Error;
use crate::sweep::{Shard, SweepOptions, SweepSpec, merge, run_sweep};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep file (TOML): a base run config plus [grid] and/or [[runs]]; see
    /// experiments/width-scaling.toml.
    pub sweep: PathBuf,

    /// Output folder: runs/<name>/ per run, runs.csv, plan.json. Rerunning into the same
    /// folder skips finished runs and continues interrupted ones.
    #[arg(long)]
    pub out: PathBuf,

    /// Run only the K-th of N disjoint slices (runs with index mod N = K - 1), e.g. 2/8
    /// for a job array.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Runs at once, each on one thread; defaults to the number of cores.
    #[arg(long)]
    pub jobs: Option<usize>,

    /// Also write dataset.npz and init_weights.npz into each run folder.
    #[arg(long)]
    pub save_inputs: bool,

    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Print the index and folder name of each run of the shard, and run nothing.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Sweep output folders of the shards of one sweep.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,

    /// Folder for the merged runs.csv and plan.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `--shard K/N`, with the error message free of the configuration-error prefix.
fn parse_shard(text: &str) -> Result<Shard, String> {
    text.parse().map_err(|error| match error {
        Error::Config(message) => message,
        other => other.to_string(),
    })
}

/// Runs `attnflow sweep`; returns 130 when interrupted and 1 when a run failed.
pub fn sweep_command(args: SweepArgs) -> Result<i32> {
    let spec = SweepSpec::from_file(&args.sweep)?;
    let runs = spec.runs()?;
    let shard = args.shard.unwrap_or(Shard::ALL);
    if args.list {
        for run in runs.iter().filter(|run| shard.contains(run.index)) {
            crate::outln!("{}\t{}", run.index, run.name)?;
        }
        return Ok(0);
    }
    let jobs = match args.jobs {
        Some(0) => anyhow::bail!("--jobs 0 is invalid; pass at least 1"),
        Some(jobs) => jobs,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second signal ends the process at once.
            std::process::exit(130);
        }
        // A closed stderr must not panic the handler thread.
        let _ = writeln!(
            std::io::stderr(),
            "interrupted: checkpointing the running runs; press Ctrl-C again to quit now"
        );
    })
    .context("failed to install the Ctrl-C handler")?;

    let options = SweepOptions {
        shard,
        jobs,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        save_inputs: args.save_inputs,
    };
    let report = run_sweep(&runs, &args.out, &options, &cancel)?;

    crate::outln!(
        "{} runs in the sweep, {} in shard {}: {} finished now ({} resumed), {} finished \
         before, {} failed, {} interrupted, {} not started",
        report.planned,
        report.selected,
        options.shard,
        report.finished,
        report.resumed,
        report.already_done,
        report.failed.len(),
        report.interrupted,
        report.not_started
    )?;
    for (name, message) in &report.failed {
        crate::outln!("failed: {name}: {message}")?;
    }
    crate::outln!(
        "wrote {} ({})",
        args.out.join(crate::sweep::table::RUNS_TABLE).display(),
        count(report.rows, "row")
    )?;

    if report.interrupted + report.not_started > 0 {
        crate::outln!("rerun the same command to finish the remaining runs")?;
        return Ok(130);
    }
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

/// Runs `attnflow merge`; returns 1 when some runs of the sweep are missing.
pub fn merge_command(args: MergeArgs) -> Result<i32> {
    let report = merge(&args.dirs, &args.out)?;
    crate::outln!(
        "wrote {} ({})",
        args.out.join(crate::sweep::table::RUNS_TABLE).display(),
        count(report.rows.len(), "row")
    )?;
    if report.missing.is_empty() {
        return Ok(0);
    }
    crate::outln!(
        "{} runs of the sweep have no finished result in these folders: {}",
        report.missing.len(),
        report.missing.join(", ")
    )?;
    Ok(1)
}

/// Formats `n` with `noun`, adding "s" unless n is 1.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
