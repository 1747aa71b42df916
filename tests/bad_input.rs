//! Every class of invalid config or input file is rejected with a message that names the
//! value and the fix.

use std::path::Path;

use attnflow::config::Config;
use attnflow::experiment;
use ndarray::{Array0, Array1, Array2, array};
use ndarray_npy::NpzWriter;

const BASE: &str = r#"
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
scheme = "gaussian"
sigma0 = 0.1
sigma1 = 0.1
[train]
engine = "parameter"
integrator = "gradient-descent"
eta = 0.1
max_steps = 100
"#;

/// Replaces the line starting with `key =` in [`BASE`] by `key = value` (or appends it to
/// the section named in `section` when the key is absent).
fn with_value(section: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let mut found = false;
    let mut lines: Vec<String> = BASE
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) && !found {
                found = true;
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !found {
        let header = format!("[{section}]");
        let at = lines
            .iter()
            .position(|line| *line == header)
            .map_or(lines.len(), |i| i + 1);
        if at == lines.len() && !lines.contains(&header) {
            lines.push(header);
            lines.push(format!("{key} = {value}"));
        } else {
            lines.insert(at, format!("{key} = {value}"));
        }
    }
    lines.join("\n")
}

fn config_error(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(_) => panic!("accepted an invalid config:\n{text}"),
        Err(error) => error.to_string(),
    }
}

fn assert_contains(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "message {message:?} lacks {expected:?}"
    );
}

#[test]
fn base_config_is_valid() {
    Config::from_toml(BASE).unwrap();
}

#[test]
fn unknown_keys_name_closest_key() {
    let cases = [
        (
            BASE.replace("eta = 0.1", "etta = 0.1"),
            "unknown key `train.etta`; did you mean `eta`?",
        ),
        (
            BASE.replace("L = 4", "l = 4"),
            "unknown key `task.l`; did you mean `L`?",
        ),
        (
            BASE.replace("[model]", "[modle]"),
            "unknown key `modle`; did you mean `model`?",
        ),
        (
            BASE.replace("m1 = 6", "m1 = 6\nd = 20"),
            "`d` belongs in [task]; move it there",
        ),
        (
            BASE.replace("max_steps = 100", "max_steps = 100\nseed = 4"),
            "`seed` belongs at the top level",
        ),
        (
            BASE.replace("fillers", "zzzzzzz"),
            "the valid keys in [task] are n, L, d, fillers",
        ),
    ];
    for (text, expected) in cases {
        assert_contains(&config_error(&text), expected);
    }
}

#[test]
fn out_of_range_values_name_value_and_fix() {
    let cases = [
        ("task", "L", "2", "task.L = 2 is too small"),
        (
            "task",
            "n",
            "0",
            "task.n = 0 is not a positive multiple of 6",
        ),
        ("task", "n", "13", "so use e.g. 18"),
        ("task", "n_test", "7", "task.n_test = 7"),
        ("task", "d", "3", "task.d = 3 leaves no filler tokens"),
        ("model", "m", "0", "model.m = 0; widths must be >= 1"),
        ("model", "m1", "0", "model.m1 = 0"),
        ("init", "sigma0", "0.0", "init.sigma0 = 0 is invalid"),
        ("init", "sigma1", "-1.0", "init.sigma1 = -1 is invalid"),
        ("init", "sigma0", "nan", "init.sigma0 = NaN is invalid"),
        ("init", "sigma1", "inf", "init.sigma1 = inf is invalid"),
        ("train", "eta", "0.0", "train.eta = 0 is invalid"),
        ("train", "eta", "-inf", "train.eta = -inf is invalid"),
        ("train", "max_steps", "0", "train.max_steps = 0"),
        ("train", "t_end", "-1.0", "train.t_end = -1 is invalid"),
        (
            "train",
            "t_end",
            "-1e-300",
            "train.t_end = -1e-300 is invalid",
        ),
        ("train", "rtol", "1.0", "train.rtol = 1 is outside (0, 1)"),
        ("train", "atol", "0.0", "train.atol = 0 is outside (0, 1)"),
        ("train", "atol", "nan", "train.atol = NaN is outside (0, 1)"),
        (
            "train",
            "target_loss",
            "0.0",
            "train.target_loss = 0 is invalid",
        ),
        (
            "train",
            "checkpoint_seconds",
            "-5.0",
            "train.checkpoint_seconds = -5",
        ),
        ("record", "points", "0", "record.points = 0"),
        (
            "record",
            "points",
            "100000000",
            "record.points = 100000000 is above",
        ),
        (
            "record",
            "t_first",
            "1e9",
            "record.t_first = 1000000000 must lie",
        ),
        ("record", "t_first", "nan", "record.t_first = NaN must lie"),
    ];
    for (section, key, value, expected) in cases {
        assert_contains(&config_error(&with_value(section, key, value)), expected);
    }
}

