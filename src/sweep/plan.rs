//! Sweep files and the list of runs they expand to.
//!
//! A sweep file contains a base config and the values to vary:
//!
//! ```toml
//! base = "theory.toml"      # a run config, relative to this file; or an inline [base] table
//!
//! [grid]                    # cartesian product of every listed key
//! seed = [0, 1, 2, 3]
//! "model.m" = [64, 256, 1024]
//!
//! [[runs]]                  # explicit list; each entry is combined with every grid point
//! "model.m1" = 16
//! "task.L" = 4
//! ```
//!
//! Keys are dotted paths into the run config (`seed`, `model.m`, `model.m1`, `task.L`,
//! `task.n`, `init.c0`, `init.c1`, `init.sigma0`, `init.sigma1`, `train.engine`,
//! `train.integrator`, or any other key of the schema); nested tables such as
//! `[grid.model]` work too. Every run is validated as a full config before anything starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::config::Config;
use crate::error::Error;
use crate::experiment::config_hash;

/// One run of a sweep: its folder name, the values it overrides and its full config.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Position in the full run list, before sharding.
    pub index: usize,
    /// Folder name under `runs/`, such as `m=1024_seed=3`.
    pub name: String,
    /// Dotted config paths and the values set for this run, sorted by path.
    pub overrides: Vec<(String, Value)>,
    pub config: Config,
}

impl PlannedRun {
    pub fn config_hash(&self) -> String {
        config_hash(&self.config)
    }
}

/// A parsed sweep file: the base config as a TOML table plus the overrides of every run.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    base: Table,
    /// Folder that relative paths of the base config (dataset, weights) start from.
    base_dir: PathBuf,
    /// Grid keys with their values, in path order.
    grid: Vec<(String, Vec<Value>)>,
    /// Explicit entries; empty when the file has no `[[runs]]`.
    list: Vec<Vec<(String, Value)>>,
}

impl SweepSpec {
    /// Reads a sweep file; a base given as a path is read relative to the sweep file.
    pub fn from_file(path: &Path) -> Result<SweepSpec, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        SweepSpec::from_toml(&text, dir)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), plain(&e))))
    }

    /// Parses sweep-file text; `dir` is the folder that a relative `base` path starts from.
    pub fn from_toml(text: &str, dir: &Path) -> Result<SweepSpec, Error> {
        let mut table: Table = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        for key in table.keys() {
            if !["base", "grid", "runs"].contains(&key.as_str()) {
                return Err(Error::config(format!(
                    "unknown top-level key `{key}` in the sweep file; the keys are base, grid \
                     and runs"
                )));
            }
        }

        let (base, base_dir) = match table.remove("base") {
            Some(Value::String(file)) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let base: Table = toml::from_str(&text)
                    .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
                let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                (base, base_dir)
            }
            Some(Value::Table(base)) => (base, dir.to_path_buf()),
            Some(other) => {
                return Err(Error::config(format!(
                    "base must be a path to a run config or a [base] table, not a {}",
                    other.type_str()
                )));
            }
            None => {
                return Err(Error::config(
                    "base is missing; set base = \"run-config.toml\" or add a [base] table",
                ));
            }
        };

        let grid = match table.remove("grid") {
            Some(Value::Table(grid)) => grid_axes(&grid)?,
            Some(other) => {
                return Err(Error::config(format!(
                    "grid must be a table of lists, not a {}",
                    other.type_str()
                )));
            }
            None => Vec::new(),
        };
        let list = match table.remove("runs") {
            Some(Value::Array(entries)) => entries
                .iter()
                .enumerate()
                .map(|(i, entry)| list_entry(i, entry))
                .collect::<Result<Vec<_>, Error>>()?,
            Some(other) => {
                return Err(Error::config(format!(
                    "runs must be an array of tables ([[runs]]), not a {}",
                    other.type_str()
                )));
            }
            None => Vec::new(),
        };
        for (position, entry) in list.iter().enumerate() {
            if let Some((path, _)) = entry
                .iter()
                .find(|(path, _)| grid.iter().any(|g| &g.0 == path))
            {
                return Err(Error::config(format!(
                    "runs[{position}] sets {path}, which the grid varies too; set it in one place"
                )));
            }
        }
        Ok(SweepSpec {
            base,
            base_dir,
            grid,
            list,
        })
    }

    /// Expands the grid and the list into runs, each validated as a full config.
    ///
    /// Order: explicit entries outermost, then the grid keys in path order, the last key
    /// varying fastest. The order fixes the shard slices, so it never depends on the machine.
    pub fn runs(&self) -> Result<Vec<PlannedRun>, Error> {
        let combinations = self.combinations();
        let labels = key_labels(combinations.iter().flatten().map(|(path, _)| path.as_str()));

        let mut runs = Vec::with_capacity(combinations.len());
        let mut seen = BTreeMap::new();
        for (index, mut overrides) in combinations.into_iter().enumerate() {
            overrides.sort_by(|a, b| a.0.cmp(&b.0));
            let name = run_name(&overrides, &labels);
            if let Some(earlier) = seen.insert(name.clone(), index) {
                return Err(Error::config(format!(
                    "runs {earlier} and {index} would both be named {name}; remove the repeated \
                     value from the grid or the list"
                )));
            }
            let config = self
                .config_for(&overrides)
                .map_err(|e| Error::config(format!("run {name}: {}", plain(&e))))?;
            runs.push(PlannedRun {
                index,
                name,
                overrides,
                config,
            });
        }
        Ok(runs)
    }

    /// Override sets of all runs: the product of the list (or one empty entry) with the grid.
    fn combinations(&self) -> Vec<Vec<(String, Value)>> {
        let mut combinations: Vec<Vec<(String, Value)>> = if self.list.is_empty() {
            vec![Vec::new()]
        } else {
            self.list.clone()
        };
        for (path, values) in &self.grid {
            combinations = combinations
                .iter()
                .flat_map(|partial| {
                    values.iter().map(move |value| {
                        let mut next = partial.clone();
                        next.push((path.clone(), value.clone()));
                        next
                    })
                })
                .collect();
        }
        combinations
    }

    fn config_for(&self, overrides: &[(String, Value)]) -> Result<Config, Error> {
        let mut table = self.base.clone();
        for (path, value) in overrides {
            set_path(&mut table, path, value.clone())?;
        }
        let text = toml::to_string(&table).map_err(|e| Error::config(e.to_string()))?;
        let mut config = Config::from_toml(&text)?;
        for file in [&mut config.task.dataset, &mut config.init.weights]
            .into_iter()
            .flatten()
        {
            // Absolute, so that the config saved in each run folder still finds the file
            // from there (for `--resume` and `attnflow check`).
            let joined = self.base_dir.join(&*file);
            *file = std::path::absolute(&joined).map_err(|e| Error::io(&joined, e))?;
        }
        Ok(config)
    }
}

