//! Checkpoint and resume, interrupts by signal, and reproducibility of the outputs.
//!
//! A resumed run must write the same trajectory as an uninterrupted one, byte for byte:
//! gradient descent repeats the same steps, and gradient flow restarts each solver call
//! from the step size stored in the checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use attnflow::config::Config;
use attnflow::experiment::{RunOptions, Summary, execute};
use attnflow::run::StopReason;

const DESCENT: &str = r#"
seed = 7
[task]
n = 24
L = 5
d = 30
fillers = "sampled"
n_test = 24
[model]
m = 32
m1 = 16
[init]
scheme = "kaiming-uniform"
[train]
engine = "parameter"
integrator = "gradient-descent"
eta = 0.05
max_steps = 40000
checkpoint_seconds = 0.05
[record]
grid = "log"
points = 200
t_first = 0.05
"#;

const FLOW: &str = r#"
seed = 7
[task]
n = 24
L = 5
d = 30
fillers = "sampled"
n_test = 24
[model]
m = 32
m1 = 16
[init]
scheme = "kaiming-uniform"
[train]
engine = "parameter"
integrator = "dopri5"
rtol = 1e-12
atol = 1e-14
t_end = 1e7
checkpoint_seconds = 0.05
[record]
grid = "log"
points = 200
t_first = 0.05
"#;

fn options(resume: bool) -> RunOptions {
    RunOptions {
        resume,
        progress: false,
        save_inputs: true,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `summary.json` without the wall-clock times, which differ between runs.
fn summary_without_time(dir: &Path) -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_str(&read(&dir.join("summary.json"))).expect("summary.json is JSON");
    let fields = value.as_object_mut().expect("summary is an object");
    for key in ["wall_seconds", "solve_seconds"] {
        fields.remove(key);
    }
    value
}

/// Runs `config` uninterrupted into `dir` and returns its wall-clock time.
fn run_uninterrupted(config: &Config, dir: &Path) -> Duration {
    let started = Instant::now();
    let summary = execute(config, dir, &options(false), &AtomicBool::new(false)).unwrap();
    // Gradient descent configs give only max_steps, so they end at the step limit.
    assert!(
        matches!(
            summary.stop_reason,
            StopReason::ReachedEnd | StopReason::StepLimit
        ),
        "run stopped early: {:?}",
        summary.stop_reason
    );
    started.elapsed()
}

/// Runs `config` into `dir`, sets the cancel flag after `delay`, then resumes to the end.
fn run_interrupted_then_resumed(config: &Config, dir: &Path, delay: Duration) -> Summary {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let timer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        flag.store(true, Ordering::SeqCst);
    });
    let first = execute(config, dir, &options(false), &cancel).unwrap();
    timer.join().unwrap();
    assert_eq!(
        first.stop_reason,
        StopReason::Interrupted,
        "the run ended before the interrupt at {delay:?}"
    );
    assert!(dir.join("checkpoint.json").exists());

    // The saved config is the run's config with its defaults written out.
    let saved = Config::from_file(&dir.join("config.toml")).unwrap();
    assert_eq!(saved.to_toml(), config.to_toml());
    let hash = attnflow::experiment::config_hash;
    assert_eq!(hash(&saved), hash(config));
    execute(&saved, dir, &options(true), &AtomicBool::new(false)).unwrap()
}

fn assert_same_outputs(expected: &Path, actual: &Path) {
    assert_eq!(
        read(&expected.join("trajectory.csv")),
        read(&actual.join("trajectory.csv")),
        "trajectories differ"
    );
    let (mut expected, mut actual) = (summary_without_time(expected), summary_without_time(actual));
    // A resumed flow run evaluates the gradient once more, because the checkpoint does not
    // store the solver's first stage at the resume point. The steps and results are the same.
    let evaluations = |summary: &mut serde_json::Value| {
        let fields = summary.as_object_mut().expect("summary is an object");
        let count = fields
            .remove("gradient_evaluations")
            .expect("summary counts evaluations");
        count.as_u64().expect("the count is an integer")
    };
    let (before, after) = (evaluations(&mut expected), evaluations(&mut actual));
    assert!(
        after == before || after == before + 1,
        "gradient evaluations: {after} after a resume, {before} without"
    );
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(Some(value), actual.get(key), "summary field {key} differs");
    }
    assert_eq!(expected, actual);
}

