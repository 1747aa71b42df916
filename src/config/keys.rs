//! The keys a config accepts, so that a misspelt or misplaced key is rejected with the
//! closest valid key named in the message.
//!
//! serde's `deny_unknown_fields` rejects the same keys, but its message lists every valid
//! key and cannot point to a key that belongs in another section.

use crate::error::Error;

/// Keys of the top level: `seed` and the section names.
const TOP_LEVEL: &[&str] = &["seed", "task", "model", "init", "train", "record"];

/// Keys of each section.
const SECTIONS: &[(&str, &[&str])] = &[
    ("task", &["n", "L", "d", "fillers", "n_test", "dataset"]),
    ("model", &["m", "m1"]),
    (
        "init",
        &[
            "scheme",
            "c0",
            "c1",
            "sigma0",
            "sigma1",
            "weights",
            "reduced_from",
        ],
    ),
    (
        "train",
        &[
            "engine",
            "integrator",
            "eta",
            "t_end",
            "max_steps",
            "target_loss",
            "rtol",
            "atol",
            "controller",
            "checkpoint_seconds",
        ],
    ),
    ("record", &["grid", "points", "t_first"]),
];

/// Smallest normalized Damerau-Levenshtein similarity at which a key is suggested.
const MIN_SIMILARITY: f64 = 0.5;

/// Checks every key of a parsed config against the known keys.
///
/// A value of the wrong type (a section given as a number, say) is left for serde to
/// report with its line and column.
pub fn check_keys(table: &toml::Table) -> Result<(), Error> {
    for (key, value) in table {
        if !TOP_LEVEL.contains(&key.as_str()) {
            return Err(unknown_key(key, None, TOP_LEVEL));
        }
        let (Some(section_keys), Some(section)) = (section_keys(key), value.as_table()) else {
            continue;
        };
        for inner in section.keys() {
            if !section_keys.contains(&inner.as_str()) {
                return Err(unknown_key(inner, Some(key), section_keys));
            }
        }
    }
    Ok(())
}

fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    SECTIONS
        .iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| *keys)
}

/// Builds the error for `key` found in `section` (None for the top level), whose valid
/// keys are `valid`.
fn unknown_key(key: &str, section: Option<&str>, valid: &[&str]) -> Error {
    let full = match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    };
    let hint = if let Some(home) = home_of(key, section) {
        format!("`{key}` belongs {home}; move it there")
    } else if let Some(closest) = closest(key, valid) {
        format!("did you mean `{closest}`?")
    } else {
        let place = section.map_or("at the top level".to_string(), |s| format!("in [{s}]"));
        format!("the valid keys {place} are {}", valid.join(", "))
    };
    Error::config(format!("unknown key `{full}`; {hint}"))
}

/// Finds where `key` is valid, if it is valid somewhere other than `section`.
fn home_of(key: &str, section: Option<&str>) -> Option<String> {
    if section.is_some() && TOP_LEVEL.contains(&key) {
        return Some("at the top level, before the first section".to_string());
    }
    SECTIONS
        .iter()
        .find(|(name, keys)| Some(*name) != section && keys.contains(&key))
        .map(|(name, _)| format!("in [{name}]"))
}

/// Finds the valid key most similar to `key`, ignoring case, if any is similar enough.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let key = key.to_lowercase();
    valid
        .iter()
        .map(|&candidate| {
            let similarity =
                strsim::normalized_damerau_levenshtein(&key, &candidate.to_lowercase());
            (similarity, candidate)
        })
        .filter(|&(similarity, _)| similarity >= MIN_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// Lists every key as `section.key`, for tests that compare the lists with the config types.
#[cfg(test)]
pub fn all_keys() -> Vec<String> {
    let mut keys = vec!["seed".to_string()];
    for (section, inner) in SECTIONS {
        keys.extend(inner.iter().map(|key| format!("{section}.{key}")));
    }
    keys
}
