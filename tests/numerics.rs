//! Numerical guards: extreme logits stay finite through the whole forward and backward
//! pass, and a run whose state overflows stops with an error that names the time, the
//! quantity and the likely cause, keeping the trajectory written so far.

use std::sync::atomic::AtomicBool;

use attnflow::config::Config;
use attnflow::error::Error;
use attnflow::experiment::{self, RunOptions};
use attnflow::forward::{Evaluation, PairIndex, evaluate};
use attnflow::observables::read_trajectory;
use attnflow::task::{COMMON, Dataset};

const BASE: &str = r#"
seed = 11
[task]
n = 12
L = 4
d = 20
fillers = "sampled"
n_test = 12
[model]
m = 8
m1 = 6
[init]
scheme = "gaussian"
sigma0 = 0.5
sigma1 = 0.5
[train]
engine = "parameter"
integrator = "gradient-descent"
eta = 0.1
max_steps = 2000
[record]
grid = "linear"
points = 100
"#;

/// Scores S[key, query] at each pair: `big` when the key is the common token, `-big`
/// otherwise, so every query attends only to the position of the common token.
fn saturating_scores(index: &PairIndex, big: f64) -> Vec<f64> {
    index
        .pairs
        .iter()
        .map(|&(key, _)| if key == COMMON { big } else { -big })
        .collect()
}

#[test]
fn forward_pass_at_extreme_logits() {
    // Sample 0 = [0, 1, 2] (label +1), sample 1 = [0, 2, 3] (label -1), d = 4, m = 9.
    let data = Dataset::new(vec![0, 1, 2, 0, 2, 3], vec![1.0, -1.0], 3, 4).unwrap();
    let index = PairIndex::new(&data);
    let width = 9.0;
    // Logits s = S / sqrt(m) = +-1e4.
    let scores = saturating_scores(&index, 1e4 * 3.0);

    for sign in [1.0, -1.0] {
        // F_i = L gamma[COMMON] = 3 gamma[2] = sign x 3e4 for both samples.
        let gamma = [0.5, -0.25, sign * 1e4, 7.0];
        let mut eval = Evaluation::new(&data, &index);
        evaluate(&data, &index, &gamma, &scores, width, true, &mut eval);

        for i in 0..2 {
            assert_eq!(eval.outputs[i], sign * 3e4, "output of sample {i}");
        }
        // Margins: sample 0 has y F = sign 3e4, sample 1 has -sign 3e4. One sample has
        // loss softplus(3e4) = 3e4 and g = 1, the other loss 0 and g = 0.
        let wrong = if sign > 0.0 { 1 } else { 0 };
        let right = 1 - wrong;
        assert_eq!(eval.sample_loss(wrong), 3e4);
        assert_eq!(eval.sample_loss(right), 0.0);
        assert_eq!(eval.g[wrong], 1.0);
        assert_eq!(eval.g[right], 0.0);
        assert_eq!(eval.loss(), 1.5e4);

        // rho_k = sum_i c_i r_{i,k}: only the common token receives attention (r = L = 3),
        // and c = y g / n is nonzero only for the misclassified sample.
        let c = data.labels[wrong] / 2.0;
        assert_eq!(eval.rho[COMMON], 3.0 * c);
        for k in [0, 1, 3] {
            assert_eq!(eval.rho[k], 0.0, "rho[{k}]");
        }
        // One-hot attention gives p (G_h - gbar) = 0 everywhere, so Delta vanishes.
        assert!(eval.delta.iter().all(|&v| v == 0.0), "{:?}", eval.delta);
    }
}

#[test]
fn forward_pass_at_overflowing_logits() {
    // Logits of 1e300 overflow exp() without the max shift; with it the pass stays exact.
    let data = Dataset::new(vec![0, 1, 2, 0, 2, 3], vec![1.0, -1.0], 3, 4).unwrap();
    let index = PairIndex::new(&data);
    let scores = saturating_scores(&index, 1e300);
    let gamma = [0.0, 0.0, 2.0, 0.0];
    let mut eval = Evaluation::new(&data, &index);
    evaluate(&data, &index, &gamma, &scores, 1.0, true, &mut eval);
    assert_eq!(eval.outputs, vec![6.0, 6.0]);
    assert!(eval.loss().is_finite());
    assert!(eval.rho.iter().chain(&eval.delta).all(|v| v.is_finite()));
}