fn check_resume_matches(text: &str) {
    let config = Config::from_toml(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    let duration = run_uninterrupted(&config, &whole);
    let summary = run_interrupted_then_resumed(&config, &parts, duration / 3);
    assert_ne!(summary.stop_reason, StopReason::Interrupted);
    assert_same_outputs(&whole, &parts);
}

#[test]
fn descent_resume_bit_identical() {
    check_resume_matches(DESCENT);
}

#[test]
fn flow_resume_identical() {
    check_resume_matches(FLOW);
}

#[test]
fn flow_resume_identical_with_integral_rule() {
    // The integral rule carries its proposed step from call to call; the checkpoint must
    // carry it too.
    let text = FLOW.replace("atol = 1e-14", "atol = 1e-14\ncontroller = \"integral\"");
    assert!(text.contains("integral"));
    check_resume_matches(&text);
}

#[test]
fn resume_at_first_step_identical() {
    // A flag set before the start stops the run at t = 0 with only a checkpoint.
    let config = Config::from_toml(DESCENT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    run_uninterrupted(&config, &whole);
    let first = execute(&config, &parts, &options(false), &AtomicBool::new(true)).unwrap();
    assert_eq!(first.stop_reason, StopReason::Interrupted);
    assert_eq!(first.final_t, 0.0);
    execute(&config, &parts, &options(true), &AtomicBool::new(false)).unwrap();
    assert_same_outputs(&whole, &parts);
}

#[test]
fn resume_drops_rows_after_checkpoint() {
    // A crash after the last checkpoint leaves rows the checkpoint does not know about;
    // resuming must replace them, not keep them twice.
    let config = Config::from_toml(DESCENT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    run_uninterrupted(&config, &whole);
    execute(&config, &parts, &options(false), &AtomicBool::new(true)).unwrap();
    let trajectory = parts.join("trajectory.csv");
    let mut text = read(&trajectory);
    text.push_str("1.0,2.0,3.0\n9.0,9.0,9.0\n");
    std::fs::write(&trajectory, text).unwrap();
    execute(&config, &parts, &options(true), &AtomicBool::new(false)).unwrap();
    assert_same_outputs(&whole, &parts);
}

#[test]
fn resume_of_finished_run_changes_nothing() {
    for text in [DESCENT, FLOW] {
        let config =
            Config::from_toml(&text.replace("max_steps = 40000", "max_steps = 400")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = execute(
            &config,
            dir.path(),
            &options(false),
            &AtomicBool::new(false),
        )
        .unwrap();
        let trajectory = read(&dir.path().join("trajectory.csv"));
        let summary = summary_without_time(dir.path());

        let written = read(&dir.path().join("summary.json"));
        let again = execute(&config, dir.path(), &options(true), &AtomicBool::new(false)).unwrap();
        assert_eq!(again.stop_reason, first.stop_reason);
        assert_eq!(read(&dir.path().join("trajectory.csv")), trajectory);
        assert_eq!(summary_without_time(dir.path()), summary);
        // Not even the wall time is rewritten.
        assert_eq!(read(&dir.path().join("summary.json")), written);
    }
}

#[test]
fn resume_rejects_other_config_or_damage() {
    let config = Config::from_toml(DESCENT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");

    let error = execute(&config, &out, &options(true), &AtomicBool::new(false))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("checkpoint.json does not exist"), "{error}");

    // Interrupt after a few records, so the checkpoint expects rows.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        flag.store(true, Ordering::SeqCst);
    });
    execute(&config, &out, &options(false), &cancel).unwrap();
    timer.join().unwrap();

    let other = Config::from_toml(&DESCENT.replace("seed = 7", "seed = 8")).unwrap();
    let error = execute(&other, &out, &options(true), &AtomicBool::new(false))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("belongs to a different config"), "{error}");

    let checkpoint: serde_json::Value =
        serde_json::from_str(&read(&out.join("checkpoint.json"))).unwrap();
    let rows = checkpoint["state"]["rows_written"].as_u64().unwrap();
    assert!(rows >= 2, "only {rows} rows before the interrupt");
    std::fs::write(out.join("trajectory.csv"), "t,loss\n0.0,0.69\n").unwrap();
    let error = execute(&config, &out, &options(true), &AtomicBool::new(false))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("the run folder is damaged"), "{error}");
}

