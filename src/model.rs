//! Weights of the one-layer transformer and their random initialization.

use ndarray::{Array1, Array2};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The trainable weights W, W_V, W_K, W_Q and the fixed sign vector a.
///
/// Shapes follow the usual (out, in) convention of linear layers: `w` is (m1, m), `w_v`, `w_k`, `w_q` are (m, d), `a` has length m1.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub w: Array2<f64>,
    pub w_v: Array2<f64>,
    pub w_k: Array2<f64>,
    pub w_q: Array2<f64>,
    pub a: Array1<f64>,
}

impl Params {
    /// Attention width m.
    pub fn width(&self) -> usize {
        self.w_v.nrows()
    }

    /// Number of MLP neurons m1.
    pub fn neurons(&self) -> usize {
        self.w.nrows()
    }

    /// Vocabulary size d.
    pub fn vocab_size(&self) -> usize {
        self.w_v.ncols()
    }

    /// Checks that the shapes agree with each other and with `vocab_size`, that `a` is +/-1
    /// and that every entry is finite.
    pub fn validate(&self, vocab_size: usize) -> Result<(), Error> {
        let (m1, m) = self.w.dim();
        for (name, matrix) in [("W_V", &self.w_v), ("W_K", &self.w_k), ("W_Q", &self.w_q)] {
            if matrix.dim() != (m, vocab_size) {
                return Err(Error::invalid_data(format!(
                    "{name} has shape {:?} but W is ({m1}, {m}) and the vocabulary has d = \
                     {vocab_size} tokens, so {name} must be ({m}, {vocab_size})",
                    matrix.dim()
                )));
            }
        }
        if self.a.len() != m1 {
            return Err(Error::invalid_data(format!(
                "a has length {} but W has m1 = {m1} rows",
                self.a.len()
            )));
        }
        if let Some(bad) = self.a.iter().find(|&&v| v != 1.0 && v != -1.0) {
            return Err(Error::invalid_data(format!(
                "a contains {bad}; every entry of a must be +1 or -1"
            )));
        }
        for (name, matrix) in [
            ("W", &self.w),
            ("W_V", &self.w_v),
            ("W_K", &self.w_k),
            ("W_Q", &self.w_q),
        ] {
            if let Some(((i, j), v)) = matrix.indexed_iter().find(|(_, v)| !v.is_finite()) {
                return Err(Error::invalid_data(format!(
                    "{name}[{i}, {j}] = {v} is not finite"
                )));
            }
        }
        Ok(())
    }

    /// `u = W^T a`, the only part of W that the output depends on (length m).
    pub fn u(&self) -> Array1<f64> {
        self.w.t().dot(&self.a)
    }
}

/// Law of the initial weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum InitScheme {
    /// Gaussian with sigma0 = c0 / sqrt(L m) for W_V, W_K, W_Q and sigma1 = c1 / sqrt(m1)
    /// for W (the theory's small initialization).
    Theory { c0: f64, c1: f64 },
    /// PyTorch's `nn.Linear` default: uniform on (-1/sqrt(fan_in), 1/sqrt(fan_in)), with
    /// fan_in = d for W_V, W_K, W_Q and fan_in = m for W.
    KaimingUniform,
    /// `torch.nn.init.kaiming_normal_` with its defaults: N(0, 2 / fan_in).
    KaimingNormal,
    /// Gaussian with the given standard deviations.
    Gaussian { sigma0: f64, sigma1: f64 },
}

/// Entry distribution of one weight matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EntryLaw {
    Normal { std: f64 },
    Uniform { bound: f64 },
}

impl EntryLaw {
    /// Standard deviation of one entry.
    pub fn std(self) -> f64 {
        match self {
            EntryLaw::Normal { std } => std,
            EntryLaw::Uniform { bound } => bound / 3f64.sqrt(),
        }
    }

    pub fn is_gaussian(self) -> bool {
        matches!(self, EntryLaw::Normal { .. })
    }

    fn sample(self, rows: usize, cols: usize, rng: &mut impl Rng) -> Array2<f64> {
        match self {
            EntryLaw::Normal { std } => {
                let law = Normal::new(0.0, std).expect("standard deviation checked positive");
                Array2::from_shape_simple_fn((rows, cols), || law.sample(rng))
            }
            EntryLaw::Uniform { bound } => {
                let law = Uniform::new(-bound, bound).expect("bound checked positive");
                Array2::from_shape_simple_fn((rows, cols), || law.sample(rng))
            }
        }
    }
}

