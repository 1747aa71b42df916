//! Property tests: small runs inside the theory's regime satisfy the claims the analysis
//! guarantees there.
//!
//! Every case trains a small model with the reduced engine from a Wishart draw (so a wide
//! attention layer costs nothing) and checks it with `theory::check_run`. Sizes are small,
//! and n, L, m1 and the seed vary so that each claim meets different data and widths.
//! Claims 7 and 9 are left out because with distinct fillers at these sample sizes the
//! fillers carry part of every margin, and both claims fail on the full theory experiment
//! too. Claims 11 and 12 are about the end of a long run, and these runs stop at loss 1e-2
//! to stay fast.

use std::sync::atomic::AtomicBool;

use attnflow::config::Config;
use attnflow::experiment::{RunOptions, execute};
use attnflow::theory::{CheckReport, Verdict, check_run};
use proptest::prelude::*;

/// Claims that hold at every size these tests draw.
const GUARANTEED: [u8; 8] = [1, 2, 3, 4, 5, 6, 8, 10];

fn theory_config(seed: u64, n: usize, seq_len: usize, m1: u64) -> Config {
    let text = format!(
        r#"
seed = {seed}

[task]
n = {n}
L = {seq_len}
fillers = "distinct"
n_test = 12

[model]
m = 1000000
m1 = {m1}

[init]
scheme = "theory"
reduced_from = "wishart"
c0 = 0.1
c1 = 0.1

[train]
engine = "reduced"
integrator = "dopri5"
rtol = 1e-8
atol = 1e-12
t_end = 1e3
target_loss = 1e-2

[record]
grid = "log"
points = 60
t_first = 1e-7
"#
    );
    Config::from_toml(&text).expect("the test config is valid")
}

fn run_and_check(config: &Config) -> CheckReport {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = RunOptions::default();
    execute(config, dir.path(), &options, &AtomicBool::new(false)).expect("the run finishes");
    check_run(dir.path()).expect("the check finishes")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn theory_regime_satisfies_claims(
        seed in 0u64..1000,
        n in prop::sample::select(vec![36usize, 48]),
        seq_len in 4usize..=5,
        m1 in prop::sample::select(vec![8u64, 32]),
    ) {
        let report = run_and_check(&theory_config(seed, n, seq_len, m1));
        for id in GUARANTEED {
            let claim = report.claim(id).expect("every claim is reported");
            prop_assert_eq!(
                claim.verdict,
                Verdict::Holds,
                "claim {} ({}): measured {}, expected {}",
                id,
                &claim.statement,
                &claim.measured_text,
                &claim.predicted
            );
        }
    }
}

#[test]
fn check_writes_predictions_columns() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let config = theory_config(7, 36, 4, 8);
    execute(
        &config,
        dir.path(),
        &RunOptions::default(),
        &AtomicBool::new(false),
    )
    .expect("the run finishes");
    let report = check_run(dir.path()).expect("the check finishes");

    let text = std::fs::read_to_string(dir.path().join("predictions.csv")).expect("written");
    let header = text.lines().next().expect("a header line");
    for column in [
        "t",
        "baseline_loss",
        "baseline_gamma_1",
        "baseline_gamma_2",
        "baseline_gamma_3",
        "R_star",
        "loss_law_inverse",
    ] {
        assert!(
            header.split(',').any(|name| name == column),
            "missing {column}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("check.json")).expect("written"),
    )
    .expect("valid JSON");
    assert!(json["kappa"].as_f64().is_some());
    for key in ["slope_c", "intercept", "r_squared", "c_over_beta", "t_from"] {
        assert!(
            json["loss_law"][key].as_f64().is_some(),
            "missing loss_law.{key}"
        );
    }
    assert_eq!(report.claims.len(), 12);
}

/// The baseline starts from the run's readouts and tracks its loss through Phase 1.
#[test]
fn baseline_tracks_phase_one() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let config = theory_config(3, 48, 5, 32);
    execute(
        &config,
        dir.path(),
        &RunOptions::default(),
        &AtomicBool::new(false),
    )
    .expect("the run finishes");
    let report = check_run(dir.path()).expect("the check finishes");
    let t1 = report.t1.expect("T1 is reached");

    let run = attnflow::observables::read_trajectory(&dir.path().join("trajectory.csv"))
        .expect("readable");
    let mut reader = csv::Reader::from_path(dir.path().join("predictions.csv")).expect("readable");
    let baseline: Vec<Vec<f64>> = reader
        .records()
        .map(|row| {
            row.expect("a row")
                .iter()
                .map(|v| v.parse().expect("a number"))
                .collect()
        })
        .collect();
    assert_eq!(baseline.len(), run.len());
    assert_eq!(baseline[0][4], run[0].gamma_3);
    for (row, prediction) in run.iter().zip(&baseline) {
        if row.t <= t1 {
            // Until T1 the loss falls from ln 2 to about 0.46. A gap of 0.03, a seventh of
            // that fall, would be exceeded if the two disagreed at leading order.
            assert!((row.loss - prediction[1]).abs() < 0.03, "t = {}", row.t);
        }
    }
}

/// A run stopped long before T1 gets verdicts only for the claims about t = 0 and the end.
#[test]
fn early_stop_is_not_applicable() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = theory_config(5, 36, 4, 8);
    config.train.t_end = Some(1e-6);
    config.record.t_first = Some(1e-9);
    execute(
        &config,
        dir.path(),
        &RunOptions::default(),
        &AtomicBool::new(false),
    )
    .expect("the run finishes");
    let report = check_run(dir.path()).expect("the check finishes");

    assert_eq!(report.t1, None);
    assert!(report.loss_law.is_none());
    assert_eq!(report.claim(1).expect("reported").verdict, Verdict::Holds);
    for id in 2..=11 {
        let claim = report.claim(id).expect("reported");
        assert_eq!(claim.verdict, Verdict::NotApplicable, "claim {id}");
        assert!(claim.measured.is_nan(), "claim {id}");
    }
    let text = std::fs::read_to_string(dir.path().join("predictions.csv")).expect("written");
    assert!(text.lines().nth(1).expect("a row").ends_with("NaN"));
}

