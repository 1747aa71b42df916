//! From a config to a finished run folder: data, initial state, engine, loop, outputs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ReducedInit};
use crate::dopri5::StepRule;
use crate::dynamics::Dynamics;
use crate::engine::{Engine, EngineKind, ParameterEngine, ReducedEngine, ReducedState};
use crate::error::Error;
use crate::model::Params;
use crate::npz;
use crate::observables::Observation;
use crate::output::{self, Checkpoint, RunFolder};
use crate::run::{RunState, StopReason, run};
use crate::task::{Dataset, FIRST_FILLER, FillerMode, TaskData, TaskSpec, filler_occurrences};

/// Random stream of the dataset draw.
const DATA_STREAM: u64 = 0;
/// Random stream of the initial-weight draw.
const INIT_STREAM: u64 = 1;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Builds the training and test sets: generated from the seed, or read from
/// `task.dataset` (with a generated test set when the file has none).
pub fn build_data(config: &Config) -> Result<TaskData, Error> {
    let mut rng = rng(config.seed, DATA_STREAM);
    let Some(path) = &config.task.dataset else {
        return config.task_spec().generate(&mut rng);
    };

    let file = npz::read_dataset(path)?;
    if file.seq_len != config.task.seq_len {
        return Err(Error::config(format!(
            "{} has sequences of length {} but task.L = {}; set task.L = {}",
            path.display(),
            file.seq_len,
            config.task.seq_len,
            file.seq_len
        )));
    }
    let rows = file.train_labels.len();
    if rows != config.task.n {
        return Err(Error::config(format!(
            "{} has {rows} training samples but task.n = {}; set task.n = {rows}",
            path.display(),
            config.task.n
        )));
    }
    if let Some((_, labels)) = &file.test
        && labels.is_empty()
    {
        return Err(Error::invalid_data(format!(
            "{}: `test_labels` is empty; remove `test_tokens` and `test_labels` to draw a test \
             set, or store at least one test sample",
            path.display()
        )));
    }
    let needed = file.min_vocab_size().max(4);
    let mut vocab_size = config.task.d.or(file.vocab_size).unwrap_or(needed);
    if vocab_size < needed {
        return Err(Error::config(format!(
            "the vocabulary size d = {vocab_size} is smaller than the largest token id in {} \
             plus one ({needed}); raise task.d",
            path.display()
        )));
    }

    let (test_tokens, test_labels) = match file.test {
        Some(test) => test,
        None => {
            let test = generate_test_set(config, file.seq_len, vocab_size, &mut rng)?;
            vocab_size = test.vocab_size;
            (test.tokens, test.labels)
        }
    };
    let train = Dataset::new(
        file.train_tokens,
        file.train_labels,
        file.seq_len,
        vocab_size,
    )
    .map_err(|e| prefix_path(e, path))?;
    let test = Dataset::new(test_tokens, test_labels, file.seq_len, vocab_size)
        .map_err(|e| prefix_path(e, path))?;
    Ok(TaskData { train, test })
}

fn prefix_path(error: Error, path: &Path) -> Error {
    match error {
        Error::InvalidData(message) => {
            Error::invalid_data(format!("{}: {message}", path.display()))
        }
        other => other,
    }
}

/// Draws `task.n_test` held-out samples for an imported training set over `vocab_size`
/// tokens. Sampled fillers come from that vocabulary; distinct fillers are new tokens after
/// it, which extend the vocabulary.
fn generate_test_set(
    config: &Config,
    seq_len: usize,
    vocab_size: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Dataset, Error> {
    let fillers = config.task.fillers;
    let spec = TaskSpec {
        n: config.task.n_test,
        seq_len,
        vocab_size: (fillers == FillerMode::Sampled).then_some(vocab_size),
        fillers,
        n_test: 6,
    };
    let mut test = spec.generate(rng)?.train;
    if fillers == FillerMode::Distinct {
        for id in test.tokens.iter_mut().filter(|k| **k >= FIRST_FILLER) {
            *id = vocab_size + (*id - FIRST_FILLER);
        }
        test.vocab_size = vocab_size + filler_occurrences(config.task.n_test, seq_len);
    }
    Ok(test)
}

/// Initialization actually used, recorded in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitInfo {
    /// "theory", "kaiming-uniform", "kaiming-normal", "gaussian" or "file".
    pub scheme: String,
    /// Standard deviation of the W_V, W_K, W_Q entries.
    pub sigma0: f64,
    /// Standard deviation of the W entries.
    pub sigma1: f64,
    /// "parameters" or "wishart".
    pub drawn_as: String,
}

/// Everything a run starts from.
pub struct Prepared {
    pub dynamics: Dynamics,
    pub y0: Vec<f64>,
    /// The initial weights, when the state came from a parameter draw or file.
    pub params: Option<Params>,
    pub init: InitInfo,
    /// Reduced state at t = 0, for the theory predictions.
    pub initial_reduced: ReducedState,
}