/// Sizes that fix the laws of the initial weights.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Vocabulary size d.
    pub d: usize,
    /// Sequence length L.
    pub seq_len: usize,
    /// Attention width m.
    pub m: usize,
    /// Number of MLP neurons m1.
    pub m1: usize,
}

impl InitScheme {
    /// Entry laws of (W_V, W_K, W_Q) and of W.
    pub fn laws(self, dims: Dims) -> Result<(EntryLaw, EntryLaw), Error> {
        let (attention, head) = match self {
            InitScheme::Theory { c0, c1 } => {
                check_positive("init.c0", c0)?;
                check_positive("init.c1", c1)?;
                (
                    EntryLaw::Normal {
                        std: c0 / ((dims.seq_len * dims.m) as f64).sqrt(),
                    },
                    EntryLaw::Normal {
                        std: c1 / (dims.m1 as f64).sqrt(),
                    },
                )
            }
            InitScheme::KaimingUniform => (
                EntryLaw::Uniform {
                    bound: 1.0 / (dims.d as f64).sqrt(),
                },
                EntryLaw::Uniform {
                    bound: 1.0 / (dims.m as f64).sqrt(),
                },
            ),
            InitScheme::KaimingNormal => (
                EntryLaw::Normal {
                    std: (2.0 / dims.d as f64).sqrt(),
                },
                EntryLaw::Normal {
                    std: (2.0 / dims.m as f64).sqrt(),
                },
            ),
            InitScheme::Gaussian { sigma0, sigma1 } => {
                check_positive("init.sigma0", sigma0)?;
                check_positive("init.sigma1", sigma1)?;
                (
                    EntryLaw::Normal { std: sigma0 },
                    EntryLaw::Normal { std: sigma1 },
                )
            }
        };
        Ok((attention, head))
    }

    /// Draws W, W_V, W_K, W_Q and a.
    pub fn sample(self, dims: Dims, rng: &mut impl Rng) -> Result<Params, Error> {
        let (attention, head) = self.laws(dims)?;
        let w = head.sample(dims.m1, dims.m, rng);
        let w_v = attention.sample(dims.m, dims.d, rng);
        let w_k = attention.sample(dims.m, dims.d, rng);
        let w_q = attention.sample(dims.m, dims.d, rng);
        let a =
            Array1::from_shape_simple_fn(dims.m1, || if rng.random::<bool>() { 1.0 } else { -1.0 });
        Ok(Params {
            w,
            w_v,
            w_k,
            w_q,
            a,
        })
    }
}

fn check_positive(key: &str, value: f64) -> Result<(), Error> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{key} = {} is invalid; it must be a finite number > 0",
            crate::error::format_value(value)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const DIMS: Dims = Dims {
        d: 7,
        seq_len: 4,
        m: 300,
        m1: 200,
    };

    #[test]
    fn theory_init_scales() {
        let scheme = InitScheme::Theory { c0: 0.5, c1: 2.0 };
        let (attention, head) = scheme.laws(DIMS).unwrap();
        assert!((attention.std() - 0.5 / (4.0f64 * 300.0).sqrt()).abs() < 1e-15);
        assert!((head.std() - 2.0 / 200f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn kaiming_uniform_matches_linear_default() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let params = InitScheme::KaimingUniform.sample(DIMS, &mut rng).unwrap();
        let bound_v = 1.0 / 7f64.sqrt();
        assert!(params.w_v.iter().all(|v| v.abs() <= bound_v));
        assert!(params.w.iter().all(|v| v.abs() <= 1.0 / 300f64.sqrt()));
        let variance = params.w_k.iter().map(|v| v * v).sum::<f64>() / params.w_k.len() as f64;
        // 2100 entries of variance bound^2 / 3: the sample variance is within 10% with
        // overwhelming probability.
        assert!(
            (variance / (bound_v * bound_v / 3.0) - 1.0).abs() < 0.1,
            "{variance}"
        );
    }

    #[test]
    fn sampled_shapes_validate() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let params = InitScheme::KaimingNormal.sample(DIMS, &mut rng).unwrap();
        assert_eq!(params.w.dim(), (200, 300));
        assert_eq!(params.w_q.dim(), (300, 7));
        params.validate(7).unwrap();
        let err = params.validate(8).unwrap_err().to_string();
        assert!(err.contains("must be (300, 8)"), "{err}");
    }

    #[test]
    fn nonpositive_sigma_rejected() {
        let scheme = InitScheme::Gaussian {
            sigma0: 0.0,
            sigma1: 1.0,
        };
        let err = scheme.laws(DIMS).unwrap_err().to_string();
        assert!(err.contains("init.sigma0 = 0"), "{err}");
    }
}
