//! Error type of the library. Normal ends of a run are not errors; see `run::StopReason`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An input file (dataset or initial weights) has the wrong shape, type or values.
    #[error("invalid input data: {0}")]
    InvalidData(String),

    /// The state or the loss stopped being finite.
    #[error(
        "non-finite {quantity} at t = {time:e}: {hint}; the trajectory up to the last record is kept"
    )]
    NonFinite {
        quantity: String,
        time: f64,
        hint: String,
    },

    /// The ODE solver gave up.
    #[error("gradient-flow integration failed at t = {time:e}: {reason}")]
    Integration { time: f64, reason: String },

    /// The message includes the I/O error, which is therefore not also exposed as the
    /// `source()`: a chain printer such as anyhow's `{:#}` would repeat it.
    #[error("failed to read or write {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("failed to read {path} as .npz: {reason}")]
    Npz { path: PathBuf, reason: String },
}

impl Error {
    pub fn config(message: impl Into<String>) -> Error {
        Error::Config(message.into())
    }

    pub fn invalid_data(message: impl Into<String>) -> Error {
        Error::InvalidData(message.into())
    }

    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
