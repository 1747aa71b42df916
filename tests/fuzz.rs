//! Fuzzing of the config parser and the `.npz` readers on the stable toolchain, with
//! proptest as the input generator.
//!
//! Both targets are `#[ignore]`d because they run for a wall-clock budget, 300 s each by
//! default. Run them with
//!
//! ```text
//! ATTNFLOW_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --ignored --nocapture
//! ```
//!
//! A failing input is shrunk by proptest and printed. A crash that proptest cannot catch
//! (an abort on a failed allocation) shows up with `ATTNFLOW_FUZZ_VERBOSE=1`, which prints
//! every input before it runs. The property is that every input
//! either loads or is rejected with an `Error`: no panic, and every loaded value is usable.
//! An input that once failed becomes a case in `tests/bad_input.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use attnflow::config::Config;
use attnflow::engine::EngineKind;
use attnflow::npz;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

/// Cases per proptest batch; batches repeat with new seeds until the budget is spent.
const BATCH_CASES: u32 = 50;

fn budget() -> Duration {
    let seconds = std::env::var("ATTNFLOW_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(300.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `body` on values of `strategy` in seeded batches until `budget` has passed, and
/// returns the number of cases run.
fn fuzz_for<S: Strategy>(
    name: &str,
    budget: Duration,
    strategy: S,
    body: impl Fn(S::Value) + Clone,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let mut cases = 0u64;
    let mut batch = 0u64;
    while started.elapsed() < budget {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&batch.to_le_bytes());
        seed[8..16].copy_from_slice(&(name.len() as u64).to_le_bytes());
        let config = RunnerConfig {
            cases: BATCH_CASES,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..RunnerConfig::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let body = body.clone();
        let verbose = std::env::var_os("ATTNFLOW_FUZZ_VERBOSE").is_some();
        let result = runner.run(&strategy, move |value| {
            if verbose {
                eprintln!("{name}: batch {batch}: {value:?}");
            }
            body(value);
            Ok(())
        });
        if let Err(error) = result {
            panic!("{name}: batch {batch} failed: {error}");
        }
        cases += u64::from(BATCH_CASES);
        batch += 1;
    }
    eprintln!(
        "{name}: {cases} cases in {:.0} s, no failure",
        started.elapsed().as_secs_f64()
    );
    cases
}

// ---------------------------------------------------------------------------------------
// Config parser

const SEED_CONFIGS: &[&str] = &[
    r#"
seed = 3
[task]
n = 12
L = 4
d = 20
fillers = "sampled"
n_test = 6
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
[record]
grid = "linear"
points = 10
"#,
    r#"
seed = 0
[task]
n = 6
L = 3
fillers = "distinct"
n_test = 6
[model]
m = 16
m1 = 4
[init]
scheme = "theory"
c0 = 0.1
c1 = 0.1
[train]
engine = "reduced"
integrator = "dopri5"
rtol = 1e-6
atol = 1e-9
t_end = 10.0
target_loss = 0.01
checkpoint_seconds = 5
[record]
grid = "log"
points = 20
t_first = 1e-3
"#,
    r#"
[task]
n = 12
L = 5
d = 30
fillers = "sampled"
n_test = 12
[model]
m = 1000000
m1 = 500
[init]
scheme = "gaussian"
sigma0 = 0.01
sigma1 = 0.02
reduced_from = "wishart"
[train]
engine = "reduced"
integrator = "dop853"
t_end = 5.0
max_steps = 1000
"#,
];

const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "6",
    "7",
    "12",
    "100000000",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "0.0",
    "-0.0",
    "1e-320",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "2.0",
    "\"\"",
    "\"x\"",
    "true",
    "[]",
    "{}",
    "[1, 2]",
    "\"distinct\"",
    "\"sampled\"",
    "\"parameter\"",
    "\"reduced\"",
    "\"wishart\"",
    "\"parameters\"",
    "\"theory\"",
    "\"gaussian\"",
    "\"kaiming-normal\"",
    "\"gradient-descent\"",
    "\"dopri5\"",
    "\"log\"",
    "\"linear\"",
    "\"/nonexistent/file.npz\"",
];

const KEYS: &[&str] = &[
    "seed",
    "n",
    "L",
    "l",
    "d",
    "fillers",
    "n_test",
    "dataset",
    "m",
    "m1",
    "scheme",
    "c0",
    "c1",
    "sigma0",
    "sigma1",
    "weights",
    "reduced_from",
    "engine",
    "integrator",
    "eta",
    "etta",
    "t_end",
    "max_steps",
    "target_loss",
    "rtol",
    "atol",
    "checkpoint_seconds",
    "grid",
    "points",
    "t_first",
    "[task]",
    "[train]",
    "[record]",
];

/// One edit of a config text, with indices taken modulo the number of lines.
#[derive(Clone, Debug)]
enum Edit {
    SetValue(usize, usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    InsertLine(usize, usize, usize),
    Truncate(usize),
    InsertByte(usize, u8),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0..VALUES.len()).prop_map(|(l, v)| Edit::SetValue(l, v)),
        1 => any::<usize>().prop_map(Edit::DeleteLine),
        1 => any::<usize>().prop_map(Edit::DuplicateLine),
        2 => (any::<usize>(), 0..KEYS.len(), 0..VALUES.len())
            .prop_map(|(l, k, v)| Edit::InsertLine(l, k, v)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::InsertByte(p, b)),
    ]
}

