//! Experiment configuration (TOML) and its validation.
//!
//! A config has the sections `[task]`, `[model]`, `[init]`, `[train]` and `[record]` plus a
//! top-level `seed`. Symbols follow the paper: n samples of length L over d tokens, attention
//! width m, m1 MLP neurons. Times are in units of gradient-flow time t, where gradient descent
//! with step eta reaches t = eta x steps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dopri5::StepRule;
use crate::engine::EngineKind;
use crate::error::{Error, format_value};
use crate::integrator::{IntegratorKind, Tolerances};
use crate::model::{Dims, InitScheme};
use crate::run::Schedule;
use crate::task::{FillerMode, TaskSpec};

mod keys;
mod write;

/// Largest number of f64 entries in one copy of the engine state or of the pair index
/// (2^30, 8 GiB as f64). Larger runs would fail on allocation, or abort, long after
/// starting.
pub const MAX_STATE_ENTRIES: u64 = 1 << 30;

/// Largest `record.points`. Every output time is a CSV row and the times are held in memory.
pub const MAX_RECORD_POINTS: usize = 10_000_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of every random draw (dataset, then initial weights).
    #[serde(default)]
    pub seed: u64,
    pub task: TaskConfig,
    pub model: ModelConfig,
    pub init: InitConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub record: RecordConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Number of training samples, a positive multiple of 6.
    pub n: usize,
    /// Sequence length, at least 3.
    #[serde(rename = "L")]
    pub seq_len: usize,
    /// Vocabulary size; optional with distinct fillers, which size it themselves.
    pub d: Option<usize>,
    pub fillers: FillerMode,
    /// Number of test samples, a positive multiple of 6.
    #[serde(default = "default_n_test")]
    pub n_test: usize,
    /// A `.npz` file with `tokens` and `labels` (and optionally `test_tokens`,
    /// `test_labels`) that replaces the generated data.
    pub dataset: Option<PathBuf>,
}

fn default_n_test() -> usize {
    600
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Attention width: rows of W_Q, W_K, W_V.
    pub m: u64,
    /// Number of MLP neurons: rows of W.
    pub m1: u64,
}

/// Name of an initialization law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    Theory,
    KaimingUniform,
    KaimingNormal,
    Gaussian,
}

impl SchemeName {
    /// Spelling in config files.
    pub fn name(self) -> &'static str {
        match self {
            SchemeName::Theory => "theory",
            SchemeName::KaimingUniform => "kaiming-uniform",
            SchemeName::KaimingNormal => "kaiming-normal",
            SchemeName::Gaussian => "gaussian",
        }
    }
}

/// Source of the reduced engine's initial state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReducedInit {
    /// Gram matrices of a parameter draw (the same draw the parameter engine would use).
    #[default]
    Parameters,
    /// A direct Wishart draw of the Gram state, in time independent of m.
    Wishart,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub scheme: SchemeName,
    /// Theory scheme: sigma0 = c0 / sqrt(L m).
    pub c0: Option<f64>,
    /// Theory scheme: sigma1 = c1 / sqrt(m1).
    pub c1: Option<f64>,
    /// Gaussian scheme: standard deviation of W_V, W_K, W_Q entries.
    pub sigma0: Option<f64>,
    /// Gaussian scheme: standard deviation of W entries.
    pub sigma1: Option<f64>,
    /// A `.npz` file with W, W_V, W_K, W_Q and a that replaces the random draw.
    pub weights: Option<PathBuf>,
    #[serde(default)]
    pub reduced_from: ReducedInit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub engine: EngineKind,
    pub integrator: IntegratorKind,
    /// Gradient-descent step size.
    pub eta: Option<f64>,
    /// Final time t.
    pub t_end: Option<f64>,
    /// Limit on gradient-descent steps or on solver steps (accepted plus rejected).
    pub max_steps: Option<u64>,
    /// Stop when the training loss falls to this value.
    pub target_loss: Option<f64>,
    #[serde(default = "default_rtol")]
    pub rtol: f64,
    #[serde(default = "default_atol")]
    pub atol: f64,
    /// Step-size rule of the dopri5 integrator; the PI rule when absent.
    pub controller: Option<StepRule>,
    /// Wall-clock seconds between checkpoints.
    #[serde(default = "default_checkpoint_seconds")]
    pub checkpoint_seconds: f64,
}

