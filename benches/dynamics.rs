//! Benchmarks of the gradient field (one right-hand-side evaluation: forward pass,
//! sensitivities and engine flow), of the reduced engine across widths, and of whole runs.
//!
//! Run with `cargo bench --bench dynamics`; BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use attnflow::config::Config;
use attnflow::dynamics::Dynamics;
use attnflow::engine::EngineKind;
use attnflow::error::Error;
use attnflow::experiment::prepare;
use attnflow::observables::Observation;
use attnflow::run::{RunState, Sink, run};
use criterion::{Criterion, criterion_group, criterion_main};

/// Loads a preset from experiments/ and applies `edit` to its TOML text.
fn config(preset: &str, edit: impl Fn(String) -> String) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(preset);
    let text = std::fs::read_to_string(&path).expect("preset exists");
    Config::from_toml(&edit(text)).expect("edited preset is valid")
}

fn with_engine(mut config: Config, engine: EngineKind) -> Config {
    config.train.engine = engine;
    config
}

/// Dynamics and initial state of `config`.
fn prepared(config: &Config) -> (Dynamics, Vec<f64>) {
    let prepared = prepare(config).expect("preset prepares");
    (prepared.dynamics, prepared.y0)
}

/// One gradient-field evaluation per iteration, at the initial state of each preset.
fn gradient_field(c: &mut Criterion) {
    let mut group = c.benchmark_group("gradient_field");
    for (name, preset) in [("paper", "paper-figure1.toml"), ("theory", "theory.toml")] {
        for engine in [EngineKind::Parameter, EngineKind::Reduced] {
            let config = with_engine(config(preset, |text| text), engine);
            let (mut dynamics, y0) = prepared(&config);
            let mut dy = vec![0.0; y0.len()];
            group.bench_function(format!("{name}/{}", engine.name()), |b| {
                b.iter(|| black_box(dynamics.flow(black_box(&y0), &mut dy)))
            });
        }
    }
    group.finish();
}

/// Median seconds per gradient-field evaluation over `rounds` timed batches.
fn seconds_per_evaluation(dynamics: &mut Dynamics, y: &[f64], rounds: usize) -> f64 {
    let mut dy = vec![0.0; y.len()];
    let batch = 20;
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(dynamics.flow(black_box(y), &mut dy));
            }
            start.elapsed().as_secs_f64() / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}

/// The reduced engine at widths m = 128 and m = 10^6 (same d, Wishart initial states): the
/// width enters only as the score scale 1/sqrt(m), so the cost should not change.
fn reduced_across_widths(c: &mut Criterion) {
    let mut group = c.benchmark_group("reduced_width");
    let mut medians = Vec::new();
    for m in [128u64, 1_000_000] {
        let config = config("theory.toml", |text| {
            text.replace("engine = \"parameter\"", "engine = \"reduced\"")
                .replace("m = 1024", &format!("m = {m}"))
                .replace("[init]", "[init]\nreduced_from = \"wishart\"")
        });
        let (mut dynamics, y0) = prepared(&config);
        let mut dy = vec![0.0; y0.len()];
        group.bench_function(format!("m={m}"), |b| {
            b.iter(|| black_box(dynamics.flow(black_box(&y0), &mut dy)))
        });
        medians.push(seconds_per_evaluation(&mut dynamics, &y0, 41));
    }
    group.finish();
    println!(
        "reduced engine, d = 259: {:.1} us per evaluation at m = 128, {:.1} us at m = 10^6, \
         ratio {:.3}",
        medians[0] * 1e6,
        medians[1] * 1e6,
        medians[1] / medians[0]
    );
}

/// A sink that keeps nothing, so whole-run benchmarks time only the dynamics and records.
struct Discard;

impl Sink for Discard {
    fn record(&mut self, _row: &Observation, _state: &RunState) -> Result<(), Error> {
        Ok(())
    }

    fn checkpoint(&mut self, _state: &RunState, _force: bool) -> Result<(), Error> {
        Ok(())
    }
}

fn whole_run(config: &Config) {
    let (mut dynamics, y0) = prepared(config);
    let schedule = config.schedule().expect("schedule");
    let mut state = RunState::new(y0);
    let cancel = AtomicBool::new(false);
    run(&mut dynamics, &schedule, &mut state, &mut Discard, &cancel).expect("run succeeds");
    black_box(state.y);
}

/// The paper's experiment: 3000 gradient-descent steps (a tenth of the full run), and
/// gradient flow by Dormand-Prince 5(4) to t = 300 with 10 output times.
fn whole_runs(c: &mut Criterion) {
    let mut group = c.benchmark_group("run");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let descent = config("paper-figure1.toml", |text| {
        text.replace("max_steps = 30000", "max_steps = 3000")
    });
    group.bench_function("paper/gradient-descent-3000-steps", |b| {
        b.iter(|| whole_run(&descent))
    });
    let flow = config("paper-figure1.toml", |text| {
        text.replace("max_steps = 30000", "")
            .replace("\"gradient-descent\"", "\"dopri5\"")
            .replace("eta = 0.01", "rtol = 1e-8\natol = 1e-12\nt_end = 300.0")
            .replace("points = 300", "points = 10")
    });
    group.bench_function("paper/dopri5-to-t300", |b| b.iter(|| whole_run(&flow)));
    group.finish();
}

criterion_group!(benches, gradient_field, reduced_across_widths, whole_runs);
criterion_main!(benches);