fn apply_edits(base: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        let count = lines.len();
        match *edit {
            Edit::SetValue(l, v) => {
                let line = &mut lines[l % count];
                if let Some(eq) = line.find('=') {
                    line.truncate(eq + 1);
                    line.push(' ');
                    line.push_str(VALUES[v]);
                }
            }
            Edit::DeleteLine(l) => {
                lines.remove(l % count);
            }
            Edit::DuplicateLine(l) => {
                let line = lines[l % count].clone();
                lines.insert(l % count, line);
            }
            Edit::InsertLine(l, k, v) => {
                let key = KEYS[k];
                let line = if key.starts_with('[') {
                    key.to_string()
                } else {
                    format!("{key} = {}", VALUES[v])
                };
                lines.insert(l % (count + 1), line);
            }
            Edit::Truncate(p) => {
                let text = lines.join("\n");
                let cut = floor_char_boundary(&text, p % (text.len() + 1));
                lines = text[..cut].lines().map(str::to_string).collect();
            }
            Edit::InsertByte(p, b) => {
                let line = &mut lines[p % count];
                let at = floor_char_boundary(line, p % (line.len() + 1));
                line.insert(at, char::from(b));
            }
        }
    }
    lines.join("\n")
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Returns whether building the data and engine of `config` is cheap enough for a fuzz case.
fn is_small(config: &Config) -> bool {
    let Ok(d) = config.task_spec().resolved_vocab_size() else {
        return false;
    };
    let (m, m1, d) = (config.model.m, config.model.m1, d as u64);
    let samples = (config.task.n as u64)
        .saturating_add(config.task.n_test as u64)
        .saturating_mul(config.task.seq_len as u64);
    let weights = m.saturating_mul(m1.saturating_add(d.saturating_mul(3)));
    let grams = d.saturating_mul(d).saturating_mul(4);
    let state = match config.train.engine {
        EngineKind::Parameter => weights,
        EngineKind::Reduced if config.draws_weights() => weights.max(grams),
        EngineKind::Reduced => grams,
    };
    samples <= 5_000 && state <= 200_000 && m <= 10_000 && config.task.seq_len <= 50
}

/// Loads a config text and, when it is valid and small, builds its data and initial state
/// and evaluates it once.
fn check_config_text(text: &str) {
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let schedule = config
        .schedule()
        .expect("a validated config has a schedule");
    assert!(schedule.t_end.is_finite());
    assert!(schedule.t_end > 0.0);
    assert!(schedule.record_times.windows(2).all(|w| w[0] < w[1]));
    let again = Config::from_toml(&config.to_toml()).expect("a saved config loads again");
    assert_eq!(again, config);
    if !is_small(&config) {
        return;
    }
    if let Ok(mut prepared) = attnflow::experiment::prepare(&config) {
        let row = prepared.dynamics.observe(0.0, &prepared.y0.clone());
        assert_eq!(row.t, 0.0);
    }
}

