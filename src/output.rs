//! Files of a run folder, written so that a crash never leaves a half-written file.
//!
//! - `config.toml`: the resolved config;
//! - `trajectory.csv`: one row per output time (see [`Observation`] for the columns);
//! - `summary.json`: how the run ended and its main numbers;
//! - `checkpoint.json`: the state to resume from;
//! - `dataset.npz`, `init_weights.npz`: the exact inputs, for replay in other tools.
//!
//! Whole files are written to a temporary name and renamed into place. The trajectory is
//! appended row by row and flushed after each row; on resume it is cut back to the rows that
//! the checkpoint counts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;
use crate::error::Error;
use crate::observables::Observation;
use crate::run::{RunState, Sink};

pub const TRAJECTORY: &str = "trajectory.csv";
pub const SUMMARY: &str = "summary.json";
pub const CHECKPOINT: &str = "checkpoint.json";
pub const CONFIG: &str = "config.toml";
pub const DATASET: &str = "dataset.npz";
pub const INIT_WEIGHTS: &str = "init_weights.npz";

/// A file written under a temporary name and renamed into place by [`AtomicFile::commit`].
pub struct AtomicFile {
    temp: PathBuf,
    target: PathBuf,
    file: File,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<AtomicFile, Error> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = target.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        Ok(AtomicFile {
            temp,
            target: target.to_path_buf(),
            file,
        })
    }

    /// Opens a second handle to the temporary file, for writers that take ownership.
    pub fn handle(&self) -> Result<File, Error> {
        self.file.try_clone().map_err(|e| Error::io(&self.temp, e))
    }

    /// Flushes to disk and renames over the target, then flushes the folder so that the
    /// rename itself survives a power loss.
    pub fn commit(self) -> Result<(), Error> {
        self.file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        let folder = match self.target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(folder)
            .and_then(|handle| handle.sync_all())
            .map_err(|e| Error::io(folder, e))
    }
}

impl Drop for AtomicFile {
    /// Removes the temporary file of a write that failed before [`AtomicFile::commit`]; after
    /// a commit the file no longer exists under that name and nothing happens.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let mut file = AtomicFile::create(path)?;
    file.file
        .write_all(contents)
        .map_err(|e| Error::io(path, e))?;
    file.commit()
}

/// Writes `value` as pretty JSON with a final newline to `path` atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    stream_json(path, |writer| serde_json::to_writer_pretty(writer, value))
}

/// Writes `value` as JSON on one line to `path` atomically, for files that only programs
/// read. A checkpoint contains the whole state, which pretty printing would spread over one
/// line per number.
pub fn write_json_compact(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    stream_json(path, |writer| serde_json::to_writer(writer, value))
}

/// Streams the JSON that `write` produces into a temporary file through a buffer, adds a
/// newline, and renames the file over `path`.
fn stream_json(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> serde_json::Result<()>,
) -> Result<(), Error> {
    let file = AtomicFile::create(path)?;
    let mut writer = BufWriter::with_capacity(1 << 16, &file.file);
    let io_error = |e: std::io::Error| Error::io(path, e);
    match write(&mut writer) {
        Ok(()) => {}
        Err(e) if e.is_io() => return Err(io_error(e.into())),
        Err(e) => panic!("output types always serialize: {e}"),
    }
    writer.write_all(b"\n").map_err(io_error)?;
    writer.flush().map_err(io_error)?;
    drop(writer);
    file.commit()
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_data(format!("{} is not valid: {e}", path.display())))
}

/// Version of the parameter engine's state layout that checkpoints of this build store:
/// `[z, W_V^T, W_K^T, W_Q^T]`, with the head rebuilt as W = W(0) + a z^T. Layout 1 stored
/// the head W itself in place of z.
pub const PARAMETER_STATE_LAYOUT: u32 = 2;

/// A checkpoint: the loop state plus the hash of the config it belongs to.
#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    pub config_hash: String,
    /// [`PARAMETER_STATE_LAYOUT`] of the build that wrote the checkpoint. Checkpoints
    /// written before the field existed read as layout 1.
    #[serde(default = "first_state_layout")]
    pub state_layout: u32,
    pub wall_seconds: f64,
    pub state: RunState,
}

fn first_state_layout() -> u32 {
    1
}

impl Checkpoint {
    /// Checks that the state was stored in the layout that `engine` reads now.
    ///
    /// The reduced engine's layout has not changed, so it reads every layout. A
    /// parameter-engine state of layout 1 has the same length as layout 2 when m1 = 1, so
    /// the length check alone would not catch it.
    pub fn check_layout(&self, engine: EngineKind, path: &Path) -> Result<(), Error> {
        if self.state_layout > PARAMETER_STATE_LAYOUT {
            return Err(Error::invalid_data(format!(
                "{} has state layout {}, newer than the layout {PARAMETER_STATE_LAYOUT} this \
                 attnflow reads; use the attnflow that wrote it",
                path.display(),
                self.state_layout
            )));
        }
        if engine == EngineKind::Parameter && self.state_layout != PARAMETER_STATE_LAYOUT {
            return Err(Error::invalid_data(format!(
                "{} was written by an older attnflow that stored the parameter engine's head \
                 W in the state (layout {}); this attnflow reads layout \
                 {PARAMETER_STATE_LAYOUT}, so start the run again without --resume",
                path.display(),
                self.state_layout
            )));
        }
        Ok(())
    }
}

