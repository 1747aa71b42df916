//! End-to-end runs of the `attnflow` binary on tiny configs: output files, T1, stop reasons,
//! and exact replay from exported .npz inputs.

use std::path::Path;
use std::process::Command;

use attnflow::experiment::Summary;
use attnflow::observables::{Observation, read_trajectory};

const DESCENT: &str = r#"
seed = 5
[task]
n = 12
L = 4
d = 17
fillers = "sampled"
n_test = 24
[model]
m = 9
m1 = 7
[init]
scheme = "gaussian"
sigma0 = 0.3
sigma1 = 0.2
[train]
engine = "parameter"
integrator = "gradient-descent"
eta = 0.05
max_steps = 400
[record]
grid = "linear"
points = 40
"#;

fn flow_config() -> String {
    DESCENT
        .replace(
            "integrator = \"gradient-descent\"",
            "integrator = \"dopri5\"",
        )
        .replace(
            "eta = 0.05\nmax_steps = 400",
            "t_end = 200.0\ntarget_loss = 0.01",
        )
        .replace(
            "grid = \"linear\"\npoints = 40",
            "grid = \"log\"\npoints = 30\nt_first = 0.01",
        )
}

/// Writes `config` into `dir` and prepares `attnflow run` on it with the output in
/// `dir/run`.
fn run_command(dir: &Path, config: &str) -> Command {
    let path = dir.join("config-in.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_attnflow"));
    command
        .arg("run")
        .arg(&path)
        .arg("--out")
        .arg(dir.join("run"));
    command
}

fn run(dir: &Path, config: &str, extra: &[&str]) -> std::process::Output {
    let output = run_command(dir, config).args(extra).output().unwrap();
    assert!(
        output.status.success(),
        "attnflow run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn summary(dir: &Path) -> Summary {
    let text = std::fs::read_to_string(dir.join("run/summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn trajectory(dir: &Path) -> Vec<Observation> {
    read_trajectory(&dir.join("run/trajectory.csv")).unwrap()
}

#[test]
fn descent_run_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), DESCENT, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("T1"), "{stdout}");
    for file in [
        "config.toml",
        "trajectory.csv",
        "summary.json",
        "checkpoint.json",
        "dataset.npz",
        "init_weights.npz",
    ] {
        assert!(dir.path().join("run").join(file).exists(), "missing {file}");
    }

    let summary = summary(dir.path());
    assert_eq!(summary.steps, 400);
    assert!((summary.final_t - 20.0).abs() < 1e-12);
    assert_eq!(summary.engine, "parameter");
    assert_eq!(summary.integrator, "gradient-descent");
    assert_eq!(summary.seed, 5);

    // Records at t = 0, 0.5, ..., 20 (every 10 steps), the last one at t_end.
    let rows = trajectory(dir.path());
    assert_eq!(rows.len(), 41);
    assert_eq!(rows.last().unwrap().t, 20.0);
    assert!((rows.last().unwrap().loss - summary.final_loss).abs() < 1e-15);

    // Under gradient descent T1 is a whole number of steps.
    let t1 = summary
        .t1
        .expect("the tiny task is learned within 400 steps");
    let steps = t1 / 0.05;
    assert!(
        (steps - steps.round()).abs() < 1e-9,
        "T1 = {t1} is not on the step grid"
    );
    assert!(summary.at_t1.unwrap().min_margin > 0.0);
}

#[test]
fn trajectory_header_lists_observables() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), DESCENT, &[]);
    let text = std::fs::read_to_string(dir.path().join("run/trajectory.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    for column in [
        "t",
        "loss",
        "test_loss",
        "loss_I1",
        "loss_I4",
        "gsum_I1",
        "gsum_I4",
        "balance_I2_I3",
        "R",
        "gamma_1",
        "gamma_2",
        "gamma_3",
        "beta",
        "S_1_2",
        "S_3_1",
        "GV_1_3",
        "min_margin",
        "invariant_value",
        "invariant_key_query",
    ] {
        assert!(header.contains(&column), "missing column {column}");
    }
}