#[test]
fn distinct_fillers_need_large_vocabulary() {
    let text = BASE.replace("fillers = \"sampled\"", "fillers = \"distinct\"");
    // 3 + 6*1 + 4*2 + 2*3 = 23 training ids plus 3*1 + 2*2 + 1*3 = 10 test fillers.
    assert_contains(&config_error(&text), "need d >= 33");
}

#[test]
fn inconsistent_settings_rejected() {
    let cases = [
        (
            BASE.replace("sigma1 = 0.1", ""),
            "init.sigma1 is missing; scheme \"gaussian\" needs it",
        ),
        (
            BASE.replace("sigma1 = 0.1", "sigma1 = 0.1\nc0 = 1.0"),
            "init.c0 does not apply to scheme \"gaussian\"",
        ),
        (
            BASE.replace("eta = 0.1\n", ""),
            "train.eta is missing; gradient descent needs a step size",
        ),
        (
            BASE.replace("max_steps = 100", "max_steps = 9223372036854775807")
                .replace("eta = 0.1", "eta = 1e300"),
            "overflows; lower eta or max_steps",
        ),
        (
            BASE.replace("\"gradient-descent\"", "\"dopri5\""),
            "train.eta applies only to gradient descent",
        ),
        (
            BASE.replace("eta = 0.1", "eta = 0.1\ncontroller = \"pi\""),
            "train.controller applies only to gradient flow",
        ),
        (
            BASE.replace("\"gradient-descent\"", "\"dop853\"")
                .replace("eta = 0.1", "t_end = 1.0\ncontroller = \"integral\""),
            "train.controller = \"integral\" needs train.integrator = \"dopri5\"",
        ),
        (
            BASE.replace("\"gradient-descent\"", "\"dopri5\"")
                .replace("eta = 0.1", "t_end = 1.0\ncontroller = \"pid\""),
            "unknown variant `pid`",
        ),
        (
            BASE.replace("sigma1 = 0.1", "sigma1 = 0.1\nreduced_from = \"wishart\""),
            "applies only to train.engine = \"reduced\"",
        ),
        (
            BASE.replace("m = 8", "m = 4294967296"),
            "the initial weights would have",
        ),
        // Found by the config fuzzer: the reduced engine drew a 2^32 x 16 weight matrix
        // before the size check covered the parameter draw it starts from.
        (
            BASE.replace("\"parameter\"", "\"reduced\"")
                .replace("m1 = 6", "m1 = 4294967296"),
            "set init.reduced_from = \"wishart\"",
        ),
        (
            BASE.replace("\"parameter\"", "\"reduced\"")
                .replace("d = 20", "d = 100000"),
            "the reduced engine would hold 40000000000 Gram entries",
        ),
    ];
    for (text, expected) in cases {
        assert_contains(&config_error(&text), expected);
    }
}

#[test]
fn unused_first_time_rejected() {
    // Found by the config fuzzer: a linear grid ignored t_first, so even NaN passed.
    let text = format!("{BASE}\n[record]\ngrid = \"linear\"\nt_first = nan\n");
    assert_contains(
        &config_error(&text),
        "record.t_first applies only to grid = \"log\"",
    );
}