/// The [`Sink`] that writes a run folder and shows progress on a terminal.
pub struct RunFolder {
    dir: PathBuf,
    trajectory: File,
    config_hash: String,
    checkpoint_seconds: f64,
    last_checkpoint: Instant,
    started: Instant,
    /// Wall-clock seconds of earlier sessions of a resumed run.
    pub earlier_seconds: f64,
    progress: ProgressBar,
    t_end: f64,
}

impl RunFolder {
    /// Opens the trajectory of `dir` for appending, keeping its header and first `rows` rows
    /// (a fresh run passes 0 and gets a new file with a header).
    pub fn open(
        dir: &Path,
        rows: usize,
        config_hash: String,
        checkpoint_seconds: f64,
        t_end: f64,
        show_progress: bool,
    ) -> Result<RunFolder, Error> {
        let path = dir.join(TRAJECTORY);
        if rows == 0 {
            let header = header_line();
            write_atomic(&path, header.as_bytes())?;
        } else {
            truncate_rows(&path, rows)?;
        }
        let trajectory = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let progress = if show_progress {
            let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] t = {msg} (bar on a log scale of t)",
                )
                .expect("template is valid")
                .progress_chars("=> "),
            );
            bar.set_message("0");
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            trajectory,
            config_hash,
            checkpoint_seconds,
            last_checkpoint: Instant::now(),
            started: Instant::now(),
            earlier_seconds: 0.0,
            progress,
            t_end,
        })
    }

    /// Wall-clock seconds of this run, including earlier sessions.
    pub fn wall_seconds(&self) -> f64 {
        self.earlier_seconds + self.started.elapsed().as_secs_f64()
    }

    pub fn finish_progress(&self) {
        self.progress.finish_and_clear();
    }
}

impl Sink for RunFolder {
    fn record(&mut self, row: &Observation, _state: &RunState) -> Result<(), Error> {
        let path = self.dir.join(TRAJECTORY);
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        writer
            .serialize(row)
            .expect("an observation always serializes");
        let bytes = writer.into_inner().expect("writing to memory cannot fail");
        self.trajectory
            .write_all(&bytes)
            .and_then(|_| self.trajectory.flush())
            .map_err(|e| Error::io(&path, e))
    }

    fn checkpoint(&mut self, state: &RunState, force: bool) -> Result<(), Error> {
        if !force && self.last_checkpoint.elapsed().as_secs_f64() < self.checkpoint_seconds {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            config_hash: self.config_hash.clone(),
            state_layout: PARAMETER_STATE_LAYOUT,
            wall_seconds: self.wall_seconds(),
            state: state.clone(),
        };
        write_json_compact(&self.dir.join(CHECKPOINT), &checkpoint)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn progress(&mut self, state: &RunState) {
        if self.progress.is_hidden() {
            return;
        }
        // Position on a log scale of t from 1e-6 t_end to t_end.
        let floor = self.t_end * 1e-6;
        let fraction =
            ((state.t.max(floor) / floor).ln() / (self.t_end / floor).ln()).clamp(0.0, 1.0);
        self.progress.set_position((fraction * 1000.0) as u64);
        self.progress.set_message(format!("{:.4e}", state.t));
    }
}

/// Builds the CSV header line of `trajectory.csv`.
pub fn header_line() -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let example = Observation::default();
    writer.serialize(&example).expect("serializes");
    let text = String::from_utf8(writer.into_inner().expect("in memory")).expect("utf-8");
    text.lines().next().expect("header line").to_string() + "\n"
}

/// Keeps the header and the first `rows` rows of a trajectory file.
fn truncate_rows(path: &Path, rows: usize) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        if i > rows {
            break;
        }
        let line = line.map_err(|e| Error::io(path, e))?;
        kept.push_str(&line);
        kept.push('\n');
    }
    let present = kept.lines().count().saturating_sub(1);
    if present < rows {
        return Err(Error::invalid_data(format!(
            "{} has {present} rows but the checkpoint expects {rows}; the run folder is \
             damaged, start the run again without --resume",
            path.display()
        )));
    }
    write_atomic(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_atomic(&path, b"old contents").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names_in(dir.path()), vec!["summary.json"]);
    }

    #[test]
    fn checkpoint_floats_round_trip_exactly() {
        // Resume equality needs every f64 of the state back bit for bit, which serde_json
        // guarantees only with its `float_roundtrip` feature.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let mut y: Vec<f64> = (0..20_000)
            .map(|_| f64::from_bits(rng.random::<u64>()))
            .filter(|v| v.is_finite())
            .collect();
        y.extend([f64::MIN_POSITIVE, 5e-324, f64::MAX, -0.0, 0.1 + 0.2]);
        let mut state = RunState::new(y.clone());
        state.t = 0.1 + 0.7;
        state.step_hint = 1.0 / 3.0;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT);
        write_json(&path, &state).unwrap();
        let back: RunState = read_json(&path).unwrap();
        assert_eq!(back.t.to_bits(), state.t.to_bits());
        assert_eq!(back.step_hint.to_bits(), state.step_hint.to_bits());
        for (i, (a, b)) in y.iter().zip(&back.y).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "entry {i}: {a:e} became {b:e}");
        }
    }

    #[test]
    fn uncommitted_write_leaves_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        write_atomic(&path, b"saved").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.file.write_all(b"half of a new checkpoint").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"saved");
        assert_eq!(names_in(dir.path()), vec!["checkpoint.json"]);
    }
}