/// A dataset without group I3 gives an infinite balance_I2_I3, which summary.json stores
/// as null. The check must read them back and mark the claims that need group I3 as not
/// applicable.
#[test]
fn missing_group_is_not_applicable() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = theory_config(11, 36, 4, 8);
    let data = attnflow::experiment::build_data(&config).expect("the draw succeeds");
    let train = &data.train;
    let keep: Vec<usize> = (0..train.len())
        .filter(|&i| train.groups[i] != attnflow::task::Group::I3)
        .collect();
    let tokens = keep
        .iter()
        .flat_map(|&i| train.sample(i).iter().copied())
        .collect();
    let labels = keep.iter().map(|&i| train.labels[i]).collect();
    let reduced = attnflow::task::Dataset::new(tokens, labels, train.seq_len, train.vocab_size)
        .expect("a valid training set");
    let path = dir.path().join("no-i3.npz");
    attnflow::npz::write_dataset(
        &path,
        &attnflow::task::TaskData {
            train: reduced,
            test: data.test.clone(),
        },
    )
    .expect("written");
    config.task.dataset = Some(path);
    config.task.n = keep.len();
    let out = dir.path().join("run");
    let summary = execute(
        &config,
        &out,
        &RunOptions::default(),
        &AtomicBool::new(false),
    )
    .expect("the run finishes");
    assert!(summary.t1.is_some(), "T1 is reached");

    let report = check_run(&out).expect("the check reads a summary with null observables");
    for id in [2, 8, 9] {
        let claim = report.claim(id).expect("reported");
        assert_eq!(claim.verdict, Verdict::NotApplicable, "claim {id}");
        assert!(
            claim.measured_text.contains("I3"),
            "claim {id}: {}",
            claim.measured_text
        );
    }
    for id in [1, 3, 4] {
        let claim = report.claim(id).expect("reported");
        assert_ne!(claim.verdict, Verdict::NotApplicable, "claim {id}");
    }

    // checkpoint.json contains the same null values in the observables at T1.
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    execute(&config, &out, &resume, &AtomicBool::new(false))
        .expect("a finished run with null observables resumes");
}

/// With no output time between t = 0 and T1, claim 2 has no rise or fall to measure.
#[test]
fn claim_two_needs_records_before_t1() {
    let mut config = theory_config(5, 36, 4, 8);
    // Output times 0 and t_end only; the run stops at the target loss, long after T1.
    config.record.points = 1;
    config.record.t_first = config.train.t_end;
    let report = run_and_check(&config);

    assert!(report.t1.is_some(), "T1 is reached");
    let claim = report.claim(2).expect("reported");
    assert_eq!(
        claim.verdict,
        Verdict::NotApplicable,
        "{}",
        claim.measured_text
    );
    assert!(
        claim.measured_text.contains("between t = 0 and T1"),
        "{}",
        claim.measured_text
    );
}

/// kappa is a function of the initial state, so a run with drawn weights and its replay
/// from the saved weights file report the same kappa, beta(0) + m1 trace(GV(0)) / d.
#[test]
fn kappa_same_for_drawn_and_replayed() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = theory_config(2, 36, 4, 8);
    config.model.m = 32;
    config.init.reduced_from = attnflow::config::ReducedInit::Parameters;
    config.train.target_loss = Some(0.5);
    let drawn_dir = dir.path().join("drawn");
    let options = RunOptions {
        save_inputs: true,
        ..RunOptions::default()
    };
    execute(&config, &drawn_dir, &options, &AtomicBool::new(false)).expect("the run finishes");
    let drawn = check_run(&drawn_dir).expect("the check finishes");

    config.task.dataset = Some(drawn_dir.join("dataset.npz"));
    config.init.weights = Some(drawn_dir.join("init_weights.npz"));
    let replay_dir = dir.path().join("replay");
    execute(&config, &replay_dir, &options, &AtomicBool::new(false)).expect("the run finishes");
    let replay = check_run(&replay_dir).expect("the check finishes");

    let record = attnflow::theory::RunRecord::load(&drawn_dir).expect("loads");
    let gv = &record.initial.gv;
    let expected = record.initial.beta + 8.0 * gv.diag().sum() / gv.nrows() as f64;
    assert!(
        (drawn.kappa / expected - 1.0).abs() < 1e-12,
        "{} against {expected}",
        drawn.kappa
    );
    assert!(
        (replay.kappa / drawn.kappa - 1.0).abs() < 1e-12,
        "replay {} against drawn {}",
        replay.kappa,
        drawn.kappa
    );
}

/// The baseline's T1 is located between output times, so it does not depend on the grid.
#[test]
fn baseline_t1_independent_of_grid() {
    let mut config = theory_config(4, 36, 4, 8);
    let coarse = run_and_check(&config);
    config.record.points = 400;
    let fine = run_and_check(&config);

    let coarse_t1 = coarse.baseline_t1.expect("the baseline reaches T1");
    let fine_t1 = fine.baseline_t1.expect("the baseline reaches T1");
    // Bisection stops at 1e-12 relative; the two solves of the baseline up to the bracket
    // differ by the solver tolerance of 1e-10.
    assert!(
        (coarse_t1 / fine_t1 - 1.0).abs() < 1e-8,
        "coarse {coarse_t1:e}, fine {fine_t1:e}"
    );
}