/// Builds data, the initial state and the engine for `config`.
pub fn prepare(config: &Config) -> Result<Prepared, Error> {
    let data = build_data(config)?;
    let d = data.train.vocab_size;
    crate::config::check_state_size(
        config.train.engine,
        config.draws_weights(),
        d,
        config.model.m,
        config.model.m1,
    )?;
    let dims = config.dims(d);
    let scheme = config.init_scheme()?;
    let (attention_law, head_law) = scheme.laws(dims)?;
    let mut init = InitInfo {
        scheme: config.init.scheme.name().to_string(),
        sigma0: attention_law.std(),
        sigma1: head_law.std(),
        drawn_as: "parameters".to_string(),
    };

    let mut rng = rng(config.seed, INIT_STREAM);
    let wishart = config.train.engine == EngineKind::Reduced
        && config.init.reduced_from == ReducedInit::Wishart;
    let params = if wishart {
        None
    } else if let Some(path) = &config.init.weights {
        let params = npz::read_weights(path, d)?;
        check_widths(config, &params, path)?;
        init.scheme = "file".to_string();
        // The law of a file's weights is unknown, so the summary reports their sample
        // standard deviations. kappa does not use them: it comes from the initial state.
        init.sigma0 = std_of(&[&params.w_v, &params.w_k, &params.w_q]);
        init.sigma1 = std_of(&[&params.w]);
        Some(params)
    } else {
        Some(scheme.sample(dims, &mut rng)?)
    };

    let (engine, y0, initial_reduced): (Box<dyn Engine>, Vec<f64>, ReducedState) =
        match (config.train.engine, &params) {
            (EngineKind::Parameter, Some(params)) => {
                let (engine, y0) = ParameterEngine::new(params);
                let reduced = ReducedState::from_params(params);
                (Box::new(engine), y0, reduced)
            }
            (EngineKind::Reduced, Some(params)) => {
                let reduced = ReducedState::from_params(params);
                let engine = ReducedEngine::new(d, params.width() as f64, params.neurons() as f64);
                (Box::new(engine), reduced.to_flat(), reduced)
            }
            (_, None) => {
                debug_assert!(attention_law.is_gaussian() && head_law.is_gaussian());
                init.drawn_as = "wishart".to_string();
                let reduced = crate::wishart::sample_reduced_state(
                    d,
                    config.model.m,
                    config.model.m1,
                    attention_law.std(),
                    head_law.std(),
                    &mut rng,
                )?;
                let engine = ReducedEngine::new(d, config.model.m as f64, config.model.m1 as f64);
                (Box::new(engine), reduced.to_flat(), reduced)
            }
        };

    Ok(Prepared {
        dynamics: Dynamics::new(data, engine),
        y0,
        params,
        init,
        initial_reduced,
    })
}

fn check_widths(config: &Config, params: &Params, path: &Path) -> Result<(), Error> {
    let (m, m1) = (params.width() as u64, params.neurons() as u64);
    if (m, m1) != (config.model.m, config.model.m1) {
        return Err(Error::config(format!(
            "{} has m = {m}, m1 = {m1} but the config has model.m = {}, model.m1 = {}; set \
             them to match the file",
            path.display(),
            config.model.m,
            config.model.m1
        )));
    }
    Ok(())
}

/// Root mean square of the entries of the given matrices.
fn std_of(matrices: &[&ndarray::Array2<f64>]) -> f64 {
    let (sum, count) = matrices.iter().fold((0.0, 0usize), |(s, c), m| {
        (s + m.iter().map(|v| v * v).sum::<f64>(), c + m.len())
    });
    (sum / count.max(1) as f64).sqrt()
}