#[test]
fn flow_locates_t1_between_records() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &flow_config(), &[]);
    let summary = summary(dir.path());
    let rows = trajectory(dir.path());
    let t1 = summary.t1.expect("T1 is reached");
    assert!(
        rows.iter().all(|row| row.t != t1),
        "T1 = {t1} fell on the output grid"
    );

    // Just after T1 every margin is positive and the smallest one is close to zero.
    let at_t1 = summary.at_t1.unwrap();
    assert!(at_t1.min_margin > 0.0);
    assert!(
        at_t1.min_margin < 1e-6,
        "min margin at T1 = {}",
        at_t1.min_margin
    );
    let before = rows.iter().rfind(|row| row.t < t1).unwrap();
    assert!(before.min_margin <= 0.0);
}

#[test]
fn flow_stops_at_target_loss() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &flow_config(), &[]);
    let summary = summary(dir.path());
    assert_eq!(format!("{:?}", summary.stop_reason), "TargetLoss");
    // The stop is located by bisection, so the final loss sits just below the target.
    assert!(summary.final_loss <= 0.01);
    assert!(
        summary.final_loss > 0.01 * (1.0 - 1e-6),
        "final loss {}",
        summary.final_loss
    );
    let rows = trajectory(dir.path());
    assert_eq!(rows.last().unwrap().t, summary.final_t);
    assert!(
        rows.windows(2).all(|w| w[1].loss <= w[0].loss),
        "loss increased along the flow"
    );
}

/// dopri5 reads the rows from its dense output, so the output grid does not change its
/// steps: runs with 5 and 300 output times end in the same state, bit for bit, with the same
/// step counts. The loose case (reduced engine, rtol 1e-6) rejects steps, some of them the
/// first trial step of a solver call.
#[test]
fn flow_steps_independent_of_output_grid() {
    let loose = "\nrtol = 1e-6\natol = 1e-9";
    let cases = [
        ("pi", "parameter", ""),
        ("integral", "parameter", ""),
        ("integral", "reduced", loose),
    ];
    let mut rejected = 0;
    for (rule, engine, tolerances) in cases {
        let mut ends = Vec::new();
        for points in [5, 300] {
            let dir = tempfile::tempdir().unwrap();
            let config = flow_config()
                .replace("\"parameter\"", &format!("\"{engine}\""))
                .replace("t_end = 200.0", &format!("t_end = 200.0{tolerances}"))
                .replace("points = 30", &format!("points = {points}"))
                .replace("target_loss = 0.01", &format!("controller = \"{rule}\""));
            run(dir.path(), &config, &[]);
            let case = format!("{rule}, {engine}{tolerances}, {points} points");
            assert_eq!(trajectory(dir.path()).len(), points + 1, "{case}");
            ends.push(summary(dir.path()));
        }
        let case = format!("{rule}, {engine}{tolerances}");
        assert_eq!(ends[0].steps, ends[1].steps, "{case}");
        assert_eq!(ends[0].rejected_steps, ends[1].rejected_steps, "{case}");
        assert_eq!(ends[0].final_t, ends[1].final_t, "{case}");
        assert_eq!(ends[0].final_loss, ends[1].final_loss, "{case}");
        assert_eq!(ends[0].t1, ends[1].t1, "{case}");
        rejected += ends[0].rejected_steps;
    }
    assert!(rejected > 0, "no case rejected a step");
}

/// The saved config writes out dopri5's default step-size rule, and naming that default
/// keeps the hash of leaving it out.
#[test]
fn default_controller_written_and_hashed_alike() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &flow_config(), &[]);
    let saved = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(saved.contains("controller = \"pi\""), "{saved}");

    let hash = |text: &str| {
        attnflow::experiment::config_hash(&attnflow::config::Config::from_toml(text).unwrap())
    };
    let named = flow_config().replace("t_end = 200.0", "t_end = 200.0\ncontroller = \"pi\"");
    let integral =
        flow_config().replace("t_end = 200.0", "t_end = 200.0\ncontroller = \"integral\"");
    assert_eq!(hash(&flow_config()), hash(&named));
    assert_ne!(hash(&flow_config()), hash(&integral));
}

