//! Sweeps: many runs of one base config over a grid or list of seeds, widths, lengths,
//! initialization scales, engines and integrators.
//!
//! `attnflow sweep SWEEP.toml --out DIR` expands the sweep file ([`plan`]) into runs,
//! executes them in parallel, one thread each ([`runner`]), into `DIR/runs/<name>/`, and
//! writes `DIR/runs.csv` with one row per finished run ([`table`]), including the scaling
//! quantities and the claim verdicts of `attnflow check` ([`crate::theory`]). Rerunning the command skips finished runs and
//! continues partial ones. `--shard K/N` runs one slice ([`shard`]) and `attnflow merge`
//! joins the slices' tables.

pub mod command;
pub mod plan;
pub mod runner;
pub mod shard;
pub mod table;

pub use plan::{PlannedRun, SweepSpec};
pub use runner::{Outcome, SweepOptions, SweepReport, run_sweep};
pub use shard::Shard;
pub use table::{MergeReport, RunRow, merge, read_table};