/// Removes `state_layout` from the checkpoint in `out`, as builds that stored the parameter
/// engine's head W in the state wrote it.
fn strip_state_layout(out: &Path) {
    let path = out.join("checkpoint.json");
    let mut checkpoint: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    let removed = checkpoint.as_object_mut().unwrap().remove("state_layout");
    assert_eq!(removed, Some(serde_json::json!(2)));
    std::fs::write(&path, serde_json::to_string(&checkpoint).unwrap()).unwrap();
}

/// Runs `text` for 50 steps into a new folder and strips the layout from its checkpoint.
fn run_with_unversioned_checkpoint(text: &str) -> (Config, tempfile::TempDir, Summary) {
    let config = Config::from_toml(&text.replace("max_steps = 40000", "max_steps = 50")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = execute(
        &config,
        dir.path(),
        &options(false),
        &AtomicBool::new(false),
    )
    .unwrap();
    strip_state_layout(dir.path());
    (config, dir, summary)
}

#[test]
fn older_state_layout_rejected() {
    // With m1 = 1 the old state [W, W_V^T, W_K^T, W_Q^T] has as many entries as the new
    // [z, W_V^T, W_K^T, W_Q^T], so only the layout field distinguishes them.
    let (config, dir, _) = run_with_unversioned_checkpoint(&DESCENT.replace("m1 = 16", "m1 = 1"));

    let error = execute(&config, dir.path(), &options(true), &AtomicBool::new(false))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("written by an older attnflow"), "{error}");
    let error = attnflow::theory::RunRecord::load(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("written by an older attnflow"), "{error}");
}

#[test]
fn reduced_checkpoint_without_layout_resumes() {
    // The reduced engine's state layout did not change, so its older checkpoints still load.
    let text = DESCENT.replace("engine = \"parameter\"", "engine = \"reduced\"");
    let (config, dir, first) = run_with_unversioned_checkpoint(&text);

    let again = execute(&config, dir.path(), &options(true), &AtomicBool::new(false)).unwrap();
    assert_eq!(again.stop_reason, first.stop_reason);
    assert_eq!(again.final_loss, first.final_loss);
}

// ---------------------------------------------------------------------------------------
// The command line, as a child process

fn attnflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attnflow"));
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary to the end and returns its wall-clock time.
fn cli_run(config: &Path, out: &Path) -> Duration {
    let started = Instant::now();
    let output = attnflow()
        .args(["run", "--quiet", "--out"])
        .arg(out)
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// Starts the binary and sends it `signal` a third of the way through the run. Checks that
/// it stops with exit code 130 after writing a checkpoint, then resumes it to the end.
fn check_signal_then_resume(text: &str, signal: libc::c_int) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), text);
    let whole = dir.path().join("whole");
    let parts = dir.path().join("parts");
    let duration = cli_run(&config, &whole);

    let child = attnflow()
        .args(["run", "--quiet", "--out"])
        .arg(&parts)
        .arg(&config)
        .spawn()
        .unwrap();
    std::thread::sleep(duration / 3);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: `kill` only sends a signal to the child started above, which has not been
    // waited for, so its pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(parts.join("checkpoint.json").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&read(&parts.join("summary.json"))).unwrap();
    assert_eq!(summary["stop_reason"], "interrupted");

    let output = attnflow()
        .args(["run", "--quiet", "--resume", "--out"])
        .arg(&parts)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_outputs(&whole, &parts);
}