fn default_rtol() -> f64 {
    1e-8
}

fn default_atol() -> f64 {
    1e-10
}

fn default_checkpoint_seconds() -> f64 {
    30.0
}

/// Spacing of output times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GridKind {
    /// Geometric from `t_first` to t_end, after t = 0.
    #[default]
    Log,
    /// Evenly spaced from 0 to t_end.
    Linear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    #[serde(default)]
    pub grid: GridKind,
    /// Number of output times after t = 0.
    #[serde(default = "default_points")]
    pub points: usize,
    /// First positive output time of a log grid; defaults to t_end / 10^6.
    pub t_first: Option<f64>,
}

fn default_points() -> usize {
    300
}

impl Default for RecordConfig {
    fn default() -> RecordConfig {
        RecordConfig {
            grid: GridKind::Log,
            points: default_points(),
            t_first: None,
        }
    }
}

impl Config {
    /// Reads and validates a TOML config; relative input paths are taken relative to the
    /// config file's folder and made absolute.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let config = Config::read_file(path)?;
        config
            .validate()
            .map_err(|e| prefix_config_error(e, path))?;
        Ok(config)
    }

    /// Reads a TOML config as [`Config::from_file`] does, but checks only its keys and
    /// types, so that command-line overrides can replace invalid values before
    /// [`Config::validate`] runs.
    pub fn read_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = Config::parse_toml(&text).map_err(|e| prefix_config_error(e, path))?;
        // Input paths are made absolute, so that the config saved in a run folder still
        // finds them when `--resume` loads it from there.
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.task.dataset, &mut config.init.weights]
            .into_iter()
            .flatten()
        {
            let joined = base.join(&*file);
            *file = std::path::absolute(&joined).map_err(|e| Error::io(&joined, e))?;
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let config = Config::parse_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text, checking its keys and types but not its values.
    fn parse_toml(text: &str) -> Result<Config, Error> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        keys::check_keys(&table)?;
        toml::from_str(text).map_err(|e| Error::config(plain_type_names(&e.to_string())))
    }

    /// Writes the config as TOML that reads back to an equal config, with short floats.
    pub fn to_toml(&self) -> String {
        write::config_to_toml(self)
    }

    pub fn task_spec(&self) -> TaskSpec {
        TaskSpec {
            n: self.task.n,
            seq_len: self.task.seq_len,
            vocab_size: self.task.d,
            fillers: self.task.fillers,
            n_test: self.task.n_test,
        }
    }

    /// Resolves the initialization law, rejecting keys that do not belong to it.
    pub fn init_scheme(&self) -> Result<InitScheme, Error> {
        let init = &self.init;
        let used: &[&str] = match init.scheme {
            SchemeName::Theory => &["c0", "c1"],
            SchemeName::Gaussian => &["sigma0", "sigma1"],
            SchemeName::KaimingUniform | SchemeName::KaimingNormal => &[],
        };
        for (key, value) in [
            ("c0", init.c0),
            ("c1", init.c1),
            ("sigma0", init.sigma0),
            ("sigma1", init.sigma1),
        ] {
            if value.is_some() && !used.contains(&key) {
                return Err(Error::config(format!(
                    "init.{key} does not apply to scheme \"{}\"; remove it or change init.scheme",
                    init.scheme.name()
                )));
            }
        }
        let need = |key: &str, value: Option<f64>| {
            let value = value.ok_or_else(|| {
                Error::config(format!(
                    "init.{key} is missing; scheme \"{}\" needs it",
                    init.scheme.name()
                ))
            })?;
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(Error::config(format!(
                    "init.{key} = {} is invalid; it must be a finite number > 0 (for \
                     example 0.1)",
                    format_value(value)
                )))
            }
        };
        Ok(match init.scheme {
            SchemeName::Theory => InitScheme::Theory {
                c0: need("c0", init.c0)?,
                c1: need("c1", init.c1)?,
            },
            SchemeName::Gaussian => InitScheme::Gaussian {
                sigma0: need("sigma0", init.sigma0)?,
                sigma1: need("sigma1", init.sigma1)?,
            },
            SchemeName::KaimingUniform => InitScheme::KaimingUniform,
            SchemeName::KaimingNormal => InitScheme::KaimingNormal,
        })
    }

    /// Sizes for the initial-weight laws, given the resolved vocabulary size.
    pub fn dims(&self, d: usize) -> Dims {
        Dims {
            d,
            seq_len: self.task.seq_len,
            m: self.model.m as usize,
            m1: self.model.m1 as usize,
        }
    }

    /// Checks every range and combination that can be checked without reading files.
    pub fn validate(&self) -> Result<(), Error> {
        // TOML integers are signed 64-bit, so a larger seed could not be read back from the
        // config.toml of its run folder.
        if self.seed > i64::MAX as u64 {
            return Err(Error::config(format!(
                "seed = {} is larger than {}, the largest integer a config file can hold; \
                 choose a smaller seed",
                self.seed,
                i64::MAX
            )));
        }
        if self.task.dataset.is_none() {
            self.task_spec().resolved_vocab_size()?;
        } else if self.task.n == 0 {
            return Err(Error::config(
                "task.n = 0; set it to the number of training samples in task.dataset",
            ));
        }
        for (key, value) in [("model.m", self.model.m), ("model.m1", self.model.m1)] {
            if value == 0 {
                return Err(Error::config(format!("{key} = 0; widths must be >= 1")));
            }
        }
        self.init_scheme()?;
        if self.init.reduced_from == ReducedInit::Wishart {
            if self.train.engine != EngineKind::Reduced {
                return Err(Error::config(
                    "init.reduced_from = \"wishart\" applies only to train.engine = \"reduced\""
                        .to_string(),
                ));
            }
            if matches!(self.init.scheme, SchemeName::KaimingUniform) || self.init.weights.is_some()
            {
                return Err(Error::config(
                    "init.reduced_from = \"wishart\" needs Gaussian weights without a weights \
                     file; use scheme theory, gaussian or kaiming-normal, or set reduced_from \
                     = \"parameters\""
                        .to_string(),
                ));
            }
        }
        self.check_sizes()?;
        self.schedule()?;
        Ok(())
    }

    /// Checks that the pair index and the engine state fit in [`MAX_STATE_ENTRIES`] entries,
    /// with the vocabulary size resolved from the task (0 while it comes from a dataset file).
    fn check_sizes(&self) -> Result<(), Error> {
        let task = &self.task;
        let pair_slots = (task.n.max(task.n_test) as u64)
            .saturating_mul(task.seq_len as u64)
            .saturating_mul(task.seq_len as u64);
        if pair_slots > MAX_STATE_ENTRIES {
            return Err(Error::config(format!(
                "task.n = {}, n_test = {} and L = {} give {pair_slots} (sample, query, key) \
                 slots, above the limit {MAX_STATE_ENTRIES}; lower n, n_test or L",
                task.n, task.n_test, task.seq_len
            )));
        }
        let d = self.task_spec().resolved_vocab_size().unwrap_or(0);
        check_state_size(
            self.train.engine,
            self.draws_weights(),
            d,
            self.model.m,
            self.model.m1,
        )
    }

    /// Returns whether the run starts from weights (drawn or read), rather than from a
    /// direct Wishart draw of the Gram state.
    pub fn draws_weights(&self) -> bool {
        !(self.train.engine == EngineKind::Reduced
            && self.init.reduced_from == ReducedInit::Wishart)
    }

    /// Resolves the loop settings: integrator, final time, step limit and output times.
    pub fn schedule(&self) -> Result<Schedule, Error> {
        let train = &self.train;
        let positive = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(Error::config(format!(
                    "train.{key} = {} is invalid; it must be a finite number > 0",
                    format_value(value)
                )))
            }
        };
        for (key, value) in [("rtol", train.rtol), ("atol", train.atol)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(Error::config(format!(
                    "train.{key} = {} is outside (0, 1); typical values are rtol = 1e-8, \
                     atol = 1e-10",
                    format_value(value)
                )));
            }
        }
        positive("checkpoint_seconds", train.checkpoint_seconds)?;
        match (train.controller, train.integrator) {
            (None, _) | (Some(_), IntegratorKind::Dopri5) => {}
            (Some(_), IntegratorKind::GradientDescent) => {
                return Err(Error::config(
                    "train.controller applies only to gradient flow, not to \
                     train.integrator = \"gradient-descent\"; remove it",
                ));
            }
            (Some(StepRule::Pi), _) => {}
            (Some(rule), other) => {
                return Err(Error::config(format!(
                    "train.controller = \"{}\" needs train.integrator = \"dopri5\"; {} uses \
                     the PI rule only, so remove train.controller or change the integrator",
                    rule.name(),
                    other.name()
                )));
            }
        }
        if let Some(target) = train.target_loss {
            positive("target_loss", target)?;
        }

        let (eta, t_end, max_steps) = match train.integrator {
            IntegratorKind::GradientDescent => {
                let eta = positive(
                    "eta",
                    train.eta.ok_or_else(|| {
                        Error::config("train.eta is missing; gradient descent needs a step size")
                    })?,
                )?;
                let t_end = match (train.t_end, train.max_steps) {
                    (Some(t_end), _) => positive("t_end", t_end)?,
                    (None, Some(steps)) => {
                        let t_end = eta * steps as f64;
                        if !t_end.is_finite() {
                            return Err(Error::config(format!(
                                "train.eta = {} times train.max_steps = {steps} overflows; \
                                 lower eta or max_steps, or set train.t_end",
                                format_value(eta)
                            )));
                        }
                        t_end
                    }
                    (None, None) => {
                        return Err(Error::config(
                            "gradient descent needs train.t_end or train.max_steps",
                        ));
                    }
                };
                (eta, t_end, train.max_steps.unwrap_or(u64::MAX))
            }
            _ => {
                if train.eta.is_some() {
                    return Err(Error::config(format!(
                        "train.eta applies only to gradient descent, not to train.integrator = \
                         \"{}\"; remove it",
                        train.integrator.name()
                    )));
                }
                let t_end = positive(
                    "t_end",
                    train.t_end.ok_or_else(|| {
                        Error::config("train.t_end is missing; gradient flow needs a final time")
                    })?,
                )?;
                (0.0, t_end, train.max_steps.unwrap_or(100_000_000))
            }
        };
        if max_steps == 0 {
            return Err(Error::config("train.max_steps = 0; it must be >= 1"));
        }
        // Gradient descent takes round(t_end / eta) steps, so a t_end below eta / 2 would
        // end the run at t = 0 without a single step.
        if train.integrator == IntegratorKind::GradientDescent && (t_end / eta).round() < 1.0 {
            return Err(Error::config(format!(
                "train.t_end = {} is less than half of train.eta = {}, so gradient descent \
                 would take no step; raise t_end or lower eta",
                format_value(t_end),
                format_value(eta)
            )));
        }
        Ok(Schedule {
            integrator: train.integrator,
            eta,
            tolerances: Tolerances {
                rtol: train.rtol,
                atol: train.atol,
                rule: train.controller.unwrap_or_default(),
            },
            t_end,
            end_is_step_limit: train.integrator == IntegratorKind::GradientDescent
                && train.t_end.is_none(),
            max_steps,
            target_loss: train.target_loss,
            record_times: self.record.times(t_end)?,
        })
    }
}