/// `check` on a folder whose input file is gone names the missing file.
#[test]
fn check_reports_missing_input() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), DESCENT, &[]);
    std::fs::remove_file(dir.path().join("run/dataset.npz")).unwrap();
    let config = dir.path().join("run/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // Point the config at the removed copy, as a run made from an input file does.
    std::fs::write(
        &config,
        text.replace("[task]\n", "[task]\ndataset = \"dataset.npz\"\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .arg("check")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("dataset.npz not found"), "{stderr}");
}

/// A target loss reached just before T1, within the same solver step, stops the run with
/// no T1: the run never had every sample correct.
#[test]
fn target_loss_just_before_t1_reports_no_t1() {
    let free = tempfile::tempdir().unwrap();
    run(
        free.path(),
        &flow_config().replace("target_loss = 0.01", ""),
        &[],
    );
    let first = summary(free.path());
    let t1 = first.t1.expect("T1 is reached");
    let loss_at_t1 = first.at_t1.expect("observables at T1").loss;

    let dir = tempfile::tempdir().unwrap();
    let target = format!("target_loss = {:e}", loss_at_t1 * (1.0 + 1e-9));
    run(
        dir.path(),
        &flow_config().replace("target_loss = 0.01", &target),
        &[],
    );
    let stopped = summary(dir.path());
    assert_eq!(format!("{:?}", stopped.stop_reason), "TargetLoss");
    assert!(
        stopped.final_t < t1,
        "stopped at {} after T1 = {t1}",
        stopped.final_t
    );
    assert_eq!(stopped.t1, None);
}

/// Rows from dopri5's dense output agree with the rows of ode-solvers-dopri5, which lands a
/// step on each output time, to about the solver tolerance.
#[test]
fn dense_rows_match_landed_rows() {
    let mut runs = Vec::new();
    for integrator in ["dopri5", "ode-solvers-dopri5"] {
        let dir = tempfile::tempdir().unwrap();
        let config = flow_config()
            .replace(
                "integrator = \"dopri5\"",
                &format!("integrator = \"{integrator}\""),
            )
            .replace("target_loss = 0.01", "rtol = 1e-10\natol = 1e-12");
        run(dir.path(), &config, &[]);
        runs.push(trajectory(dir.path()));
    }
    assert_eq!(runs[0].len(), runs[1].len());
    for (dense, landed) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(dense.t, landed.t);
        let gap = (dense.loss - landed.loss).abs() / landed.loss;
        assert!(
            gap < 1e-7,
            "t = {}: losses {} and {}",
            dense.t,
            dense.loss,
            landed.loss
        );
    }
}

/// Exported inputs replayed through --dataset and --init-weights give the same run.
#[test]
fn replay_from_npz_is_exact() {
    let first = tempfile::tempdir().unwrap();
    run(first.path(), DESCENT, &[]);
    let dataset = first.path().join("run/dataset.npz");
    let weights = first.path().join("run/init_weights.npz");

    let second = tempfile::tempdir().unwrap();
    let other_seed = DESCENT.replace("seed = 5", "seed = 99");
    run(
        second.path(),
        &other_seed,
        &[
            "--dataset",
            dataset.to_str().unwrap(),
            "--init-weights",
            weights.to_str().unwrap(),
        ],
    );
    let (a, b) = (trajectory(first.path()), trajectory(second.path()));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.loss, y.loss, "t = {}", x.t);
        assert_eq!(x.test_loss, y.test_loss, "t = {}", x.t);
        assert_eq!(x.s_1_2, y.s_1_2, "t = {}", x.t);
    }
}

