//! Sweeps end to end on tiny configs: sharding, merging and resuming.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use attnflow::experiment::{RunOptions, execute};
use attnflow::run::StopReason;
use attnflow::sweep::{
    PlannedRun, RunRow, Shard, SweepOptions, SweepSpec, merge, read_table, run_sweep,
};

/// Six runs of a few milliseconds each: 3 seeds x 2 widths, reduced engine from a Wishart
/// draw, all dimensions different (n = 12, L = 3, m in {24, 40}, m1 = 5).
const SWEEP: &str = r#"
    [base]
    seed = 0
    [base.task]
    n = 12
    L = 3
    fillers = "distinct"
    n_test = 6
    [base.model]
    m = 24
    m1 = 5
    [base.init]
    scheme = "theory"
    c0 = 0.5
    c1 = 0.5
    reduced_from = "wishart"
    [base.train]
    engine = "reduced"
    integrator = "dopri5"
    t_end = 1e4
    target_loss = 0.05
    [base.record]
    grid = "log"
    points = 40
    t_first = 1e-3

    [grid]
    seed = [0, 1, 2]
    "model.m" = [24, 40]
"#;

fn planned_runs() -> Vec<PlannedRun> {
    SweepSpec::from_toml(SWEEP, Path::new("."))
        .expect("the test sweep parses")
        .runs()
        .expect("the test sweep expands")
}

fn options(shard: Shard) -> SweepOptions {
    SweepOptions {
        shard,
        jobs: 2,
        progress: false,
        save_inputs: false,
    }
}

fn sweep_into(dir: &Path, shard: Shard) -> attnflow::sweep::SweepReport {
    run_sweep(
        &planned_runs(),
        dir,
        &options(shard),
        &AtomicBool::new(false),
    )
    .expect("the sweep runs")
}

fn run_folders(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("runs"))
        .expect("runs folder exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Rows with the wall-clock time cleared, the only value that differs between reruns.
fn comparable(rows: Vec<RunRow>) -> Vec<RunRow> {
    rows.into_iter()
        .map(|row| RunRow {
            wall_seconds: 0.0,
            ..row
        })
        .collect()
}

fn summary_times(dir: &Path, names: &BTreeSet<String>) -> Vec<SystemTime> {
    names
        .iter()
        .map(|name| {
            let path: PathBuf = dir.join("runs").join(name).join("summary.json");
            std::fs::metadata(&path).unwrap().modified().unwrap()
        })
        .collect()
}

#[test]
fn sweep_table_has_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let report = sweep_into(dir.path(), Shard::ALL);
    assert_eq!(report.finished, 6);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let rows = read_table(&dir.path().join("runs.csv")).unwrap();
    let names: Vec<&str> = rows.iter().map(|row| row.run.as_str()).collect();
    assert_eq!(
        names,
        [
            "m=24_seed=0",
            "m=24_seed=1",
            "m=24_seed=2",
            "m=40_seed=0",
            "m=40_seed=1",
            "m=40_seed=2"
        ]
    );
    for row in &rows {
        assert_eq!(row.stop_reason, "target-loss", "{}", row.run);
        assert_eq!((row.n, row.seq_len, row.m1), (12, 3, 5));
        // kappa takes m1 trace(GV(0)) / d from the drawn state, whose expectation is
        // m1 sigma0^2 m. In these runs the two kappas differ by under 0.5%.
        let law_kappa = row.beta0 + row.m1 as f64 * row.sigma0 * row.sigma0 * row.m as f64;
        assert!(
            (row.kappa / law_kappa - 1.0).abs() <= 0.02,
            "{}: kappa {} against {law_kappa}",
            row.run,
            row.kappa
        );
        let t1 = row.t1.expect("T1 is reached");
        let kappa = row.kappa;
        assert!((row.t1_kappa.unwrap() - t1 * kappa).abs() <= 1e-12 * t1 * kappa);
        assert!(row.c.unwrap() > 0.0, "{}", row.run);
        assert!(row.c_r2.unwrap() > 0.5, "{}: {:?}", row.run, row.c_r2);
    }
    assert_eq!(rows[3].m, 40);
    assert_eq!(rows[3].seed, 0);
}

