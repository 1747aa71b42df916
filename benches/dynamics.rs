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

/// The allocator of the `attnflow` binary, so that the state vectors are aligned as in runs.
#[global_allocator]
static ALLOCATOR: attnflow::allocator::CacheLineAligned = attnflow::allocator::CacheLineAligned;

/// Loads a preset from experiments/ and applies `edit` to its TOML text.
fn config(preset: &str, edit: impl Fn(String) -> String) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(preset);
    let text = std::fs::read_to_string(&path).expect("preset exists");
    Config::from_toml(&edit(text)).expect("edited preset is valid")
}

/// Loads the theory preset at width `m` for `engine`. The preset draws its reduced state
/// from the Wishart law at m = 10^6, but the parameter engine needs weights, so they are
/// drawn at this width for it.
fn theory(m: u64, engine: EngineKind) -> Config {
    let reduced_from = match engine {
        EngineKind::Parameter => "parameters",
        EngineKind::Reduced => "wishart",
    };
    let config = config("theory.toml", |text| {
        text.replace("m = 1000000", &format!("m = {m}")).replace(
            "reduced_from = \"wishart\"",
            &format!("reduced_from = \"{reduced_from}\""),
        )
    });
    assert_eq!(config.model.m, m, "theory.toml no longer sets m = 1000000");
    with_engine(config, engine)
}