/// Entry of `plan.json`: enough to match a run folder to its place in the sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub index: usize,
    pub name: String,
    pub config_hash: String,
}

/// Contents of `plan.json`, written by every shard so that `merge` can check that shard
/// folders come from one sweep and put the rows back in sweep order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    pub runs: Vec<PlanEntry>,
}

impl PlanFile {
    pub fn new(runs: &[PlannedRun]) -> PlanFile {
        PlanFile {
            runs: runs
                .iter()
                .map(|run| PlanEntry {
                    index: run.index,
                    name: run.name.clone(),
                    config_hash: run.config_hash(),
                })
                .collect(),
        }
    }
}

/// Message of an error without the "invalid configuration: " prefix, for wrapping.
fn plain(error: &Error) -> String {
    match error {
        Error::Config(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Flattens the grid table into (dotted path, values), rejecting non-list leaves.
fn grid_axes(grid: &Table) -> Result<Vec<(String, Vec<Value>)>, Error> {
    let mut axes = Vec::new();
    for (path, value) in flatten(grid, "") {
        match value {
            Value::Array(values) if !values.is_empty() => axes.push((path, values)),
            Value::Array(_) => {
                return Err(Error::config(format!(
                    "grid.{path} is an empty list; give at least one value or remove the key"
                )));
            }
            other => {
                return Err(Error::config(format!(
                    "grid.{path} = {other} is not a list; write {path} = [{other}] or move it \
                     into the base config"
                )));
            }
        }
    }
    axes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(axes)
}

fn list_entry(position: usize, entry: &Value) -> Result<Vec<(String, Value)>, Error> {
    let Value::Table(table) = entry else {
        return Err(Error::config(format!(
            "runs[{position}] must be a table of config keys, not a {}",
            entry.type_str()
        )));
    };
    Ok(flatten(table, ""))
}

/// Leaves of a table as (dotted path, value). Quoted dotted keys ("model.m") and nested
/// tables give the same path.
fn flatten(table: &Table, prefix: &str) -> Vec<(String, Value)> {
    let mut leaves = Vec::new();
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) => leaves.extend(flatten(inner, &path)),
            other => leaves.push((path, other.clone())),
        }
    }
    leaves
}