/// Replaces serde's names of integer types in a parse error by what a config must contain,
/// so that `m = 1e6` is reported as needing a whole number, not a `u64`.
fn plain_type_names(message: &str) -> String {
    let mut text = message.to_string();
    for name in ["u64", "usize", "u32"] {
        text = text.replace(
            &format!("expected {name}"),
            "expected a whole number >= 0 in plain digits (write 1000000, not 1e6 or 1000000.0)",
        );
    }
    text
}

/// Puts the config file's path in front of the message of a configuration error.
pub fn prefix_config_error(error: Error, path: &Path) -> Error {
    match error {
        Error::Config(message) => Error::config(format!("{}: {message}", path.display())),
        other => other,
    }
}

/// Checks that one copy of the state of `engine` fits in [`MAX_STATE_ENTRIES`] entries:
/// m1 m + 3 m d weights for the parameter engine, 4 d^2 Gram entries for the reduced one.
/// The reduced engine also stores the weights while it starts from a parameter draw
/// (`draws_weights`), so their count is checked then too.
pub fn check_state_size(
    engine: EngineKind,
    draws_weights: bool,
    d: usize,
    m: u64,
    m1: u64,
) -> Result<(), Error> {
    let d = d as u64;
    let gib = |entries: u64| entries as f64 * 8.0 / (1u64 << 30) as f64;
    let weights = m1
        .saturating_mul(m)
        .saturating_add(m.saturating_mul(d).saturating_mul(3));
    if (engine == EngineKind::Parameter || draws_weights) && weights > MAX_STATE_ENTRIES {
        let fix = match engine {
            EngineKind::Parameter => "use train.engine = \"reduced\" with",
            EngineKind::Reduced => "set",
        };
        return Err(Error::config(format!(
            "the initial weights would have {weights} entries ({:.1} GiB) at d = {d}, m = {m}, \
             m1 = {m1}, above the limit {MAX_STATE_ENTRIES}; {fix} init.reduced_from = \
             \"wishart\" to draw the Gram state directly for widths this large",
            gib(weights)
        )));
    }
    let grams = d.saturating_mul(d).saturating_mul(4);
    if engine == EngineKind::Reduced && grams > MAX_STATE_ENTRIES {
        return Err(Error::config(format!(
            "the reduced engine would hold {grams} Gram entries ({:.1} GiB per state copy) at \
             d = {d}, above the limit {MAX_STATE_ENTRIES}; lower the vocabulary size (task.d, \
             or n and L with distinct fillers)",
            gib(grams)
        )));
    }
    Ok(())
}

