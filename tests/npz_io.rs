//! Dataset and weight files: round trips and the errors for malformed files.

mod common;

use std::fs::File;
use std::path::Path;

use attnflow::npz::{read_dataset, read_weights, write_dataset, write_weights};
use ndarray::{Array1, Array2};
use ndarray_npy::{NpzWriter, WriteNpyExt};

/// Writes `tokens` and `labels` arrays, of any element types, to `path`.
fn write_pair(path: &Path, tokens: &impl WriteNpyExt, labels: &impl WriteNpyExt) {
    let mut writer = NpzWriter::new(File::create(path).unwrap());
    writer.add_array("tokens", tokens).unwrap();
    writer.add_array("labels", labels).unwrap();
    writer.finish().unwrap();
}

#[test]
fn dataset_round_trip() {
    let data = common::data(common::DISTINCT, 41);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    write_dataset(&path, &data).unwrap();
    let file = read_dataset(&path).unwrap();
    assert_eq!(file.train_tokens, data.train.tokens);
    assert_eq!(file.train_labels, data.train.labels);
    assert_eq!(file.seq_len, data.train.seq_len);
    assert_eq!(file.vocab_size, Some(data.train.vocab_size));
    let (test_tokens, test_labels) = file.test.unwrap();
    assert_eq!(test_tokens, data.test.tokens);
    assert_eq!(test_labels, data.test.labels);
}

#[test]
fn weights_round_trip() {
    let sizes = common::SAMPLED;
    let data = common::data(sizes, 42);
    let params = common::params(&data, sizes, 0.3, 0.2, 42);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.npz");
    write_weights(&path, &params).unwrap();
    let read = read_weights(&path, sizes.d).unwrap();
    assert_eq!(read, params);
}

fn weights_error(mutate: impl Fn(&mut [Array2<f64>; 4], &mut Array1<f64>)) -> String {
    let sizes = common::SAMPLED;
    let data = common::data(sizes, 43);
    let p = common::params(&data, sizes, 0.3, 0.2, 43);
    let mut matrices = [p.w.clone(), p.w_v.clone(), p.w_k.clone(), p.w_q.clone()];
    let mut a = p.a.clone();
    mutate(&mut matrices, &mut a);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.npz");
    let mut writer = NpzWriter::new(File::create(&path).unwrap());
    for (name, matrix) in ["W", "W_V", "W_K", "W_Q"].iter().zip(&matrices) {
        writer.add_array(*name, matrix).unwrap();
    }
    writer.add_array("a", &a).unwrap();
    writer.finish().unwrap();
    read_weights(&path, sizes.d).unwrap_err().to_string()
}

#[test]
fn weights_wrong_shape_rejected() {
    let err = weights_error(|m, _| m[1] = Array2::zeros((7, 12)));
    assert!(err.contains("W_V has shape (7, 12)"), "{err}");
    assert!(err.contains("must be (7, 11)"), "{err}");
}

#[test]
fn weights_bad_signs_rejected() {
    let err = weights_error(|_, a| a[2] = 0.5);
    assert!(err.contains("a contains 0.5"), "{err}");
}

#[test]
fn weights_non_finite_rejected() {
    let err = weights_error(|m, _| m[3][[1, 2]] = f64::NAN);
    assert!(
        err.contains("`W_Q` contains the non-finite value NaN"),
        "{err}"
    );
}

fn dataset_error(tokens: Array2<i64>, labels: Array1<f64>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    write_pair(&path, &tokens, &labels);
    let file = match read_dataset(&path) {
        Ok(file) => file,
        Err(err) => return err.to_string(),
    };
    attnflow::task::Dataset::new(file.train_tokens, file.train_labels, file.seq_len, 6)
        .unwrap_err()
        .to_string()
}

#[test]
fn dataset_bad_label_rejected() {
    let tokens = Array2::from_shape_vec((2, 3), vec![0, 1, 2, 3, 2, 4]).unwrap();
    let err = dataset_error(tokens, Array1::from(vec![1.0, 0.0]));
    assert!(err.contains("label of sample 1 is 0"), "{err}");
}

#[test]
fn dataset_id_out_of_range_rejected() {
    let tokens = Array2::from_shape_vec((2, 3), vec![0, 1, 2, 9, 2, 4]).unwrap();
    let err = dataset_error(tokens, Array1::from(vec![1.0, -1.0]));
    assert!(err.contains("token id 9"), "{err}");
}

#[test]
fn dataset_negative_id_rejected() {
    let tokens = Array2::from_shape_vec((2, 3), vec![0, 1, 2, -1, 2, 4]).unwrap();
    let err = dataset_error(tokens, Array1::from(vec![1.0, -1.0]));
    assert!(err.contains("negative id -1"), "{err}");
}

#[test]
fn dataset_label_count_mismatch_rejected() {
    let tokens = Array2::from_shape_vec((2, 3), vec![0, 1, 2, 3, 2, 4]).unwrap();
    let err = dataset_error(tokens, Array1::from(vec![1.0]));
    assert!(
        err.contains("`labels` has 1 entries but `tokens` has 2 rows"),
        "{err}"
    );
}

#[test]
fn dataset_float_tokens_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.npz");
    let tokens = Array2::from_shape_vec((1, 3), vec![0.0, 1.0, 2.0]).unwrap();
    let labels = Array1::from(vec![1.0]);
    write_pair(&path, &tokens, &labels);
    let err = read_dataset(&path).err().unwrap().to_string();
    assert!(err.contains("not an integer array"), "{err}");
}