/// Sets `path` (dotted) in `table`, creating the intermediate tables.
fn set_path(table: &mut Table, path: &str, value: Value) -> Result<(), Error> {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap_or_default();
    let mut current = table;
    for key in keys {
        let entry = current
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            _ => {
                return Err(Error::config(format!(
                    "cannot set {path}: {key} is a value in the base config, not a table"
                )));
            }
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// Short label of each varied path: its last segment (`model.m` -> `m`), or the whole path
/// when two varied paths share a last segment.
fn key_labels<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let paths: BTreeSet<&str> = paths.collect();
    let mut by_last: BTreeMap<&str, usize> = BTreeMap::new();
    for path in &paths {
        *by_last.entry(last_segment(path)).or_default() += 1;
    }
    paths
        .iter()
        .map(|path| {
            let last = last_segment(path);
            let label = if by_last[last] > 1 { path } else { last };
            (path.to_string(), label.to_string())
        })
        .collect()
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Folder name of a run: `label=value` pairs joined by `_`, or `base` when nothing varies.
fn run_name(overrides: &[(String, Value)], labels: &BTreeMap<String, String>) -> String {
    if overrides.is_empty() {
        return "base".to_string();
    }
    let parts: Vec<String> = overrides
        .iter()
        .map(|(path, value)| format!("{}={}", labels[path], value_text(value)))
        .collect();
    sanitize(&parts.join("_"))
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Float(x) => format!("{x}"),
        other => other.to_string(),
    }
}

/// Keeps letters, digits and `._=+-`; anything else becomes `-`, so names are safe folder
/// names on every file system.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [base]
        seed = 0
        [base.task]
        n = 6
        L = 3
        fillers = "distinct"
        n_test = 6
        [base.model]
        m = 16
        m1 = 4
        [base.init]
        scheme = "theory"
        c0 = 0.1
        c1 = 0.1
        reduced_from = "wishart"
        [base.train]
        engine = "reduced"
        integrator = "dopri5"
        t_end = 10.0
    "#;

    fn spec(extra: &str) -> Result<SweepSpec, Error> {
        SweepSpec::from_toml(&format!("{BASE}\n{extra}"), Path::new("."))
    }

    #[test]
    fn grid_is_cartesian_product() {
        let runs = spec("[grid]\nseed = [1, 2, 3]\n\"model.m\" = [32, 64]")
            .unwrap()
            .runs()
            .unwrap();
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[0].name, "m=32_seed=1");
        assert_eq!(runs[1].name, "m=32_seed=2");
        assert_eq!(runs[5].name, "m=64_seed=3");
        assert_eq!(runs[5].config.model.m, 64);
        assert_eq!(runs[5].config.seed, 3);
    }

    #[test]
    fn nested_grid_table_matches_dotted_key() {
        let nested = spec("[grid.model]\nm = [32, 64]").unwrap().runs().unwrap();
        let dotted = spec("[grid]\n\"model.m\" = [32, 64]")
            .unwrap()
            .runs()
            .unwrap();
        let names = |runs: &[PlannedRun]| runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&nested), names(&dotted));
    }

    #[test]
    fn list_combines_with_grid() {
        let text = "[grid]\nseed = [0, 1]\n\
                    [[runs]]\n\"model.m1\" = 2\n\"task.L\" = 4\n\
                    [[runs]]\n\"model.m1\" = 8\n";
        let runs = spec(text).unwrap().runs().unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "m1=2_seed=0_L=4",
                "m1=2_seed=1_L=4",
                "m1=8_seed=0",
                "m1=8_seed=1"
            ]
        );
        assert_eq!(runs[1].config.task.seq_len, 4);
        assert_eq!(runs[3].config.task.seq_len, 3);
    }

    #[test]
    fn key_in_grid_and_list_rejected() {
        let text = "[grid]\nseed = [0, 1]\n[[runs]]\nseed = 3\n";
        let err = spec(text).unwrap_err().to_string();
        assert!(
            err.contains("runs[0] sets seed, which the grid varies too"),
            "{err}"
        );
    }

    #[test]
    fn shared_last_segment_uses_full_path() {
        let text = "[grid]\n\"init.sigma0\" = [0.01]\n\"init.scheme\" = [\"gaussian\"]\n\
                    \"init.sigma1\" = [0.02]\n\"init.c0\" = []";
        let err = spec(text).unwrap_err().to_string();
        assert!(err.contains("grid.init.c0 is an empty list"), "{err}");

        let labels = key_labels(["a.x", "b.x", "c.y"].into_iter());
        assert_eq!(labels["a.x"], "a.x");
        assert_eq!(labels["c.y"], "y");
    }

    #[test]
    fn invalid_run_names_the_run() {
        let err = spec("[grid]\n\"model.m\" = [32, 0]")
            .unwrap()
            .runs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("run m=0"), "{err}");
        assert!(err.contains("model.m = 0"), "{err}");
    }

    #[test]
    fn unknown_config_key_rejected() {
        let err = spec("[grid]\n\"model.width\" = [32]")
            .unwrap()
            .runs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("width"), "{err}");
    }

    #[test]
    fn repeated_value_rejected() {
        let err = spec("[grid]\nseed = [1, 1]")
            .unwrap()
            .runs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("both be named seed=1"), "{err}");
    }

    #[test]
    fn no_variation_gives_one_base_run() {
        let runs = spec("").unwrap().runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].name, "base");
    }

    #[test]
    fn float_and_string_names_are_readable() {
        let text = "[grid]\n\"init.c0\" = [0.05]\n\"train.integrator\" = [\"dop853\"]";
        let runs = spec(text).unwrap().runs().unwrap();
        assert_eq!(runs[0].name, "c0=0.05_integrator=dop853");
    }
}