/// SHA-256 of the resolved config, in hex.
///
/// The hash covers toml's own serialization, not the text of config.toml, so a change in
/// how config.toml is laid out does not make checkpoints and sweep results of earlier
/// versions look like those of another config. Input files enter by the SHA-256 of their
/// contents instead of their paths, so the config that a run folder saves, which names the
/// folder's copies of its inputs, has the hash of the config that named the originals.
pub fn config_hash(config: &Config) -> String {
    let mut identity = config.clone();
    // The PI rule is the default, so naming it gives the hash of leaving it out, which is
    // also the hash of configs from before the key existed.
    if identity.train.controller == Some(StepRule::Pi) {
        identity.train.controller = None;
    }
    for file in [&mut identity.task.dataset, &mut identity.init.weights]
        .into_iter()
        .flatten()
    {
        // A file that cannot be read enters by its path; the run then stops with the
        // error of reading it.
        if let Ok(bytes) = std::fs::read(&*file) {
            *file = PathBuf::from(format!("sha256:{}", hex_digest(&bytes)));
        }
    }
    let text = toml::to_string_pretty(&identity).expect("a config always serializes");
    hex_digest(text.as_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the inputs of a run into `out` and returns the config to save there, which names
/// those copies relative to the folder. Input files are copied byte for byte; drawn inputs
/// are written from `prepared`.
fn save_inputs(config: &Config, prepared: &Prepared, out: &Path) -> Result<Config, Error> {
    let mut saved = config.clone();
    let copy = |source: &Path, name: &str| -> Result<PathBuf, Error> {
        let bytes = std::fs::read(source).map_err(|e| Error::io(source, e))?;
        output::write_atomic(&out.join(name), &bytes)?;
        Ok(PathBuf::from(name))
    };
    match &config.task.dataset {
        Some(path) => saved.task.dataset = Some(copy(path, output::DATASET)?),
        None => npz::write_dataset(&out.join(output::DATASET), &prepared.dynamics.data)?,
    }
    match (&config.init.weights, &prepared.params) {
        (Some(path), _) => saved.init.weights = Some(copy(path, output::INIT_WEIGHTS)?),
        (None, Some(params)) => npz::write_weights(&out.join(output::INIT_WEIGHTS), params)?,
        (None, None) => {}
    }
    Ok(saved)
}

/// Contents of `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub attnflow_version: String,
    pub config_hash: String,
    pub seed: u64,
    pub engine: String,
    pub integrator: String,
    pub stop_reason: StopReason,
    /// End of Phase 1, or null if not reached.
    pub t1: Option<f64>,
    /// Observables at T1.
    pub at_t1: Option<Observation>,
    pub final_t: f64,
    pub final_loss: f64,
    pub final_test_loss: f64,
    /// Gradient-descent steps, or accepted plus rejected solver steps.
    pub steps: u64,
    pub accepted_steps: u64,
    pub rejected_steps: u64,
    /// Forward-and-backward passes over the training set.
    pub gradient_evaluations: u64,
    pub wall_seconds: f64,
    /// The part of `wall_seconds` spent advancing the state (gradient steps, solver calls
    /// and event location), without setup, observables or file output.
    #[serde(default)]
    pub solve_seconds: f64,
    pub n: usize,
    #[serde(rename = "L")]
    pub seq_len: usize,
    pub d: usize,
    pub m: u64,
    pub m1: u64,
    pub init: InitInfo,
    /// Largest change of m1 trace(GV) - beta over the run, relative to its scale
    /// m1 trace(GV) + beta at t = 0.
    pub invariant_value_drift: f64,
    /// Largest change of trace(GK) - trace(GQ), relative to trace(GK) + trace(GQ) at t = 0.
    pub invariant_key_query_drift: f64,
}

/// Options of one `attnflow run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the checkpoint in the output folder.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Write `dataset.npz` and `init_weights.npz` into the output folder.
    pub save_inputs: bool,
}

