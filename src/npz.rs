//! Reading and writing datasets and weights in NumPy's `.npz` format.
//!
//! Dataset file: `tokens` (integer, shape (n, L), 0-based ids: 0 and 1 are the targets, 2 the
//! common token, 3.. fillers) and `labels` (float64, shape (n,), values +1/-1); optionally
//! `test_tokens`, `test_labels` for the held-out set and `d` (integer scalar) for the
//! vocabulary size. Weights file: `W` (m1, m), `W_V`, `W_K`, `W_Q` (m, d) and `a` (m1), all
//! float64.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use ndarray::{Array0, Array1, Array2, ArrayD, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};

use crate::error::Error;
use crate::model::Params;
use crate::task::{Dataset, TaskData};

mod header;

type Reader = NpzReader<BufReader<File>>;

fn open(path: &Path) -> Result<Reader, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    NpzReader::new(BufReader::new(file)).map_err(|e| npz_error(path, e))
}

fn npz_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Npz {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn names(reader: &mut Reader, path: &Path) -> Result<Vec<String>, Error> {
    reader.names().map_err(|e| npz_error(path, e))
}

/// Reads a float64 array of any shape and checks that every entry is finite.
fn read_f64(reader: &mut Reader, path: &Path, name: &str) -> Result<ArrayD<f64>, Error> {
    header::check_declared_size(path, name).map_err(|reason| npz_error(path, reason))?;
    let array: ArrayD<f64> = reader.by_name(name).map_err(|e| match e {
        ReadNpzError::Zip(_) => npz_error(path, format!("array `{name}` is missing")),
        other => npz_error(
            path,
            format!(
                "array `{name}` could not be read as float64 ({other}); save it with dtype float64"
            ),
        ),
    })?;
    if let Some(bad) = array.iter().find(|v| !v.is_finite()) {
        return Err(npz_error(
            path,
            format!("array `{name}` contains the non-finite value {bad}"),
        ));
    }
    Ok(array)
}

/// Reads an integer array of any signed or unsigned width as non-negative ids.
fn read_ids(reader: &mut Reader, path: &Path, name: &str) -> Result<ArrayD<usize>, Error> {
    header::check_declared_size(path, name).map_err(|reason| npz_error(path, reason))?;
    macro_rules! try_type {
        ($t:ty) => {
            if let Ok(array) = reader.by_name::<ndarray::OwnedRepr<$t>, ndarray::IxDyn>(name) {
                let mut ids = Vec::with_capacity(array.len());
                for &v in array.iter() {
                    let id = usize::try_from(v).map_err(|_| {
                        npz_error(path, format!("array `{name}` contains the negative id {v}"))
                    })?;
                    ids.push(id);
                }
                return ArrayD::from_shape_vec(array.raw_dim(), ids)
                    .map_err(|e| npz_error(path, e));
            }
        };
    }
    try_type!(i64);
    try_type!(i32);
    try_type!(u64);
    try_type!(u32);
    try_type!(i16);
    try_type!(u16);
    try_type!(i8);
    try_type!(u8);
    if names(reader, path)?.iter().any(|n| n == name) {
        Err(npz_error(
            path,
            format!("array `{name}` is not an integer array; save token ids with an integer dtype"),
        ))
    } else {
        Err(npz_error(path, format!("array `{name}` is missing")))
    }
}

fn to_matrix(array: ArrayD<f64>, path: &Path, name: &str) -> Result<Array2<f64>, Error> {
    let shape = array.shape().to_vec();
    array.into_dimensionality::<Ix2>().map_err(|_| {
        npz_error(
            path,
            format!("array `{name}` has shape {shape:?}; it must be 2-D"),
        )
    })
}

fn to_vector(array: ArrayD<f64>, path: &Path, name: &str) -> Result<Array1<f64>, Error> {
    let shape = array.shape().to_vec();
    array.into_dimensionality::<Ix1>().map_err(|_| {
        npz_error(
            path,
            format!("array `{name}` has shape {shape:?}; it must be 1-D"),
        )
    })
}

/// Token rows and labels of one set, checked for shape.
fn read_set(
    reader: &mut Reader,
    path: &Path,
    tokens_name: &str,
    labels_name: &str,
) -> Result<(Vec<usize>, Vec<f64>, usize), Error> {
    let tokens = read_ids(reader, path, tokens_name)?;
    if tokens.ndim() != 2 {
        return Err(npz_error(
            path,
            format!(
                "array `{tokens_name}` has shape {:?}; it must be (n, L)",
                tokens.shape()
            ),
        ));
    }
    let (n, seq_len) = (tokens.shape()[0], tokens.shape()[1]);
    let labels = to_vector(read_f64(reader, path, labels_name)?, path, labels_name)?;
    if labels.len() != n {
        return Err(npz_error(
            path,
            format!(
                "`{labels_name}` has {} entries but `{tokens_name}` has {n} rows",
                labels.len()
            ),
        ));
    }
    Ok((tokens.iter().copied().collect(), labels.to_vec(), seq_len))
}

/// Contents of a dataset file: the training set, the test set if present, and the declared
/// vocabulary size if present.
pub struct DatasetFile {
    pub train_tokens: Vec<usize>,
    pub train_labels: Vec<f64>,
    pub test: Option<(Vec<usize>, Vec<f64>)>,
    pub seq_len: usize,
    pub vocab_size: Option<usize>,
}

impl DatasetFile {
    /// Largest token id in either set, plus one.
    pub fn min_vocab_size(&self) -> usize {
        let test = self.test.iter().flat_map(|(tokens, _)| tokens.iter());
        self.train_tokens
            .iter()
            .chain(test)
            .max()
            .map_or(0, |&k| k + 1)
    }
}

/// Reads a dataset file; ids and labels are checked later by [`Dataset::new`].
pub fn read_dataset(path: &Path) -> Result<DatasetFile, Error> {
    let mut reader = open(path)?;
    let (train_tokens, train_labels, seq_len) = read_set(&mut reader, path, "tokens", "labels")?;
    let available = names(&mut reader, path)?;
    let test = if available.iter().any(|n| n == "test_tokens") {
        let (tokens, labels, test_len) = read_set(&mut reader, path, "test_tokens", "test_labels")?;
        if test_len != seq_len {
            return Err(npz_error(
                path,
                format!(
                    "`test_tokens` rows have length {test_len} but `tokens` rows have {seq_len}"
                ),
            ));
        }
        Some((tokens, labels))
    } else {
        None
    };
    let vocab_size = if available.iter().any(|n| n == "d") {
        let d = read_ids(&mut reader, path, "d")?;
        if d.len() != 1 {
            return Err(npz_error(path, "`d` must be a single integer"));
        }
        d.iter().next().copied()
    } else {
        None
    };
    Ok(DatasetFile {
        train_tokens,
        train_labels,
        test,
        seq_len,
        vocab_size,
    })
}

/// Writes the training and test sets and the vocabulary size.
pub fn write_dataset(path: &Path, data: &TaskData) -> Result<(), Error> {
    let file = crate::output::AtomicFile::create(path)?;
    let mut writer = NpzWriter::new(BufWriter::new(file.handle()?));
    let write = |writer: &mut NpzWriter<_>, prefix: &str, set: &Dataset| {
        let tokens =
            Array2::from_shape_fn((set.len(), set.seq_len), |(i, l)| set.sample(i)[l] as i64);
        let labels = Array1::from(set.labels.clone());
        writer.add_array(format!("{prefix}tokens"), &tokens)?;
        writer.add_array(format!("{prefix}labels"), &labels)
    };
    write(&mut writer, "", &data.train).map_err(|e| npz_error(path, e))?;
    write(&mut writer, "test_", &data.test).map_err(|e| npz_error(path, e))?;
    writer
        .add_array("d", &Array0::from_elem((), data.train.vocab_size as i64))
        .map_err(|e| npz_error(path, e))?;
    writer.finish().map_err(|e| npz_error(path, e))?;
    file.commit()
}

/// Reads initial weights; shapes are checked against each other and against `vocab_size`.
pub fn read_weights(path: &Path, vocab_size: usize) -> Result<Params, Error> {
    let mut reader = open(path)?;
    let mut matrix =
        |name: &str| read_f64(&mut reader, path, name).and_then(|a| to_matrix(a, path, name));
    let w = matrix("W")?;
    let w_v = matrix("W_V")?;
    let w_k = matrix("W_K")?;
    let w_q = matrix("W_Q")?;
    let a = to_vector(read_f64(&mut reader, path, "a")?, path, "a")?;
    let params = Params {
        w,
        w_v,
        w_k,
        w_q,
        a,
    };
    params
        .validate(vocab_size)
        .map_err(|e| npz_error(path, e))?;
    Ok(params)
}

/// Writes weights as float64 arrays with the shapes of the file format above.
pub fn write_weights(path: &Path, params: &Params) -> Result<(), Error> {
    let file = crate::output::AtomicFile::create(path)?;
    let mut writer = NpzWriter::new(BufWriter::new(file.handle()?));
    let result = (|| {
        writer.add_array("W", &params.w)?;
        writer.add_array("W_V", &params.w_v)?;
        writer.add_array("W_K", &params.w_k)?;
        writer.add_array("W_Q", &params.w_q)?;
        writer.add_array("a", &params.a)?;
        writer.finish().map(|_| ())
    })();
    result.map_err(|e| npz_error(path, e))?;
    file.commit()
}