/// Returns the presets of the per-evaluation benchmarks: the paper's size and the theory
/// preset at m = 1024, where the parameter engine still fits in memory.
fn presets(engine: EngineKind) -> [(&'static str, Config); 2] {
    let paper = with_engine(config("paper-figure1.toml", |text| text), engine);
    [("paper", paper), ("theory-m1024", theory(1024, engine))]
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
    for engine in [EngineKind::Parameter, EngineKind::Reduced] {
        for (name, config) in presets(engine) {
            let (mut dynamics, y0) = prepared(&config);
            let mut dy = vec![0.0; y0.len()];
            group.bench_function(format!("{name}/{}", engine.name()), |b| {
                b.iter(|| {
                    dynamics.flow(black_box(&y0), &mut dy);
                    black_box(&dy);
                })
            });
        }
    }
    group.finish();
}

/// Whether this is a timing run (`cargo bench`) rather than a check that the benchmarks
/// work (`cargo test --all-targets`, which runs each benchmark once without `--bench`).
fn timing_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Median seconds per gradient-field evaluation over `rounds` timed batches.
fn seconds_per_evaluation(dynamics: &mut Dynamics, y: &[f64], rounds: usize) -> f64 {
    let mut dy = vec![0.0; y.len()];
    let batch = 20;
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                dynamics.flow(black_box(y), &mut dy);
                black_box(&dy);
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
    let mut vocab_size = 0;
    for m in [128u64, 1_000_000] {
        let (mut dynamics, y0) = prepared(&theory(m, EngineKind::Reduced));
        vocab_size = dynamics.data.train.vocab_size;
        let mut dy = vec![0.0; y0.len()];
        group.bench_function(format!("m={m}"), |b| {
            b.iter(|| {
                dynamics.flow(black_box(&y0), &mut dy);
                black_box(&dy);
            })
        });
        if timing_run() {
            medians.push(seconds_per_evaluation(&mut dynamics, &y0, 41));
        }
    }
    group.finish();
    if !timing_run() {
        return;
    }
    println!(
        "reduced engine, d = {vocab_size}: {:.1} us per evaluation at m = 128, {:.1} us at \
         m = 10^6, ratio {:.3}",
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

/// The paper-figure1 preset: 3000 gradient-descent steps (a tenth of the full run), and
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

/// CPU time of the calling thread in seconds, from /proc/thread-self/schedstat (Linux), or
/// `None` where that file is missing.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds * 1e-9)
}

/// Sizes that set the cost of one gradient-field evaluation.
struct Sizes {
    n: f64,
    seq_len: f64,
    d: f64,
    m: f64,
    /// Distinct (key, query) token pairs of the training set.
    pairs: f64,
    /// Distinct tokens of the training set (entries of rho that can be non-zero).
    tokens: f64,
}

impl Sizes {
    fn of(config: &Config, dynamics: &Dynamics) -> Sizes {
        let train = &dynamics.data.train;
        let pairs = attnflow::forward::PairIndex::new(train).pairs.len();
        let mut seen = vec![false; train.vocab_size];
        (0..train.len()).for_each(|i| train.sample(i).iter().for_each(|&k| seen[k] = true));
        Sizes {
            n: train.len() as f64,
            seq_len: train.seq_len as f64,
            d: train.vocab_size as f64,
            m: config.model.m as f64,
            pairs: pairs as f64,
            tokens: seen.iter().filter(|&&s| s).count() as f64,
        }
    }

    /// Floating-point operations of the forward pass and sensitivities, counting each exp
    /// as one: per sample 11 L^2 + 4 L + 10.
    fn forward_flops(&self) -> f64 {
        let l = self.seq_len;
        self.n * (11.0 * l * l + 4.0 * l + 10.0)
    }

    /// (flops, bytes) of one evaluation; bytes count every load and store of the vector
    /// kernels (an axpy element moves 24 bytes, a dot element 16), whatever cache serves it.
    fn cost(&self, engine: EngineKind) -> (f64, f64) {
        let Sizes {
            d,
            m,
            pairs: p,
            tokens: t,
            ..
        } = *self;
        match engine {
            // u (m), the readouts gamma (d m), W_V rho (D m), dW_V (d m), the scores (P m)
            // and the key and query updates (2 P m). The bytes also count packing both
            // blocks and storing the target rows, which the flow writes without zeroing or
            // loading them first.
            EngineKind::Parameter => (
                2.0 * m + 3.0 * d * m + 2.0 * t * m + 6.0 * p * m + self.forward_flops(),
                24.0 * m + 80.0 * d * m + 24.0 * t * m + 32.0 * p * m,
            ),
            EngineKind::Reduced => (
                8.0 * p * d + 11.0 * d * d + 5.0 * d + self.forward_flops(),
                96.0 * p * d + 144.0 * d * d,
            ),
        }
    }
}

/// Prints, for each engine and preset, the operation count of one gradient-field
/// evaluation, its CPU time, and the achieved GFLOP/s and GB/s. The CPU time excludes time
/// the thread waits for a core, so the figures hold on a shared machine.
fn throughput(_c: &mut Criterion) {
    if !timing_run() {
        return;
    }
    for engine in [EngineKind::Parameter, EngineKind::Reduced] {
        for (name, config) in presets(engine) {
            let (mut dynamics, y0) = prepared(&config);
            let sizes = Sizes::of(&config, &dynamics);
            let (flops, bytes) = sizes.cost(engine);
            let mut dy = vec![0.0; y0.len()];
            let (Some(start), wall) = (thread_cpu_seconds(), Instant::now()) else {
                println!("throughput: /proc/thread-self/schedstat is missing, skipped");
                return;
            };
            let mut evaluations = 0u64;
            while wall.elapsed() < Duration::from_secs(2) {
                dynamics.flow(black_box(&y0), &mut dy);
                black_box(&dy);
                evaluations += 1;
            }
            let seconds = (thread_cpu_seconds().unwrap_or(start) - start) / evaluations as f64;
            println!(
                "throughput {name}/{}: P = {}, D = {}, {:.3} MFLOP and {:.2} MB per \
                 evaluation, {:.1} us CPU, {:.2} GFLOP/s, {:.1} GB/s",
                engine.name(),
                sizes.pairs,
                sizes.tokens,
                flops * 1e-6,
                bytes * 1e-6,
                seconds * 1e6,
                flops / seconds * 1e-9,
                bytes / seconds * 1e-9
            );
        }
    }
}

criterion_group! {
    name = benches;
    // Criterion draws its plots with a system font, and a machine without one made the
    // bench panic. The measurements are printed and saved without the plots.
    config = Criterion::default().without_plots();
    targets = throughput, gradient_field, reduced_across_widths, whole_runs
}
criterion_main!(benches);