#[test]
fn sigint_then_resume_matches() {
    check_signal_then_resume(DESCENT, libc::SIGINT);
}

#[test]
fn sigterm_then_resume_matches() {
    check_signal_then_resume(FLOW, libc::SIGTERM);
}

#[test]
fn thread_count_leaves_outputs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &DESCENT.replace("max_steps = 40000", "max_steps = 4000"),
    );
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("threads-{threads}"));
        let output = attnflow()
            .env("RAYON_NUM_THREADS", threads)
            .args(["run", "--quiet", "--out"])
            .arg(&out)
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success());
        outs.push(out);
    }
    assert_same_outputs(&outs[0], &outs[1]);
    for file in ["dataset.npz", "init_weights.npz", "config.toml"] {
        assert_eq!(
            std::fs::read(outs[0].join(file)).unwrap(),
            std::fs::read(outs[1].join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
fn summary_records_version_hash_seed() {
    let config =
        Config::from_toml(&DESCENT.replace("max_steps = 40000", "max_steps = 100")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    execute(
        &config,
        dir.path(),
        &options(false),
        &AtomicBool::new(false),
    )
    .unwrap();
    let summary = summary_without_time(dir.path());
    assert_eq!(summary["attnflow_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["seed"], 7);
    assert_eq!(
        summary["config_hash"],
        attnflow::experiment::config_hash(&config)
    );
    let hash = summary["config_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));

    let other = Config::from_toml(&DESCENT.replace("seed = 7", "seed = 70")).unwrap();
    assert_ne!(attnflow::experiment::config_hash(&other), hash);
}

/// Every checkpoint of a dopri5 run must come after all the rows up to its time, because a
/// resumed run has no dense output for rows left inside the step it resumes after. The
/// check runs on every checkpoint the run requests, with many output times per step.
#[test]
fn checkpoints_follow_all_rows_of_a_step() {
    use attnflow::observables::Observation;
    use attnflow::run::{RunState, Sink, run};

    struct Checker {
        times: Vec<f64>,
        rows: usize,
        checkpoints: usize,
    }
    impl Sink for Checker {
        fn record(
            &mut self,
            _row: &Observation,
            _state: &RunState,
        ) -> Result<(), attnflow::error::Error> {
            self.rows += 1;
            Ok(())
        }
        fn checkpoint(
            &mut self,
            state: &RunState,
            _force: bool,
        ) -> Result<(), attnflow::error::Error> {
            let due = self.times.iter().filter(|&&t| t <= state.t).count();
            assert_eq!(state.next_record, due, "checkpoint at t = {}", state.t);
            assert_eq!(state.rows_written, due, "checkpoint at t = {}", state.t);
            self.checkpoints += 1;
            Ok(())
        }
    }

    let text = FLOW.replace("t_end = 1e7", "t_end = 50.0").replace(
        "grid = \"log\"\npoints = 200\nt_first = 0.05",
        "grid = \"linear\"\npoints = 2000",
    );
    let config = Config::from_toml(&text).unwrap();
    let schedule = config.schedule().unwrap();
    let mut prepared = attnflow::experiment::prepare(&config).unwrap();
    let mut state = RunState::new(prepared.y0.clone());
    let mut sink = Checker {
        times: schedule.record_times.clone(),
        rows: 0,
        checkpoints: 0,
    };
    run(
        &mut prepared.dynamics,
        &schedule,
        &mut state,
        &mut sink,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(sink.rows, schedule.record_times.len());
    assert!(sink.checkpoints > 10, "{} checkpoints", sink.checkpoints);
    // Many output times per step, so that rows and checkpoints interleave within a step.
    assert!(state.steps * 4 < sink.rows as u64, "{} steps", state.steps);
}
