//! The quantities recorded at each output time: one row of `trajectory.csv`.
//!
//! Token indices in column names are 1-based, matching the names mu1, mu2, mu3 of the special
//! tokens in the literature: `gamma_1` is the readout of target 1 (id 0), `S_2_1` is
//! S[target 2, target 1] with row = key and column = query, and index 3 is the common token
//! (id 2).

use serde::{Deserialize, Deserializer, Serialize};

use crate::engine::GramSummary;
use crate::forward::Evaluation;
use crate::task::{Group, TaskData};

/// One recorded time point.
///
/// Gradient weights are g_i = 1 / (1 + exp(y_i F_i)); `gsum_I*` is their sum over a group and
/// `gprime_I*` the sum of g_i (1 - g_i), the size of the derivative of g_i with respect to the
/// margin.
///
/// A group that the training set lacks makes `balance_I2_I3` or `R` non-finite. JSON has no
/// NaN or infinity, so `summary.json` and `checkpoint.json` store non-finite values as null,
/// and every field reads null back as NaN.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Time t of gradient flow (for gradient descent, eta x step).
    #[serde(deserialize_with = "nan_if_null")]
    pub t: f64,
    /// Mean training loss.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Mean loss on the held-out test set.
    #[serde(deserialize_with = "nan_if_null")]
    pub test_loss: f64,
    /// Fraction of test samples with y F <= 0.
    #[serde(deserialize_with = "nan_if_null")]
    pub test_error: f64,
    #[serde(rename = "loss_I1", deserialize_with = "nan_if_null")]
    pub loss_i1: f64,
    #[serde(rename = "loss_I2", deserialize_with = "nan_if_null")]
    pub loss_i2: f64,
    #[serde(rename = "loss_I3", deserialize_with = "nan_if_null")]
    pub loss_i3: f64,
    #[serde(rename = "loss_I4", deserialize_with = "nan_if_null")]
    pub loss_i4: f64,
    #[serde(rename = "gsum_I1", deserialize_with = "nan_if_null")]
    pub gsum_i1: f64,
    #[serde(rename = "gsum_I2", deserialize_with = "nan_if_null")]
    pub gsum_i2: f64,
    #[serde(rename = "gsum_I3", deserialize_with = "nan_if_null")]
    pub gsum_i3: f64,
    #[serde(rename = "gsum_I4", deserialize_with = "nan_if_null")]
    pub gsum_i4: f64,
    #[serde(rename = "gprime_I1", deserialize_with = "nan_if_null")]
    pub gprime_i1: f64,
    #[serde(rename = "gprime_I2", deserialize_with = "nan_if_null")]
    pub gprime_i2: f64,
    #[serde(rename = "gprime_I3", deserialize_with = "nan_if_null")]
    pub gprime_i3: f64,
    #[serde(rename = "gprime_I4", deserialize_with = "nan_if_null")]
    pub gprime_i4: f64,
    /// gsum_I2 / gsum_I3.
    #[serde(rename = "balance_I2_I3", deserialize_with = "nan_if_null")]
    pub balance_i2_i3: f64,
    /// (g(I2 u I3 u I4) - g(I1)) / (g(I1) - g(I2)); NaN when g(I1) = g(I2).
    #[serde(rename = "R", deserialize_with = "nan_if_null")]
    pub r: f64,
    /// Largest ratio max g / min g within one group.
    #[serde(deserialize_with = "nan_if_null")]
    pub within_group_g_ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub gamma_1: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub gamma_2: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub gamma_3: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub beta: f64,
    #[serde(rename = "S_1_1", deserialize_with = "nan_if_null")]
    pub s_1_1: f64,
    #[serde(rename = "S_1_2", deserialize_with = "nan_if_null")]
    pub s_1_2: f64,
    #[serde(rename = "S_1_3", deserialize_with = "nan_if_null")]
    pub s_1_3: f64,
    #[serde(rename = "S_2_1", deserialize_with = "nan_if_null")]
    pub s_2_1: f64,
    #[serde(rename = "S_2_2", deserialize_with = "nan_if_null")]
    pub s_2_2: f64,
    #[serde(rename = "S_2_3", deserialize_with = "nan_if_null")]
    pub s_2_3: f64,
    #[serde(rename = "S_3_1", deserialize_with = "nan_if_null")]
    pub s_3_1: f64,
    #[serde(rename = "S_3_2", deserialize_with = "nan_if_null")]
    pub s_3_2: f64,
    #[serde(rename = "S_3_3", deserialize_with = "nan_if_null")]
    pub s_3_3: f64,
    #[serde(rename = "GV_1_1", deserialize_with = "nan_if_null")]
    pub gv_1_1: f64,
    #[serde(rename = "GV_1_2", deserialize_with = "nan_if_null")]
    pub gv_1_2: f64,
    #[serde(rename = "GV_1_3", deserialize_with = "nan_if_null")]
    pub gv_1_3: f64,
    #[serde(rename = "GV_2_1", deserialize_with = "nan_if_null")]
    pub gv_2_1: f64,
    #[serde(rename = "GV_2_2", deserialize_with = "nan_if_null")]
    pub gv_2_2: f64,
    #[serde(rename = "GV_2_3", deserialize_with = "nan_if_null")]
    pub gv_2_3: f64,
    #[serde(rename = "GV_3_1", deserialize_with = "nan_if_null")]
    pub gv_3_1: f64,
    #[serde(rename = "GV_3_2", deserialize_with = "nan_if_null")]
    pub gv_3_2: f64,
    #[serde(rename = "GV_3_3", deserialize_with = "nan_if_null")]
    pub gv_3_3: f64,
    /// min_i y_i F_i over the training set.
    #[serde(deserialize_with = "nan_if_null")]
    pub min_margin: f64,
    /// m1 trace(GV) - beta, constant under gradient flow.
    #[serde(deserialize_with = "nan_if_null")]
    pub invariant_value: f64,
    /// trace(GK) - trace(GQ), constant under gradient flow.
    #[serde(deserialize_with = "nan_if_null")]
    pub invariant_key_query: f64,
}