/// A run folder made from input files names its own copies of them, so it can still be
/// checked and resumed after the original files, and the folder itself, have moved.
#[test]
fn run_folder_survives_moved_inputs() {
    let first = tempfile::tempdir().unwrap();
    run(first.path(), DESCENT, &[]);
    let inputs = tempfile::tempdir().unwrap();
    for name in ["dataset.npz", "init_weights.npz"] {
        std::fs::copy(
            first.path().join("run").join(name),
            inputs.path().join(name),
        )
        .unwrap();
    }

    let second = tempfile::tempdir().unwrap();
    let dataset = inputs.path().join("dataset.npz");
    let weights = inputs.path().join("init_weights.npz");
    run(
        second.path(),
        DESCENT,
        &[
            "--dataset",
            dataset.to_str().unwrap(),
            "--init-weights",
            weights.to_str().unwrap(),
        ],
    );
    let saved = std::fs::read_to_string(second.path().join("run/config.toml")).unwrap();
    assert!(saved.contains("dataset = \"dataset.npz\""), "{saved}");
    assert!(saved.contains("weights = \"init_weights.npz\""), "{saved}");
    let copy = std::fs::read(second.path().join("run/dataset.npz")).unwrap();
    assert_eq!(
        copy,
        std::fs::read(&dataset).unwrap(),
        "the copy is byte for byte"
    );

    drop(inputs);
    let moved = tempfile::tempdir().unwrap();
    let folder = moved.path().join("moved-run");
    std::fs::rename(second.path().join("run"), &folder).unwrap();
    for args in [
        vec!["check", folder.to_str().unwrap()],
        vec!["run", "--resume", "--out", folder.to_str().unwrap()],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_attnflow"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The reduced engine, started from the same weights, reproduces the parameter engine's
/// gradient-descent run to rounding error.
#[test]
fn engines_agree_end_to_end() {
    let first = tempfile::tempdir().unwrap();
    run(first.path(), DESCENT, &[]);
    let second = tempfile::tempdir().unwrap();
    run(second.path(), DESCENT, &["--engine", "reduced"]);
    let (a, b) = (trajectory(first.path()), trajectory(second.path()));
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.loss - y.loss).abs() <= 1e-9 * x.loss,
            "t = {}: {} vs {}",
            x.t,
            x.loss,
            y.loss
        );
        assert!((x.gamma_1 - y.gamma_1).abs() <= 1e-8 * x.gamma_1.abs().max(1e-3));
    }
}

/// A fresh run into a used folder removes the earlier run's check results, so that
/// `attnflow plot` never draws them beside the new trajectory.
#[test]
fn fresh_run_removes_stale_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("run");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("check.json"), "{}").unwrap();
    std::fs::write(folder.join("predictions.csv"), "t\n0\n").unwrap();
    run(dir.path(), DESCENT, &[]);
    assert!(!folder.join("check.json").exists());
    assert!(!folder.join("predictions.csv").exists());
    assert!(folder.join("summary.json").exists());
}

/// A fresh run into the folder of an interrupted run is rejected, because it would delete
/// the checkpoint. The folder of a finished run is replaced.
#[test]
fn fresh_run_keeps_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), DESCENT, &[]);
    let path = dir.path().join("run/summary.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"stop_reason\": \"step-limit\""), "{text}");
    run(dir.path(), DESCENT, &[]);

    std::fs::write(&path, text.replace("\"step-limit\"", "\"interrupted\"")).unwrap();
    let output = run_command(dir.path(), DESCENT).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("contains a run interrupted"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(dir.path().join("run/checkpoint.json").exists());
}

/// A flow run that uses up its step budget at an output time writes that row once.
#[test]
fn flow_step_limit_writes_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = flow_config().replace("target_loss = 0.01", "max_steps = 50");
    run(dir.path(), &config, &[]);
    let rows = trajectory(dir.path());
    let times: Vec<f64> = rows.iter().map(|row| row.t).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "times not increasing: {times:?}"
    );
}

/// Flags that would change the config are rejected with --resume.
#[test]
fn resume_rejects_config_flags() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), DESCENT, &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .args(["run", "--resume", "--t-end", "5", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--t-end cannot change a resumed run"),
        "{stderr}"
    );
}

/// A seed that a config file cannot hold is rejected before the run starts.
#[test]
fn oversized_seed_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_command(dir.path(), DESCENT)
        .args(["--seed", "18446744073709551615"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the largest integer a config file can hold"),
        "{stderr}"
    );
}

/// A descent config without t_end reports the step limit as what ends the run, in the log
/// and in the printed stop line, and never a t_end it does not have.
#[test]
fn descent_reports_step_limit() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_command(dir.path(), DESCENT)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("reached the step limit"), "{stdout}");
    assert!(stderr.contains("max_steps 400"), "{stderr}");
    assert!(!stdout.contains("t_end"), "{stdout}");
    assert!(!stderr.contains("t_end"), "{stderr}");
}