#[test]
fn syntax_and_type_errors_rejected() {
    assert_contains(&config_error("seed = "), "invalid configuration");
    assert_contains(
        &config_error(&BASE.replace("n = 12", "n = \"twelve\"")),
        "invalid type",
    );
    assert_contains(
        &config_error(&BASE.replace("seed = 3", "seed = -3")),
        "invalid configuration",
    );
    assert_contains(
        &config_error(&BASE.replace("\"sampled\"", "\"sampeld\"")),
        "unknown variant `sampeld`",
    );
    // Integer keys name what they need in plain words, not as a Rust type.
    for text in [
        BASE.replace("m = 8", "m = 1e6"),
        BASE.replace("n = 12", "n = -12"),
    ] {
        let error = config_error(&text);
        assert_contains(&error, "expected a whole number >= 0 in plain digits");
        assert!(
            !error.contains("u64") && !error.contains("usize"),
            "{error}"
        );
    }
}

#[test]
fn tiny_t_end_in_scientific_notation() {
    let text = format!(
        "{}\n[record]\nt_first = 0.1\n",
        with_value("train", "t_end", "1e-300")
    );
    assert_contains(
        &config_error(&text),
        "train.t_end = 1e-300 is less than half",
    );
    let flow = text
        .replace("\"gradient-descent\"", "\"dopri5\"")
        .replace("eta = 0.1", "");
    assert_contains(
        &config_error(&flow),
        "record.t_first = 0.1 must lie in (0, t_end = 1e-300]",
    );
}

#[test]
fn record_times_strictly_increasing() {
    // Found by the config fuzzer: a first output time a few ulps below t_end.
    let text = format!("{BASE}\n[record]\npoints = 50\nt_first = 9.999999999999998\n");
    let config = Config::from_toml(&text).unwrap();
    let times = config.schedule().unwrap().record_times;
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert_eq!(*times.last().unwrap(), 10.0);
}

// ---------------------------------------------------------------------------------------
// .npz inputs

/// Returns a valid training set over L = 4: three I1 samples and one of each other group.
fn valid_tokens() -> Array2<i64> {
    array![
        [0, 1, 2, 3],
        [2, 0, 1, 4],
        [1, 2, 5, 0],
        [0, 2, 6, 7],
        [1, 8, 2, 9],
        [2, 10, 11, 12],
    ]
}