impl Observation {
    /// Builds a row from finished training and test evaluations at time `t`.
    pub fn new(
        t: f64,
        data: &TaskData,
        train: &Evaluation,
        test: &Evaluation,
        gamma: &[f64],
        summary: &GramSummary,
    ) -> Observation {
        let mut loss = [0.0; 4];
        let mut gsum = [0.0; 4];
        let mut gprime = [0.0; 4];
        let mut count = [0usize; 4];
        let mut g_min = [f64::INFINITY; 4];
        let mut g_max = [0.0f64; 4];
        for (i, group) in data.train.groups.iter().enumerate() {
            let k = group.index();
            let g = train.g[i];
            loss[k] += train.sample_loss(i);
            gsum[k] += g;
            gprime[k] += g * (1.0 - g);
            count[k] += 1;
            g_min[k] = g_min[k].min(g);
            g_max[k] = g_max[k].max(g);
        }
        for k in 0..4 {
            loss[k] /= count[k].max(1) as f64;
        }
        let within_group_g_ratio = (0..4)
            .filter(|&k| count[k] > 0)
            .map(|k| g_max[k] / g_min[k])
            .fold(1.0, f64::max);

        let [i1, i2, i3, i4] = [Group::I1, Group::I2, Group::I3, Group::I4].map(|g| g.index());
        let denominator = gsum[i1] - gsum[i2];
        let r = if denominator != 0.0 {
            (gsum[i2] + gsum[i3] + gsum[i4] - gsum[i1]) / denominator
        } else {
            f64::NAN
        };
        let test_wrong = test
            .margins()
            .iter()
            .copied()
            .filter(|&margin| margin <= 0.0)
            .count();
        let min_margin = train.min_margin();
        let s = &summary.s;
        let gv = &summary.gv;

        Observation {
            t,
            loss: train.loss(),
            test_loss: test.loss(),
            test_error: test_wrong as f64 / data.test.len().max(1) as f64,
            loss_i1: loss[i1],
            loss_i2: loss[i2],
            loss_i3: loss[i3],
            loss_i4: loss[i4],
            gsum_i1: gsum[i1],
            gsum_i2: gsum[i2],
            gsum_i3: gsum[i3],
            gsum_i4: gsum[i4],
            gprime_i1: gprime[i1],
            gprime_i2: gprime[i2],
            gprime_i3: gprime[i3],
            gprime_i4: gprime[i4],
            balance_i2_i3: gsum[i2] / gsum[i3],
            r,
            within_group_g_ratio,
            gamma_1: gamma[0],
            gamma_2: gamma[1],
            gamma_3: gamma[2],
            beta: summary.beta,
            s_1_1: s[0][0],
            s_1_2: s[0][1],
            s_1_3: s[0][2],
            s_2_1: s[1][0],
            s_2_2: s[1][1],
            s_2_3: s[1][2],
            s_3_1: s[2][0],
            s_3_2: s[2][1],
            s_3_3: s[2][2],
            gv_1_1: gv[0][0],
            gv_1_2: gv[0][1],
            gv_1_3: gv[0][2],
            gv_2_1: gv[1][0],
            gv_2_2: gv[1][1],
            gv_2_3: gv[1][2],
            gv_3_1: gv[2][0],
            gv_3_2: gv[2][1],
            gv_3_3: gv[2][2],
            min_margin,
            invariant_value: summary.value_invariant,
            invariant_key_query: summary.key_query_invariant,
        }
    }

    /// Every value of the row that must be finite (R may be NaN by definition).
    pub fn first_non_finite(&self) -> Option<&'static str> {
        let checks = [
            ("loss", self.loss),
            ("test_loss", self.test_loss),
            ("gamma_1", self.gamma_1),
            ("gamma_2", self.gamma_2),
            ("gamma_3", self.gamma_3),
            ("beta", self.beta),
            ("min_margin", self.min_margin),
            ("S_1_2", self.s_1_2),
            ("GV_1_1", self.gv_1_1),
        ];
        checks
            .iter()
            .find(|(_, value)| !value.is_finite())
            .map(|(name, _)| *name)
    }
}

/// Reads a number, or null as NaN. serde_json writes NaN and the infinities as null, so an
/// infinity also comes back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Reads a `trajectory.csv` written by a run.
pub fn read_trajectory(path: &std::path::Path) -> Result<Vec<Observation>, crate::error::Error> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
    reader
        .deserialize()
        .collect::<Result<Vec<Observation>, _>>()
        .map_err(|e| csv_error(path, e))
}

fn csv_error(path: &std::path::Path, error: csv::Error) -> crate::error::Error {
    crate::error::Error::invalid_data(format!("failed to read {}: {error}", path.display()))
}