#[test]
#[ignore = "runs for ATTNFLOW_FUZZ_SECONDS (default 300)"]
fn fuzz_config_parser() {
    let total = budget();
    let bytes = proptest::collection::vec(any::<u8>(), 0..600);
    fuzz_for("config bytes", total / 4, bytes, |bytes| {
        check_config_text(&String::from_utf8_lossy(&bytes));
    });
    let edits = (
        0..SEED_CONFIGS.len(),
        proptest::collection::vec(edit_strategy(), 1..6),
    );
    fuzz_for("config edits", total * 3 / 4, edits, |(base, edits)| {
        check_config_text(&apply_edits(SEED_CONFIGS[base], &edits));
    });
}

// ---------------------------------------------------------------------------------------
// .npz readers

/// Bytes of a valid dataset file and a valid weights file, from a small generated task.
fn seed_files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let config = Config::from_toml(SEED_CONFIGS[0]).unwrap();
    let prepared = attnflow::experiment::prepare(&config).unwrap();
    let dataset = dir.join("seed-dataset.npz");
    let weights = dir.join("seed-weights.npz");
    npz::write_dataset(&dataset, &prepared.dynamics.data).unwrap();
    npz::write_weights(&weights, prepared.params.as_ref().unwrap()).unwrap();
    (
        std::fs::read(&dataset).unwrap(),
        std::fs::read(&weights).unwrap(),
    )
}

/// Reads `bytes` as a dataset file and as a weights file; a dataset that loads is also
/// checked by the dataset constructor.
fn check_npz_bytes(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    if let Ok(file) = npz::read_dataset(path) {
        let d = file.min_vocab_size().max(4);
        if d <= 1_000_000 {
            let _ =
                attnflow::task::Dataset::new(file.train_tokens, file.train_labels, file.seq_len, d);
        }
    }
    if let Ok(params) = npz::read_weights(path, 20) {
        assert!(params.w.iter().all(|v| v.is_finite()));
        assert!(params.a.iter().all(|&v| v == 1.0 || v == -1.0));
    }
}

/// One array of a generated `.npz` file.
#[derive(Clone, Debug)]
struct ArraySpec {
    name: &'static str,
    dtype: u8,
    shape: Vec<usize>,
    values: Vec<f64>,
}

const ARRAY_NAMES: &[&str] = &[
    "tokens",
    "labels",
    "test_tokens",
    "test_labels",
    "d",
    "W",
    "W_V",
    "W_K",
    "W_Q",
    "a",
];

const ARRAY_VALUES: &[f64] = &[
    0.0,
    1.0,
    -1.0,
    2.0,
    3.0,
    19.0,
    20.0,
    1e9,
    -5.0,
    0.5,
    f64::NAN,
    f64::INFINITY,
    1e300,
];

fn array_strategy() -> impl Strategy<Value = ArraySpec> {
    (
        0..ARRAY_NAMES.len(),
        0u8..4,
        proptest::collection::vec(0usize..6, 0..3),
        proptest::collection::vec(0..ARRAY_VALUES.len(), 0..40),
    )
        .prop_map(|(name, dtype, shape, values)| ArraySpec {
            name: ARRAY_NAMES[name],
            dtype,
            shape,
            values: values.into_iter().map(|i| ARRAY_VALUES[i]).collect(),
        })
}

/// Writes the arrays to `path` with the given dtypes (int64, int32, uint8 or float64).
fn write_arrays(path: &Path, arrays: &[ArraySpec]) {
    let mut writer = NpzWriter::new(std::fs::File::create(path).unwrap());
    let mut written = std::collections::HashSet::new();
    for spec in arrays {
        if !written.insert(spec.name) {
            continue;
        }
        let len: usize = spec.shape.iter().product();
        let values: Vec<f64> = (0..len)
            .map(|i| spec.values.get(i).copied().unwrap_or(1.0))
            .collect();
        let array = ArrayD::from_shape_vec(IxDyn(&spec.shape), values).unwrap();
        let result = match spec.dtype {
            0 => writer.add_array(spec.name, &array.mapv(|v| v as i64)),
            1 => writer.add_array(spec.name, &array.mapv(|v| v as i32)),
            2 => writer.add_array(spec.name, &array.mapv(|v| v as u8)),
            _ => writer.add_array(spec.name, &array),
        };
        result.unwrap();
    }
    writer.finish().unwrap();
}