fn valid_labels() -> Array1<f64> {
    array![1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
}

fn dataset_config(path: &Path, n: usize) -> Config {
    let text = BASE
        .replace("n = 12", &format!("n = {n}"))
        .replace("d = 20\n", "")
        .replace(
            "[task]",
            &format!("[task]\ndataset = {:?}", path.to_str().unwrap()),
        );
    Config::from_toml(&text).unwrap()
}

/// Adds arrays to a dataset file.
type WriteArrays = Box<dyn FnOnce(&mut NpzWriter<std::fs::File>)>;

/// Changes the named matrices and the sign vector `a` of a weights file.
type EditWeights = Box<dyn FnOnce(&mut Vec<(&'static str, Array2<f64>)>, &mut Array1<f64>)>;

/// Writes a dataset file whose arrays are given by `write`, and returns the error of
/// preparing a run from it.
fn dataset_error(write: impl FnOnce(&mut NpzWriter<std::fs::File>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    let mut writer = NpzWriter::new(std::fs::File::create(&path).unwrap());
    write(&mut writer);
    writer.finish().unwrap();
    match experiment::prepare(&dataset_config(&path, 6)) {
        Ok(_) => panic!("accepted an invalid dataset file"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn valid_dataset_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    let mut writer = NpzWriter::new(std::fs::File::create(&path).unwrap());
    writer.add_array("tokens", &valid_tokens()).unwrap();
    writer.add_array("labels", &valid_labels()).unwrap();
    writer.finish().unwrap();
    let prepared = experiment::prepare(&dataset_config(&path, 6)).unwrap();
    assert_eq!(prepared.dynamics.data.train.len(), 6);
    assert_eq!(prepared.dynamics.data.train.vocab_size, 13);
}

#[test]
fn dataset_file_errors_name_the_problem() {
    let cases: Vec<(WriteArrays, &str)> = vec![
        (
            Box::new(|w| w.add_array("labels", &valid_labels()).unwrap()),
            "array `tokens` is missing",
        ),
        (
            Box::new(|w| w.add_array("tokens", &valid_tokens()).unwrap()),
            "array `labels` is missing",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens().mapv(|v| v as f64))
                    .unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
            }),
            "array `tokens` is not an integer array",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &valid_labels().mapv(|v| v as i64))
                    .unwrap();
            }),
            "array `labels` could not be read as float64",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens().into_shape_with_order(24).unwrap())
                    .unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
            }),
            "array `tokens` has shape [24]; it must be (n, L)",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &array![1.0, 1.0, 1.0]).unwrap();
            }),
            "`labels` has 3 entries but `tokens` has 6 rows",
        ),
        (
            Box::new(|w| {
                let mut tokens = valid_tokens();
                tokens[[5, 1]] = -4;
                w.add_array("tokens", &tokens).unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
            }),
            "contains the negative id -4",
        ),
        (
            Box::new(|w| {
                let mut labels = valid_labels();
                labels[2] = f64::NAN;
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &labels).unwrap();
            }),
            "array `labels` contains the non-finite value NaN",
        ),
        (
            Box::new(|w| {
                let mut labels = valid_labels();
                labels[4] = 0.5;
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &labels).unwrap();
            }),
            "label of sample 4 is 0.5; labels must be +1 or -1",
        ),
        (
            Box::new(|w| {
                let mut labels = valid_labels();
                labels[3] = 1.0;
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &labels).unwrap();
            }),
            "label of sample 3 is 1 but its tokens put it in group I2",
        ),
        (
            Box::new(|w| {
                let mut tokens = valid_tokens();
                tokens[[5, 0]] = 13;
                w.add_array("tokens", &tokens).unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
            }),
            "sample 5 does not contain the common token",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
                w.add_array("d", &Array0::from_elem((), 5i64)).unwrap();
            }),
            "the vocabulary size d = 5 is smaller than the largest token id",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
                w.add_array("test_tokens", &Array2::<i64>::zeros((0, 4)))
                    .unwrap();
                w.add_array("test_labels", &Array1::<f64>::zeros(0))
                    .unwrap();
            }),
            "`test_labels` is empty",
        ),
        (
            Box::new(|w| {
                w.add_array("tokens", &valid_tokens()).unwrap();
                w.add_array("labels", &valid_labels()).unwrap();
                w.add_array("test_tokens", &array![[0i64, 1, 2]]).unwrap();
                w.add_array("test_labels", &array![1.0]).unwrap();
            }),
            "`test_tokens` rows have length 3 but `tokens` rows have 4",
        ),
    ];
    for (write, expected) in cases {
        assert_contains(&dataset_error(write), expected);
    }
}

#[test]
fn dataset_size_must_match_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    let mut writer = NpzWriter::new(std::fs::File::create(&path).unwrap());
    writer.add_array("tokens", &valid_tokens()).unwrap();
    writer.add_array("labels", &valid_labels()).unwrap();
    writer.finish().unwrap();
    let error = experiment::prepare(&dataset_config(&path, 12))
        .err()
        .unwrap()
        .to_string();
    assert_contains(
        &error,
        "has 6 training samples but task.n = 12; set task.n = 6",
    );
}

/// Returns the bytes of an npy file of int64 zeros whose header declares `shape` but whose
/// data holds only `stored` entries.
fn npy_with_shape(shape: &str, stored: usize) -> Vec<u8> {
    let mut text = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 8 * stored));
    bytes
}

/// Writes a dataset file whose `tokens` header declares `shape` over 24 stored entries, and
/// returns the error of preparing a run from it.
fn tokens_shape_error(shape: &str) -> String {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("tokens.npy", stored).unwrap();
    zip.write_all(&npy_with_shape(shape, 24)).unwrap();
    zip.start_file("labels.npy", stored).unwrap();
    zip.write_all(&npy_with_shape("(6,)", 6)).unwrap();
    zip.finish().unwrap();
    experiment::prepare(&dataset_config(&path, 6))
        .err()
        .unwrap()
        .to_string()
}

