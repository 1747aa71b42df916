//! TOML text of a config, with floats written short.
//!
//! toml's own writer prints floats in plain decimal form, which turns `rtol = 1e-8` into
//! `0.00000001` and a final time of 1e-300 into over 300 digits. Here a float is written as
//! `format_value` prints it (plain when its size lies in [1e-4, 1e16), scientific
//! otherwise). Both forms use the shortest digits that read back to the same f64.

use crate::dopri5::StepRule;
use crate::error::format_value;
use crate::integrator::IntegratorKind;

use super::Config;

/// Writes `config` as TOML: top-level keys first, then one `[section]` per table, with keys
/// in the order of the config's fields.
pub(super) fn config_to_toml(config: &Config) -> String {
    // The step-size rule of dopri5 is written out even when it was left at its default.
    let mut resolved = config.clone();
    if resolved.train.integrator == IntegratorKind::Dopri5 && resolved.train.controller.is_none() {
        resolved.train.controller = Some(StepRule::Pi);
    }
    let table = toml::Table::try_from(&resolved).expect("a config always serializes");
    let mut text = String::new();
    // Every key after a `[section]` header belongs to that section, so the top-level keys
    // go first.
    for (key, value) in &table {
        if !value.is_table() {
            push_entry(&mut text, key, value);
        }
    }
    for (name, value) in &table {
        let Some(section) = value.as_table() else {
            continue;
        };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("[{name}]\n"));
        for (key, value) in section {
            push_entry(&mut text, key, value);
        }
    }
    text
}

/// Appends the line `key = value`. Config keys are bare TOML keys, so they need no quotes.
fn push_entry(text: &mut String, key: &str, value: &toml::Value) {
    let literal = match value {
        toml::Value::Float(number) => float_literal(*number),
        // Config sections hold no nested tables or arrays, so this covers strings, integers
        // and booleans, which toml writes exactly.
        other => other.to_string(),
    };
    text.push_str(&format!("{key} = {literal}\n"));
}

/// Formats `value` as a TOML float literal that reads back to the same f64 (NaN loses its
/// sign and payload).
pub(super) fn float_literal(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let text = format_value(value);
    // Without a point or an exponent, TOML would read an integer.
    if text.contains(['.', 'e']) {
        text
    } else {
        text + ".0"
    }
}

#[cfg(test)]
mod tests {
    use super::float_literal;

    #[test]
    fn float_literal_cases() {
        let cases = [
            (0.1, "0.1"),
            (30.0, "30.0"),
            (-0.0, "-0.0"),
            (1e-8, "1e-8"),
            (1e-300, "1e-300"),
            (1e300, "1e300"),
            (123456.789, "123456.789"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_literal(value), expected, "for {value:e}");
        }
    }

    #[test]
    fn float_literal_reads_back_as_float() {
        for value in [0.1, 30.0, -0.0, 1e-8, 1e-300, 1e300, 123456.789, 5e-324] {
            let text = format!("x = {}", float_literal(value));
            let table: toml::Table = toml::from_str(&text).unwrap();
            let read = table["x"].as_float();
            assert_eq!(read.map(f64::to_bits), Some(value.to_bits()), "{text}");
        }
    }
}