/// A valid file with some bytes overwritten and maybe a tail cut off.
#[derive(Clone, Debug)]
struct ByteEdits {
    weights_file: bool,
    overwrites: Vec<(usize, u8)>,
    digits: Option<(usize, u64)>,
    truncate: Option<usize>,
}

fn byte_edits_strategy() -> impl Strategy<Value = ByteEdits> {
    (
        any::<bool>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::of((any::<usize>(), any::<u64>())),
        proptest::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(|(weights_file, overwrites, digits, truncate)| ByteEdits {
            weights_file,
            overwrites,
            digits,
            truncate,
        })
}

/// Applies `edits` to a copy of `base`. `digits` rewrites one of the numbers in an npy
/// header's shape, the edit most likely to make a reader trust a false length.
fn apply_byte_edits(base: &[u8], edits: &ByteEdits) -> Vec<u8> {
    let mut bytes = base.to_vec();
    if let Some((which, value)) = edits.digits {
        let marker = b"'shape': (";
        let starts: Vec<usize> = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| *w == marker)
            .map(|(i, _)| i + marker.len())
            .collect();
        if !starts.is_empty() {
            let start = starts[which % starts.len()];
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            let text = (value % 10u64.pow((value % 20) as u32).max(1)).to_string();
            let old_len = end - start;
            bytes.splice(start..end, text.bytes());
            keep_header_length(&mut bytes, start, text.len() as isize - old_len as isize);
        }
    }
    for &(position, byte) in &edits.overwrites {
        let len = bytes.len();
        if len > 0 {
            bytes[position % len] = byte;
        }
    }
    if let Some(cut) = edits.truncate {
        let len = bytes.len();
        bytes.truncate(cut % (len + 1));
    }
    bytes
}

/// Restores the length of an npy header after an edit at `at` changed it by `delta` bytes,
/// by removing or adding padding spaces before the newline that ends the header. Without
/// this the reader rejects the header before it trusts the edited shape.
fn keep_header_length(bytes: &mut Vec<u8>, at: usize, delta: isize) {
    let Some(newline) = bytes[at..].iter().position(|&b| b == b'\n') else {
        return;
    };
    let newline = at + newline;
    if delta > 0 {
        let delta = delta as usize;
        let spaces = bytes[..newline]
            .iter()
            .rev()
            .take_while(|&&b| b == b' ')
            .count();
        if spaces >= delta {
            bytes.drain(newline - delta..newline);
        }
    } else if delta < 0 {
        let padding = std::iter::repeat_n(b' ', delta.unsigned_abs());
        bytes.splice(newline..newline, padding);
    }
}

#[test]
#[ignore = "runs for ATTNFLOW_FUZZ_SECONDS (default 300)"]
fn fuzz_npz_readers() {
    let total = budget();
    let dir = tempfile::tempdir().unwrap();
    let (dataset, weights) = seed_files(dir.path());
    let path = dir.path().join("case.npz");

    let raw = proptest::collection::vec(any::<u8>(), 0..400);
    fuzz_for("npz bytes", total / 6, raw, |bytes| {
        check_npz_bytes(&path, &bytes)
    });

    fuzz_for(
        "npz byte edits",
        total / 2,
        byte_edits_strategy(),
        |edits| {
            let base = if edits.weights_file {
                &weights
            } else {
                &dataset
            };
            check_npz_bytes(&path, &apply_byte_edits(base, &edits));
        },
    );

    let arrays = proptest::collection::vec(array_strategy(), 0..8);
    fuzz_for("npz arrays", total / 3, arrays, |arrays| {
        write_arrays(&path, &arrays);
        let bytes = std::fs::read(&path).unwrap();
        check_npz_bytes(&path, &bytes);
    });
}
