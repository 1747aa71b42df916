//! A finished run folder, loaded with the states the checks need.

use std::path::Path;

use crate::config::Config;
use crate::dynamics::Dynamics;
use crate::engine::{ReducedEngine, ReducedState};
use crate::error::Error;
use crate::experiment::{self, Summary};
use crate::observables::{Observation, read_trajectory};
use crate::output::{self, Checkpoint};
use crate::task::TaskData;

/// A run folder plus what the config rebuilds: the data and the reduced states at t = 0
/// and at the last time of the run.
pub struct RunRecord {
    pub config: Config,
    pub summary: Summary,
    /// Rows of `trajectory.csv`, in time order.
    pub rows: Vec<Observation>,
    pub data: TaskData,
    /// Reduced state at t = 0.
    pub initial: ReducedState,
    /// Reduced state at the last time of the run (from `checkpoint.json`).
    pub last: ReducedState,
    /// Exact d gamma/dt at t = 0 (length d): the first d entries of the reduced flow at
    /// the initial state.
    pub initial_speed: Vec<f64>,
}

impl RunRecord {
    /// Loads the run in `dir` and rebuilds its data and initial state from `config.toml`.
    pub fn load(dir: &Path) -> Result<RunRecord, Error> {
        let config = Config::from_file(&dir.join(output::CONFIG))?;
        let summary: Summary = output::read_json(&dir.join(output::SUMMARY))?;
        let rows = read_trajectory(&dir.join(output::TRAJECTORY))?;
        if rows.is_empty() {
            return Err(Error::invalid_data(format!(
                "{} has no rows; run the experiment to completion before checking it",
                dir.join(output::TRAJECTORY).display()
            )));
        }
        let checkpoint: Checkpoint = output::read_json(&dir.join(output::CHECKPOINT))?;
        // Prepared first, so that a missing input file is reported as missing: the hash
        // of a config whose input cannot be read never matches.
        let prepared = experiment::prepare(&config)?;
        if checkpoint.config_hash != experiment::config_hash(&config) {
            return Err(Error::invalid_data(format!(
                "{} belongs to a different config than {}; check a folder written by one run",
                dir.join(output::CHECKPOINT).display(),
                dir.join(output::CONFIG).display()
            )));
        }

        let engine = prepared.dynamics.engine();
        checkpoint.check_layout(engine.kind(), &dir.join(output::CHECKPOINT))?;
        if checkpoint.state.y.len() != engine.state_len() {
            return Err(Error::invalid_data(format!(
                "{} contains a state of length {} but the config's engine needs {}; check a folder \
                 written by one run",
                dir.join(output::CHECKPOINT).display(),
                checkpoint.state.y.len(),
                engine.state_len()
            )));
        }
        let last = engine.reduced_state(&checkpoint.state.y);
        let initial = prepared.initial_reduced.clone();
        let data = prepared.dynamics.data.clone();
        let initial_speed = reduced_speed(&data, &initial, engine.width(), engine.neurons());

        Ok(RunRecord {
            config,
            summary,
            rows,
            data,
            initial,
            last,
            initial_speed,
        })
    }

    /// Attention width m.
    pub fn m(&self) -> f64 {
        self.config.model.m as f64
    }

    /// Number of MLP neurons m1.
    pub fn m1(&self) -> f64 {
        self.config.model.m1 as f64
    }

    /// Standard deviation of the entries of W_V, W_K, W_Q at initialization.
    pub fn sigma0(&self) -> f64 {
        self.summary.init.sigma0
    }

    /// End of Phase 1, if the run reached it.
    pub fn t1(&self) -> Option<f64> {
        self.summary.t1
    }

    /// Collects the observables at T1 and the recorded rows after T1, or none when T1 was
    /// not reached. The run stores T1 in its summary, not in the trajectory.
    pub fn phase_two_rows(&self) -> Vec<Observation> {
        let (Some(t1), Some(at_t1)) = (self.t1(), self.at_t1()) else {
            return Vec::new();
        };
        let start = self.rows.partition_point(|row| row.t <= t1);
        std::iter::once(at_t1.clone())
            .chain(self.rows[start..].iter().cloned())
            .collect()
    }

    /// Collects the recorded rows before T1 and the observables at T1, or every row when T1
    /// was not reached.
    pub fn phase_one_rows(&self) -> Vec<Observation> {
        let (Some(t1), Some(at_t1)) = (self.t1(), self.at_t1()) else {
            return self.rows.clone();
        };
        let end = self.rows.partition_point(|row| row.t < t1);
        self.rows[..end]
            .iter()
            .cloned()
            .chain(std::iter::once(at_t1.clone()))
            .collect()
    }

    /// Returns the observables that the run recorded at the located T1.
    pub fn at_t1(&self) -> Option<&Observation> {
        self.summary.at_t1.as_ref()
    }
}

/// Computes d gamma/dt of the reduced flow at `state`.
fn reduced_speed(data: &TaskData, state: &ReducedState, m: f64, m1: f64) -> Vec<f64> {
    let d = state.vocab_size();
    let engine = ReducedEngine::new(d, m, m1);
    let mut dynamics = Dynamics::new(data.clone(), Box::new(engine));
    let y = state.to_flat();
    let mut dy = vec![0.0; y.len()];
    dynamics.flow(&y, &mut dy);
    dy.truncate(d);
    dy
}