#[test]
fn oversized_npy_header_rejected() {
    // A header that declares 10^15 rows once made the reader allocate 40 PB and abort.
    let error = tokens_shape_error("(1000000000000000, 4)");
    assert_contains(
        &error,
        "array `tokens` declares shape [1000000000000000, 4] of 8-byte entries",
    );
    assert_contains(&error, "stores only 192 bytes of data");

    // Found by the .npz fuzzer: the reader evaluates Python literals, so this sum was read
    // as 287455200 rows.
    let error = tokens_shape_error("(15004+0287440196, 4)");
    assert_contains(
        &error,
        "array `tokens` has the shape `(15004+0287440196, 4)` in its header",
    );
}

#[test]
fn corrupt_or_missing_files_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.npz");
    let error = experiment::prepare(&dataset_config(&missing, 6))
        .err()
        .unwrap()
        .to_string();
    assert_contains(&error, "missing.npz not found; check the path");

    let garbage = dir.path().join("garbage.npz");
    std::fs::write(&garbage, b"this is not a zip archive").unwrap();
    let error = experiment::prepare(&dataset_config(&garbage, 6))
        .err()
        .unwrap()
        .to_string();
    assert_contains(&error, "failed to read");
    assert_contains(&error, "as .npz");
}

/// Writes a weights file for d = 20, m = 8, m1 = 6 after `edit` changes the arrays, and
/// returns the error of preparing a run from it.
fn weights_error(
    edit: impl FnOnce(&mut Vec<(&'static str, Array2<f64>)>, &mut Array1<f64>),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.npz");
    let mut matrices = vec![
        ("W", Array2::from_elem((6, 8), 0.1)),
        ("W_V", Array2::from_elem((8, 20), 0.1)),
        ("W_K", Array2::from_elem((8, 20), 0.1)),
        ("W_Q", Array2::from_elem((8, 20), 0.1)),
    ];
    let mut a = array![1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
    edit(&mut matrices, &mut a);
    let mut writer = NpzWriter::new(std::fs::File::create(&path).unwrap());
    for (name, matrix) in &matrices {
        writer.add_array(*name, matrix).unwrap();
    }
    writer.add_array("a", &a).unwrap();
    writer.finish().unwrap();
    let text = BASE.replace(
        "sigma1 = 0.1",
        &format!("sigma1 = 0.1\nweights = {:?}", path.to_str().unwrap()),
    );
    match experiment::prepare(&Config::from_toml(&text).unwrap()) {
        Ok(_) => "accepted".to_string(),
        Err(error) => error.to_string(),
    }
}

#[test]
fn weights_file_errors_name_the_problem() {
    assert_eq!(weights_error(|_, _| {}), "accepted");
    let cases: Vec<(EditWeights, &str)> = vec![
        (
            Box::new(|m, _| m[1].1 = Array2::from_elem((8, 19), 0.1)),
            "W_V has shape (8, 19)",
        ),
        (
            Box::new(|m, _| m[0].1 = Array2::from_elem((6, 9), 0.1)),
            "W_V has shape (8, 20) but W is (6, 9)",
        ),
        (
            Box::new(|_, a| *a = array![1.0, -1.0]),
            "a has length 2 but W has m1 = 6 rows",
        ),
        (
            Box::new(|_, a| a[3] = 0.0),
            "a contains 0; every entry of a must be +1 or -1",
        ),
        (
            Box::new(|m, _| m[2].1[[1, 2]] = f64::INFINITY),
            "array `W_K` contains the non-finite value inf",
        ),
        (
            Box::new(|m, _| {
                m.remove(3);
            }),
            "array `W_Q` is missing",
        ),
        (
            Box::new(|m, _| {
                m[0].1 = Array2::from_elem((6, 7), 0.1);
                for entry in m.iter_mut().skip(1) {
                    entry.1 = Array2::from_elem((7, 20), 0.1);
                }
            }),
            "has m = 7, m1 = 6 but the config has model.m = 8",
        ),
    ];
    for (edit, expected) in cases {
        assert_contains(&weights_error(edit), expected);
    }
}

#[test]
fn descent_without_steps_rejected() {
    // t_end / eta rounds to 0 steps, so the run would end at t = 0 and look finished.
    let text = with_value("train", "eta", "1e4").replace("max_steps = 100", "t_end = 1000");
    let message = config_error(&text);
    assert_contains(
        &message,
        "train.t_end = 1000 is less than half of train.eta = 10000",
    );
    assert_contains(&message, "raise t_end or lower eta");
}