/// Flow runs stop at train.max_steps exactly: the solver's extra attempt at its limit and
/// the re-integration that locates T1 both count against it.
#[test]
fn flow_steps_never_exceed_limit() {
    use attnflow::run::StopReason;
    use std::sync::atomic::AtomicBool;

    for integrator in ["dopri5", "ode-solvers-dopri5", "dop853"] {
        for max_steps in 1..=40u64 {
            let text = flow_config()
                .replace(
                    "integrator = \"dopri5\"",
                    &format!("integrator = \"{integrator}\"\nmax_steps = {max_steps}"),
                )
                .replace("t_first = 0.01", "t_first = 1.0");
            let config = attnflow::config::Config::from_toml(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let options = attnflow::experiment::RunOptions::default();
            let summary = attnflow::experiment::execute(
                &config,
                dir.path(),
                &options,
                &AtomicBool::new(false),
            )
            .unwrap();
            let case = format!("{integrator}, max_steps {max_steps}");

            assert!(
                summary.steps <= max_steps,
                "{case}: {} steps",
                summary.steps
            );
            assert_eq!(
                summary.steps,
                summary.accepted_steps + summary.rejected_steps,
                "{case}"
            );
            if summary.stop_reason == StopReason::StepLimit {
                assert_eq!(summary.steps, max_steps, "{case}");
            }
        }
    }
}

/// `attnflow run ... | head -1` closes stdout before the report is printed. The run and the
/// check that `--check` adds must still write all their files, and the command must end
/// with its usual status instead of a panic.
#[test]
fn closed_stdout_keeps_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_command(dir.path(), DESCENT)
        .arg("--check")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closing the only read end before the run ends makes every write to stdout fail with
    // a broken pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for file in [
        "config.toml",
        "trajectory.csv",
        "summary.json",
        "checkpoint.json",
        "check.json",
        "predictions.csv",
    ] {
        assert!(dir.path().join("run").join(file).exists(), "missing {file}");
    }
}

/// When the reader of stderr has gone, a failing command cannot print its error, but it
/// must still exit with status 1 instead of panicking (status 101).
#[test]
fn closed_stderr_keeps_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .arg("run")
        .arg(dir.path().join("missing.toml"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closing the only read end makes the write of the error fail with a broken pipe.
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
}

/// `attnflow init` on a config that draws the reduced state directly has no weights to
/// write: it fails with the fix named and leaves no empty folder behind.
#[test]
fn init_without_weights_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = DESCENT
        .replace("engine = \"parameter\"", "engine = \"reduced\"")
        .replace(
            "scheme = \"gaussian\"",
            "scheme = \"gaussian\"\nreduced_from = \"wishart\"",
        );
    let path = dir.path().join("wishart.toml");
    std::fs::write(&path, config).unwrap();
    let out = dir.path().join("inputs");
    let output = Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .arg("init")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("set init.reduced_from = \"parameters\""),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// A negative --t-end is read as a value and rejected by name, not taken for a flag.
#[test]
fn negative_flag_value_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_command(dir.path(), &flow_config())
        .args(["--t-end", "-5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("train.t_end = -5 is invalid"), "{stderr}");
}

#[test]
fn flag_fixes_invalid_file_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = flow_config().replace("t_end = 200.0", "t_end = -1.0");

    run(dir.path(), &config, &["--t-end", "5"]);

    let saved = attnflow::config::Config::from_file(&dir.path().join("run/config.toml")).unwrap();
    assert_eq!(saved.train.t_end, Some(5.0));
    assert!(summary(dir.path()).final_t <= 5.0);
}

#[test]
fn invalid_values_name_their_source() {
    // A value that no flag overrides is reported with the config file.
    let dir = tempfile::tempdir().unwrap();
    let config = flow_config()
        .replace("t_end = 200.0", "t_end = -1.0")
        .replace("[record]", "rtol = 2.0\n[record]");
    let output = run_command(dir.path(), &config)
        .args(["--t-end", "5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("config-in.toml: train.rtol = 2 "),
        "{stderr}"
    );
    assert!(!stderr.contains("--t-end"), "{stderr}");

    // A value set by a flag is reported with that flag, not with the file.
    let dir = tempfile::tempdir().unwrap();
    let output = run_command(dir.path(), &flow_config())
        .arg("--t-end=-1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("train.t_end = -1 is invalid"), "{stderr}");
    assert!(stderr.contains("train.t_end is set by --t-end"), "{stderr}");
    assert!(!stderr.contains("config-in.toml: train.t_end"), "{stderr}");
}
