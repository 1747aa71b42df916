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
    #[error("{}", describe_io(path, cause))]
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

/// Message of [`Error::Io`]: a missing file is named as not found, since that is the usual
/// cause and the fix (check the path) differs from that of other failures.
fn describe_io(path: &std::path::Path, cause: &std::io::Error) -> String {
    match cause.kind() {
        std::io::ErrorKind::NotFound => {
            format!("{} not found; check the path ({cause})", path.display())
        }
        _ => format!("failed to read or write {}: {cause}", path.display()),
    }
}

/// Formats a number for a message without losing digits: plainly when its size lies in
/// [1e-4, 1e16), so that 0.5 and 1000 read as written, and in scientific notation outside,
/// so that 1e-300 does not print as 300 digits. NaN, the infinities and 0 print plainly.
pub fn format_value(value: f64) -> String {
    let size = value.abs();
    if size == 0.0 || !size.is_finite() || (1e-4..1e16).contains(&size) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_value;

    #[test]
    fn format_value_cases() {
        assert_eq!(format_value(-1.0), "-1");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.01), "0.01");
        assert_eq!(format_value(1e9), "1000000000");
        assert_eq!(format_value(1e-300), "1e-300");
        assert_eq!(format_value(-2.5e-7), "-2.5e-7");
        assert_eq!(format_value(3e20), "3e20");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-inf");
    }
}