/// Runs `config` into the folder `out`, or resumes the run there.
pub fn execute(
    config: &Config,
    out: &Path,
    options: &RunOptions,
    cancel: &AtomicBool,
) -> Result<Summary, Error> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let hash = config_hash(config);
    let schedule = config.schedule()?;
    let mut prepared = prepare(config)?;

    let (mut state, earlier_seconds) = if options.resume {
        let loaded = load_checkpoint(out, &hash, config.train.engine, prepared.y0.len())?;
        if loaded.0.next_record > schedule.record_times.len() {
            return Err(Error::invalid_data(format!(
                "{} points past the last of the {} output times; the checkpoint is damaged, \
                 so start the run again without --resume",
                out.join(output::CHECKPOINT).display(),
                schedule.record_times.len()
            )));
        }
        // A finished run has nothing to continue: its files stay as they are.
        if loaded.0.finished.is_some() {
            if let Ok(summary) = output::read_json::<Summary>(&out.join(output::SUMMARY)) {
                log::info!("the run in {} had already finished", out.display());
                return Ok(summary);
            }
        }
        // Check results describe the trajectory as it was; a resumed run extends it.
        if loaded.0.finished.is_none() {
            remove_outputs(out, &[crate::theory::CHECK, crate::theory::PREDICTIONS])?;
        }
        loaded
    } else {
        remove_earlier_outputs(out)?;
        // With the inputs saved, the folder's config names its own copies, so the folder
        // stays usable when the original files move.
        let saved = if options.save_inputs {
            save_inputs(config, &prepared, out)?
        } else {
            config.clone()
        };
        output::write_atomic(&out.join(output::CONFIG), saved.to_toml().as_bytes())?;
        (RunState::new(prepared.y0.clone()), 0.0)
    };
    let rows = state.rows_written;
    let mut folder = RunFolder::open(
        out,
        rows,
        hash.clone(),
        config.train.checkpoint_seconds,
        schedule.t_end,
        options.progress,
    )?;
    folder.earlier_seconds = earlier_seconds;

    log::info!(
        "run started: engine {}, integrator {}, {}, output {}",
        config.train.engine.name(),
        config.train.integrator.name(),
        schedule.end_text(),
        out.display()
    );
    let dynamics = &mut prepared.dynamics;
    let result = run(dynamics, &schedule, &mut state, &mut folder, cancel);
    folder.finish_progress();
    let reason = match result {
        Ok(reason) => reason,
        Err(error) => {
            // The caller reports the error itself, so at the default log level it is not
            // printed twice.
            log::debug!("run failed at t = {:e}: {error}", state.t);
            return Err(error);
        }
    };

    let last = dynamics.observe(state.t, &state.y);
    let trajectory = crate::observables::read_trajectory(&out.join(output::TRAJECTORY))?;
    let initial = prepared.initial_reduced.summary(config.model.m1 as f64);
    let summary = Summary {
        attnflow_version: env!("CARGO_PKG_VERSION").to_string(),
        config_hash: hash,
        seed: config.seed,
        engine: config.train.engine.name().to_string(),
        integrator: config.train.integrator.name().to_string(),
        stop_reason: reason,
        t1: state.t1,
        at_t1: state.at_t1.clone(),
        final_t: state.t,
        final_loss: last.loss,
        final_test_loss: last.test_loss,
        steps: state.steps,
        accepted_steps: state.counts.accepted_steps,
        rejected_steps: state.counts.rejected_steps,
        gradient_evaluations: state.gradient_evaluations,
        wall_seconds: folder.wall_seconds(),
        solve_seconds: state.solve_seconds,
        n: dynamics.data.train.len(),
        seq_len: dynamics.data.train.seq_len,
        d: dynamics.data.train.vocab_size,
        m: config.model.m,
        m1: config.model.m1,
        init: prepared.init.clone(),
        invariant_value_drift: drift(
            &trajectory,
            |row| row.invariant_value,
            config.model.m1 as f64 * trace_gv(&prepared.initial_reduced) + initial.beta,
        ),
        invariant_key_query_drift: drift(
            &trajectory,
            |row| row.invariant_key_query,
            prepared.initial_reduced.gk.diag().sum() + prepared.initial_reduced.gq.diag().sum(),
        ),
    };
    output::write_json(&out.join(output::SUMMARY), &summary)?;
    log::info!(
        "run stopped ({}) at t = {:e} with loss {:e}",
        reason.name(),
        state.t,
        last.loss
    );
    Ok(summary)
}

/// Deletes what an earlier run left in `out`, so that a new run never sits beside the
/// summary, checkpoint, check results or inputs of another one.
fn remove_earlier_outputs(out: &Path) -> Result<(), Error> {
    remove_outputs(
        out,
        &[
            output::SUMMARY,
            output::CHECKPOINT,
            output::TRAJECTORY,
            output::DATASET,
            output::INIT_WEIGHTS,
            crate::theory::CHECK,
            crate::theory::PREDICTIONS,
        ],
    )
}

/// Deletes the files `names` from `out` where they exist.
fn remove_outputs(out: &Path, names: &[&str]) -> Result<(), Error> {
    for &name in names {
        let path = out.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("removed {} of an earlier run", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io(&path, error)),
        }
    }
    Ok(())
}

fn trace_gv(state: &ReducedState) -> f64 {
    state.gv.diag().sum()
}

/// Largest |value(row) - value(first row)| / scale over the trajectory.
fn drift(rows: &[Observation], value: impl Fn(&Observation) -> f64, scale: f64) -> f64 {
    let Some(first) = rows.first() else {
        return 0.0;
    };
    let start = value(first);
    rows.iter()
        .map(|row| (value(row) - start).abs() / scale.abs().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn load_checkpoint(
    out: &Path,
    hash: &str,
    engine: EngineKind,
    state_len: usize,
) -> Result<(RunState, f64), Error> {
    let path: PathBuf = out.join(output::CHECKPOINT);
    if !path.exists() {
        return Err(Error::config(format!(
            "cannot resume: {} does not exist; run without --resume to start the run",
            path.display()
        )));
    }
    let checkpoint: Checkpoint = output::read_json(&path)?;
    if checkpoint.config_hash != hash {
        return Err(Error::config(format!(
            "cannot resume: {} belongs to a different config; resume with the config.toml \
             saved in {}",
            path.display(),
            out.display()
        )));
    }
    checkpoint.check_layout(engine, &path)?;
    if checkpoint.state.y.len() != state_len {
        return Err(Error::invalid_data(format!(
            "{} contains a state of length {} but this config needs {state_len}",
            path.display(),
            checkpoint.state.y.len()
        )));
    }
    Ok((checkpoint.state, checkpoint.wall_seconds))
}