impl RecordConfig {
    /// Output times: 0, then `points` times up to `t_end` (the last is exactly `t_end`).
    pub fn times(&self, t_end: f64) -> Result<Vec<f64>, Error> {
        if self.points == 0 {
            return Err(Error::config("record.points = 0; it must be >= 1"));
        }
        if self.points > MAX_RECORD_POINTS {
            return Err(Error::config(format!(
                "record.points = {} is above the limit {MAX_RECORD_POINTS}; lower it",
                self.points
            )));
        }
        if self.grid == GridKind::Linear && self.t_first.is_some() {
            return Err(Error::config(
                "record.t_first applies only to grid = \"log\"; remove it or set grid = \"log\"",
            ));
        }
        let mut times = vec![0.0];
        match self.grid {
            GridKind::Linear => {
                times.extend((1..=self.points).map(|k| t_end * k as f64 / self.points as f64));
            }
            GridKind::Log => {
                let t_first = self.t_first.unwrap_or(t_end * 1e-6);
                if !(t_first > 0.0 && t_first <= t_end) {
                    return Err(Error::config(format!(
                        "record.t_first = {} must lie in (0, t_end = {}]",
                        format_value(t_first),
                        format_value(t_end)
                    )));
                }
                let ratio = (t_end / t_first).ln();
                let steps = self.points.saturating_sub(1).max(1) as f64;
                times.extend((0..self.points).map(|k| t_first * (ratio * k as f64 / steps).exp()));
            }
        }
        if let Some(last) = times.last_mut() {
            *last = t_end;
        }
        // Rounding in the grid formula can put a time at or past the next one (for t_first
        // within a few ulps of t_end), so keep only a strictly increasing sequence.
        let mut increasing: Vec<f64> = Vec::with_capacity(times.len());
        for t in times {
            if increasing.last().is_none_or(|&previous| t > previous) && t <= t_end {
                increasing.push(t);
            }
        }
        Ok(increasing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        seed = 3
        [task]
        n = 12
        L = 4
        d = 20
        fillers = "sampled"
        [model]
        m = 8
        m1 = 6
        [init]
        scheme = "kaiming-uniform"
        [train]
        engine = "parameter"
        integrator = "gradient-descent"
        eta = 0.1
        max_steps = 100
    "#;

    #[test]
    fn minimal_config_parses() {
        let config = Config::from_toml(MINIMAL).unwrap();
        let schedule = config.schedule().unwrap();
        assert!((schedule.t_end - 10.0).abs() < 1e-12);
        assert_eq!(schedule.record_times[0], 0.0);
        assert_eq!(*schedule.record_times.last().unwrap(), 10.0);
    }

    #[test]
    fn unknown_key_rejected() {
        let text = MINIMAL.replace("eta = 0.1", "eta = 0.1\netta = 2");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("etta"), "{err}");
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let text = MINIMAL.replace("eta = 0.1", "eta = 0.1\netta = 2");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("unknown key `train.etta`; did you mean `eta`?"),
            "{err}"
        );
    }