#[test]
fn large_weights_stay_finite_through_engines() {
    // sigma0 = sigma1 = 40 with m = 8 gives readouts near 1e4 and logits near 1e3, so
    // attention is one-hot and most samples sit deep in the saturated tails.
    let text = BASE
        .replace("sigma0 = 0.5", "sigma0 = 40.0")
        .replace("sigma1 = 0.5", "sigma1 = 40.0");
    for engine in ["parameter", "reduced"] {
        let config =
            Config::from_toml(&text.replace("\"parameter\"", &format!("{engine:?}"))).unwrap();
        let mut prepared = experiment::prepare(&config).unwrap();
        let y = prepared.y0.clone();
        let mut dy = vec![0.0; y.len()];
        prepared.dynamics.flow(&y, &mut dy);
        let loss = prepared.dynamics.train_eval.loss();

        let margins = prepared.dynamics.train_eval.margins().to_vec();
        let largest = margins.iter().fold(0.0f64, |a, m| a.max(m.abs()));
        assert!(largest > 1e3, "{engine}: margins only reach {largest}");
        assert!(loss.is_finite(), "{engine}: loss {loss}");
        assert!(loss >= 0.0, "{engine}: loss {loss}");
        assert!(
            dy.iter().all(|v| v.is_finite()),
            "{engine}: non-finite gradient"
        );
        let row = prepared.dynamics.observe(0.0, &y);
        assert_eq!(row.first_non_finite(), None, "{engine}: {row:?}");
    }
}

fn run_error(text: &str, out: &std::path::Path) -> Error {
    let config = Config::from_toml(text).unwrap();
    let options = RunOptions {
        resume: false,
        progress: false,
        save_inputs: false,
    };
    match experiment::execute(&config, out, &options, &AtomicBool::new(false)) {
        Ok(summary) => panic!("the run ended normally: {summary:?}"),
        Err(error) => error,
    }
}

#[test]
fn diverging_descent_keeps_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let error = run_error(&BASE.replace("eta = 0.1", "eta = 1e6"), dir.path());
    let Error::NonFinite {
        quantity,
        time,
        hint,
    } = &error
    else {
        panic!("expected a non-finite error, got {error}");
    };
    assert_eq!(quantity, "training loss");
    assert!(*time > 0.0, "time {time}");
    assert!(time.is_finite(), "time {time}");
    assert!(hint.contains("eta = 1000000"), "{hint}");
    assert!(hint.contains("lower train.eta"), "{hint}");
    let message = error.to_string();
    assert!(message.contains("the trajectory up to the last record is kept"));

    // Every row written before the overflow is kept, finite and earlier than it.
    let rows = read_trajectory(&dir.path().join("trajectory.csv")).unwrap();
    assert!(!rows.is_empty());
    assert_eq!(rows[0].t, 0.0);
    for row in &rows {
        assert!(row.t < *time);
        assert_eq!(row.first_non_finite(), None, "row at t = {}", row.t);
    }
}

#[test]
fn huge_init_blames_initial_weights() {
    for integrator in ["gradient-descent", "dopri5"] {
        let mut text = BASE
            .replace("sigma0 = 0.5", "sigma0 = 1e160")
            .replace("\"gradient-descent\"", &format!("{integrator:?}"));
        if integrator == "dopri5" {
            text = text
                .replace("eta = 0.1", "t_end = 10.0")
                .replace("max_steps = 2000", "");
        }
        let dir = tempfile::tempdir().unwrap();
        let error = run_error(&text, dir.path());
        let Error::NonFinite { time, hint, .. } = &error else {
            panic!("{integrator}: expected a non-finite error, got {error}");
        };
        assert_eq!(*time, 0.0, "{integrator}");
        assert!(hint.contains("initial weights are too large"), "{hint}");
        // The header is kept, so the file is still a valid, empty trajectory.
        let rows = read_trajectory(&dir.path().join("trajectory.csv")).unwrap();
        assert!(rows.is_empty(), "{integrator}");
    }
}