#[test]
fn shards_disjoint_and_merge_matches_unsharded() {
    let whole = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let merged = tempfile::tempdir().unwrap();
    let merged_reversed = tempfile::tempdir().unwrap();

    sweep_into(whole.path(), Shard::ALL);
    let report_first = sweep_into(first.path(), Shard::new(1, 2).unwrap());
    let report_second = sweep_into(second.path(), Shard::new(2, 2).unwrap());
    assert_eq!((report_first.selected, report_second.selected), (3, 3));

    let folders_first = run_folders(first.path());
    let folders_second = run_folders(second.path());
    assert!(folders_first.is_disjoint(&folders_second));
    let union: BTreeSet<String> = folders_first.union(&folders_second).cloned().collect();
    assert_eq!(union, run_folders(whole.path()));

    let dirs = [first.path().to_path_buf(), second.path().to_path_buf()];
    let report = merge(&dirs, merged.path()).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    let reversed = [dirs[1].clone(), dirs[0].clone()];
    merge(&reversed, merged_reversed.path()).unwrap();

    let expected = comparable(read_table(&whole.path().join("runs.csv")).unwrap());
    let rows = comparable(read_table(&merged.path().join("runs.csv")).unwrap());
    let rows_reversed = comparable(read_table(&merged_reversed.path().join("runs.csv")).unwrap());
    assert_eq!(rows, expected);
    assert_eq!(rows_reversed, expected);
}

#[test]
fn merge_reports_missing_shard() {
    let first = tempfile::tempdir().unwrap();
    let merged = tempfile::tempdir().unwrap();
    sweep_into(first.path(), Shard::new(1, 3).unwrap());

    let report = merge(&[first.path().to_path_buf()], merged.path()).unwrap();
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.missing.len(), 4);
}

#[test]
fn resume_finishes_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = planned_runs();

    // A first invocation that got through one shard only.
    sweep_into(dir.path(), Shard::new(1, 2).unwrap());
    let done = run_folders(dir.path());
    let times_before = summary_times(dir.path(), &done);

    // One run of the other shard interrupted at its start, as Ctrl-C leaves it.
    let interrupted = runs.iter().find(|run| !done.contains(&run.name)).unwrap();
    let folder = dir.path().join("runs").join(&interrupted.name);
    let summary = execute(
        &interrupted.config,
        &folder,
        &RunOptions::default(),
        &AtomicBool::new(true),
    )
    .unwrap();
    assert_eq!(summary.stop_reason, StopReason::Interrupted);

    // A cancelled invocation starts nothing and keeps the finished rows.
    let cancelled = run_sweep(
        &runs,
        dir.path(),
        &options(Shard::ALL),
        &AtomicBool::new(true),
    )
    .unwrap();
    assert_eq!(cancelled.not_started, 3);
    assert_eq!(cancelled.rows, 3);

    let report = sweep_into(dir.path(), Shard::ALL);
    assert_eq!(report.already_done, 3);
    assert_eq!(report.finished, 3);
    assert_eq!(report.resumed, 1);
    assert_eq!(report.rows, 6);
    assert_eq!(summary_times(dir.path(), &done), times_before);

    let again = sweep_into(dir.path(), Shard::ALL);
    assert_eq!(again.already_done, 6);
    assert_eq!(again.finished, 0);
}

#[test]
fn changed_config_reruns_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = planned_runs();
    runs.truncate(2);
    let never = AtomicBool::new(false);
    run_sweep(&runs, dir.path(), &options(Shard::ALL), &never).unwrap();

    runs[1].config.train.target_loss = Some(0.1);
    let report = run_sweep(&runs, dir.path(), &options(Shard::ALL), &never).unwrap();
    assert_eq!(report.already_done, 1);
    assert_eq!(report.finished, 1);
    assert_eq!(report.resumed, 0);
}

#[test]
fn failed_run_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = planned_runs();
    runs.truncate(2);
    // Gradient descent with a huge step overflows the loss: a failure, not a stop.
    let config = &mut runs[1].config;
    config.train.integrator = attnflow::integrator::IntegratorKind::GradientDescent;
    config.train.eta = Some(1e6);
    config.train.t_end = Some(1e8);
    let never = AtomicBool::new(false);

    let report = run_sweep(&runs, dir.path(), &options(Shard::ALL), &never).unwrap();
    assert_eq!(report.finished, 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, runs[1].name);
    assert_eq!(report.rows, 1);
    let error_file = dir
        .path()
        .join("runs")
        .join(&runs[1].name)
        .join("error.txt");
    let message = std::fs::read_to_string(&error_file).unwrap();
    assert!(message.contains("non-finite"), "{message}");

    let again = run_sweep(&runs, dir.path(), &options(Shard::ALL), &never).unwrap();
    assert_eq!(again.already_done, 1);
    assert_eq!(again.failed.len(), 1);
}