    #[test]
    fn known_keys_match_config_fields() {
        // A config with every optional value set serializes every field, so its keys are
        // exactly the fields serde accepts.
        let mut config = Config::from_toml(MINIMAL).unwrap();
        config.task.dataset = Some(PathBuf::from("data.npz"));
        config.init.c0 = Some(1.0);
        config.init.c1 = Some(1.0);
        config.init.sigma0 = Some(1.0);
        config.init.sigma1 = Some(1.0);
        config.init.weights = Some(PathBuf::from("weights.npz"));
        config.train.t_end = Some(1.0);
        config.train.target_loss = Some(0.1);
        config.train.controller = Some(StepRule::Integral);
        config.record.t_first = Some(0.1);
        let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
        let mut serialized = Vec::new();
        for (key, value) in &table {
            match value.as_table() {
                Some(section) => {
                    serialized.extend(section.keys().map(|inner| format!("{key}.{inner}")))
                }
                None => serialized.push(key.clone()),
            }
        }
        serialized.sort();
        let mut known = keys::all_keys();
        known.sort();
        assert_eq!(serialized, known);
    }

    #[test]
    fn written_config_reads_back_exactly() {
        for value in [1e-300, 1e300, 0.1, 1e-8, 123456.789] {
            let mut config = Config::from_toml(MINIMAL).unwrap();
            config.train.t_end = Some(value);
            config.train.target_loss = Some(value);
            config.train.checkpoint_seconds = value;
            config.record.t_first = Some(value);
            let text = config.to_toml();

            let read: Config = toml::from_str(&text).unwrap();
            assert_eq!(read, config, "{text}");
            assert!(text.contains("rtol = 1e-8\n"), "{text}");
            for line in text.lines() {
                assert!(line.len() <= 40, "long line {line:?} in\n{text}");
            }
        }
    }

    #[test]
    fn scheme_mismatch_rejected() {
        let text = MINIMAL.replace(
            "scheme = \"kaiming-uniform\"",
            "scheme = \"theory\"\nc0 = 0.1",
        );
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("init.c1 is missing"), "{err}");
    }

    #[test]
    fn flow_needs_t_end() {
        let text = MINIMAL
            .replace(
                "integrator = \"gradient-descent\"",
                "integrator = \"dopri5\"",
            )
            .replace("eta = 0.1\n", "");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("train.t_end is missing"), "{err}");
    }

    #[test]
    fn log_grid_is_increasing_and_exact_at_end() {
        let record = RecordConfig {
            grid: GridKind::Log,
            points: 50,
            t_first: Some(1e-3),
        };
        let times = record.times(300.0).unwrap();
        assert_eq!(times.len(), 51);
        assert!((times[1] - 1e-3).abs() < 1e-18);
        assert_eq!(*times.last().unwrap(), 300.0);
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }
}
