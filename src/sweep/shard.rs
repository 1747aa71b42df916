//! Disjoint slices of a run list, for job arrays on a cluster.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The K-th of N slices (1 <= K <= N): the runs whose index i has i mod N = K - 1.
///
/// Taking every N-th run spreads cheap and expensive runs (small and large widths) evenly
/// over the slices when the grid varies the width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K, counted from 1.
    pub number: usize,
    /// N.
    pub count: usize,
}

impl Shard {
    /// The whole run list.
    pub const ALL: Shard = Shard {
        number: 1,
        count: 1,
    };

    pub fn new(number: usize, count: usize) -> Result<Shard, Error> {
        if count == 0 || number == 0 || number > count {
            return Err(Error::config(format!(
                "shard {number}/{count} is invalid; use K/N with 1 <= K <= N, e.g. 1/4"
            )));
        }
        Ok(Shard { number, count })
    }

    /// Checks whether the run at `index` of the full list belongs to this slice.
    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.number - 1
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(text: &str) -> Result<Shard, Error> {
        let invalid = || {
            Error::config(format!(
                "shard `{text}` is invalid; write K/N with 1 <= K <= N, e.g. 2/8"
            ))
        };
        let (number, count) = text.split_once('/').ok_or_else(invalid)?;
        let number = number.trim().parse().map_err(|_| invalid())?;
        let count = count.trim().parse().map_err(|_| invalid())?;
        Shard::new(number, count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover() {
        for count in 1..=7 {
            let shards: Vec<Shard> = (1..=count).map(|k| Shard::new(k, count).unwrap()).collect();
            for index in 0..50 {
                let owners = shards.iter().filter(|s| s.contains(index)).count();
                assert_eq!(owners, 1, "index {index} with {count} shards");
            }
        }
    }

    #[test]
    fn shard_parses_and_prints() {
        let shard: Shard = "3/8".parse().unwrap();
        assert_eq!(shard, Shard::new(3, 8).unwrap());
        assert_eq!(shard.to_string(), "3/8");
    }

    #[test]
    fn invalid_shard_rejected() {
        for text in ["0/4", "5/4", "1/0", "2", "a/b", "1/-2"] {
            let err = text.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains("K/N"), "{text}: {err}");
        }
    }
}