fn attnflow(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_attnflow"))
        .args(args)
        .output()
        .expect("the binary starts");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn cli_shards_then_merges() {
    let dir = tempfile::tempdir().unwrap();
    let sweep_file = dir.path().join("sweep.toml");
    std::fs::write(&sweep_file, SWEEP).unwrap();
    let sweep = sweep_file.to_str().unwrap();
    let shard_dirs: Vec<String> = (1..=2)
        .map(|k| {
            dir.path()
                .join(format!("shard{k}"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();

    for (k, out) in shard_dirs.iter().enumerate() {
        let shard = format!("{}/2", k + 1);
        let (code, text) = attnflow(&[
            "sweep", sweep, "--out", out, "--shard", &shard, "--jobs", "1",
        ]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("3 finished now"), "{text}");
    }

    let merged = dir.path().join("merged").to_string_lossy().into_owned();
    let (code, text) = attnflow(&["merge", &shard_dirs[0], "--out", &merged]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("3 runs of the sweep have no finished result"),
        "{text}"
    );

    let (code, text) = attnflow(&["merge", &shard_dirs[0], &shard_dirs[1], "--out", &merged]);
    assert_eq!(code, 0, "{text}");
    let rows = read_table(&Path::new(&merged).join("runs.csv")).unwrap();
    assert_eq!(rows.len(), 6);

    let (code, text) = attnflow(&["sweep", sweep, "--out", &merged, "--shard", "3/2"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("shard 3/2 is invalid"), "{text}");
}

#[test]
fn width_scaling_preset_expands() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/width-scaling.toml");
    let runs = SweepSpec::from_file(&path).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 15 * 8);

    let widths: BTreeSet<u64> = runs.iter().map(|run| run.config.model.m).collect();
    assert_eq!(widths.first(), Some(&(1 << 6)));
    assert_eq!(widths.last(), Some(&(1 << 20)));
    for run in &runs {
        let config = &run.config;
        let seq_len = config.task.seq_len as u64;
        assert!(config.task.n as u64 >= seq_len * seq_len, "{}", run.name);
        assert!(
            config.model.m >= config.model.m1.max(seq_len * seq_len),
            "{}",
            run.name
        );
        let c0c1 = config.init.c0.unwrap() * config.init.c1.unwrap();
        assert!(c0c1 <= 0.01 + 1e-15, "{}", run.name);
    }
}

#[test]
fn base_path_is_relative_to_sweep_file() {
    let dir = tempfile::tempdir().unwrap();
    let base_start = SWEEP.find("[base]").unwrap();
    let grid_start = SWEEP.find("[grid]").unwrap();
    let base = SWEEP[base_start..grid_start]
        .replace("[base.", "[")
        .replace("[base]\n", "");
    std::fs::create_dir(dir.path().join("configs")).unwrap();
    std::fs::write(dir.path().join("configs/tiny.toml"), base).unwrap();
    let sweep_file = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep_file,
        format!("base = \"configs/tiny.toml\"\n{}", &SWEEP[grid_start..]),
    )
    .unwrap();

    let from_path = SweepSpec::from_file(&sweep_file).unwrap().runs().unwrap();
    let inline = planned_runs();
    assert_eq!(from_path.len(), inline.len());
    for (a, b) in from_path.iter().zip(&inline) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.config_hash(), b.config_hash());
    }
}

#[test]
fn cancel_mid_sweep_keeps_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = planned_runs();
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&cancel);
    let timer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });

    // Wherever the cancel lands, the counts must add up and every finished run is listed.
    let first = run_sweep(&runs, dir.path(), &options(Shard::ALL), &cancel).unwrap();
    timer.join().unwrap();
    assert_eq!(first.finished + first.interrupted + first.not_started, 6);
    assert_eq!(first.rows, first.finished);

    let second = sweep_into(dir.path(), Shard::ALL);
    assert_eq!(second.already_done, first.finished);
    assert_eq!(second.finished, 6 - first.finished);
    assert_eq!(second.resumed, first.interrupted);
    assert_eq!(second.rows, 6);
}
