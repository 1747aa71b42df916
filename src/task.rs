//! The word co-occurrence task: vocabulary, samples, groups and the two filler modes.
//!
//! Token ids are 0-based. Ids 0 and 1 are the two target words, id 2 is the common token that
//! every sequence contains, and ids 3.. are filler tokens. A sequence is labelled +1 exactly
//! when it contains both targets. Yang, Kailkhura, Wang and Liang ("Training Dynamics of
//! Transformers to Recognize Word Co-occurrence via Gradient Flow Analysis", NeurIPS 2024)
//! call the three special tokens mu1, mu2 and mu3.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Id of the first target word (mu1).
pub const TARGET_1: usize = 0;
/// Id of the second target word (mu2).
pub const TARGET_2: usize = 1;
/// Id of the common token (mu3), present in every sequence.
pub const COMMON: usize = 2;
/// Id of the first filler token.
pub const FIRST_FILLER: usize = 3;

/// The four sample groups, by which targets a sequence contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Group {
    /// Both targets, label +1.
    I1,
    /// Only target 1, label -1.
    I2,
    /// Only target 2, label -1.
    I3,
    /// Neither target, label -1.
    I4,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::I1, Group::I2, Group::I3, Group::I4];

    /// Position of the group in [`Group::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Group of a sequence, from which targets it contains.
    pub fn of_tokens(tokens: &[usize]) -> Group {
        let has_1 = tokens.contains(&TARGET_1);
        let has_2 = tokens.contains(&TARGET_2);
        match (has_1, has_2) {
            (true, true) => Group::I1,
            (true, false) => Group::I2,
            (false, true) => Group::I3,
            (false, false) => Group::I4,
        }
    }

    /// Label of the group: +1 for I1, -1 otherwise.
    pub fn label(self) -> f64 {
        if self == Group::I1 { 1.0 } else { -1.0 }
    }

    /// Number of positions that fillers occupy in a sequence of length `seq_len`.
    pub fn filler_count(self, seq_len: usize) -> usize {
        match self {
            Group::I1 => seq_len - 3,
            Group::I2 | Group::I3 => seq_len - 2,
            Group::I4 => seq_len - 1,
        }
    }
}

/// Rule for filling the filler positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FillerMode {
    /// Every filler occurrence in the training set is a different token, so each filler
    /// appears once. Test samples use further tokens that no training sample contains.
    Distinct,
    /// Fillers drawn uniformly with replacement from ids 3..d.
    Sampled,
}

/// A labelled set of sequences over a vocabulary of `vocab_size` tokens.
///
/// `tokens` is row-major with shape (n, seq_len).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub tokens: Vec<usize>,
    pub labels: Vec<f64>,
    pub groups: Vec<Group>,
    pub seq_len: usize,
    pub vocab_size: usize,
}

impl Dataset {
    /// Builds a dataset from token rows and labels, checking ids and labels.
    ///
    /// Each label must be the logical AND of "token 0 present" and "token 1 present" and
    /// every sequence must contain the common token 2, because the group structure of the
    /// theory relies on both.
    pub fn new(
        tokens: Vec<usize>,
        labels: Vec<f64>,
        seq_len: usize,
        vocab_size: usize,
    ) -> Result<Dataset, Error> {
        let n = labels.len();
        if seq_len < 3 {
            return Err(Error::invalid_data(format!(
                "sequence length L = {seq_len} is too short; the task needs L >= 3"
            )));
        }
        if tokens.len() != n * seq_len {
            return Err(Error::invalid_data(format!(
                "tokens hold {} ids but {n} labels x L = {seq_len} need {}",
                tokens.len(),
                n * seq_len
            )));
        }
        let mut groups = Vec::with_capacity(n);
        for (i, row) in tokens.chunks(seq_len).enumerate() {
            if let Some(&bad) = row.iter().find(|&&k| k >= vocab_size) {
                return Err(Error::invalid_data(format!(
                    "sample {i} contains token id {bad}, outside the vocabulary 0..{vocab_size}; \
                     raise d or fix the id"
                )));
            }
            if !row.contains(&COMMON) {
                return Err(Error::invalid_data(format!(
                    "sample {i} does not contain the common token (id {COMMON}); every sequence \
                     must contain it"
                )));
            }
            let group = Group::of_tokens(row);
            let label = labels[i];
            if label != 1.0 && label != -1.0 {
                return Err(Error::invalid_data(format!(
                    "label of sample {i} is {label}; labels must be +1 or -1"
                )));
            }
            if label != group.label() {
                return Err(Error::invalid_data(format!(
                    "label of sample {i} is {label} but its tokens put it in group {group:?}, \
                     whose label is {}; the label must be +1 exactly when ids 0 and 1 both occur",
                    group.label()
                )));
            }
            groups.push(group);
        }
        Ok(Dataset {
            tokens,
            labels,
            groups,
            seq_len,
            vocab_size,
        })
    }

    /// Number of samples n.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Token ids of sample `i`.
    pub fn sample(&self, i: usize) -> &[usize] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Number of samples in each group, in the order I1..I4.
    pub fn group_sizes(&self) -> [usize; 4] {
        let mut sizes = [0; 4];
        for g in &self.groups {
            sizes[g.index()] += 1;
        }
        sizes
    }

    /// Copy of the dataset over a larger vocabulary (the ids are unchanged).
    pub fn with_vocab_size(&self, vocab_size: usize) -> Dataset {
        assert!(vocab_size >= self.vocab_size);
        Dataset {
            vocab_size,
            ..self.clone()
        }
    }
}

/// Number of filler occurrences in a balanced set of `n` samples of length `seq_len`.
pub fn filler_occurrences(n: usize, seq_len: usize) -> usize {
    let sixth = n / 6;
    3 * sixth * (seq_len - 3) + 2 * sixth * (seq_len - 2) + sixth * (seq_len - 1)
}

/// Smallest vocabulary for `distinct` fillers: 3 special tokens plus one token per filler
/// occurrence, `3 + (n/2)(L-3) + (n/3)(L-2) + (n/6)(L-1)`.
pub fn distinct_vocab_size(n: usize, seq_len: usize) -> usize {
    FIRST_FILLER + filler_occurrences(n, seq_len)
}

/// A training set and a held-out test set over one shared vocabulary.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub train: Dataset,
    pub test: Dataset,
}

/// Settings of the sample generator.
#[derive(Clone, Copy, Debug)]
pub struct TaskSpec {
    /// Training-set size, a positive multiple of 6.
    pub n: usize,
    /// Number of positions per sequence, at least 3.
    pub seq_len: usize,
    /// Vocabulary size; `None` sizes it to fit in `distinct` mode.
    pub vocab_size: Option<usize>,
    pub fillers: FillerMode,
    /// Test-set size, a positive multiple of 6.
    pub n_test: usize,
}

impl TaskSpec {
    /// Checks sizes and returns the vocabulary size the generator will use.
    ///
    /// In `distinct` mode the vocabulary contains the training fillers and then the test
    /// fillers, so it is `distinct_vocab_size(n, L) + filler_occurrences(n_test, L)`.
    pub fn resolved_vocab_size(&self) -> Result<usize, Error> {
        if self.seq_len < 3 {
            return Err(Error::config(format!(
                "task.L = {} is too small; a sequence needs room for the common token and both \
                 targets, so set L >= 3",
                self.seq_len
            )));
        }
        for (key, value) in [("task.n", self.n), ("task.n_test", self.n_test)] {
            if value == 0 || value % 6 != 0 {
                return Err(Error::config(format!(
                    "{key} = {value} is not a positive multiple of 6; the groups have exact \
                     sizes n/2, n/6, n/6, n/6, so use e.g. {}",
                    (value / 6 + 1) * 6
                )));
            }
        }
        match self.fillers {
            FillerMode::Distinct => {
                let needed = distinct_vocab_size(self.n, self.seq_len)
                    + filler_occurrences(self.n_test, self.seq_len);
                match self.vocab_size {
                    Some(d) if d < needed => Err(Error::config(format!(
                        "task.d = {d} is too small for distinct fillers: n = {} training and \
                         n_test = {} test samples of length L = {} need d >= {needed}; raise d or \
                         remove it to size the vocabulary automatically",
                        self.n, self.n_test, self.seq_len
                    ))),
                    Some(d) => Ok(d),
                    None => Ok(needed),
                }
            }
            FillerMode::Sampled => match self.vocab_size {
                None => Err(Error::config(
                    "task.d is missing; sampled fillers need a vocabulary size, e.g. d = 64"
                        .to_string(),
                )),
                Some(d) if d <= FIRST_FILLER => Err(Error::config(format!(
                    "task.d = {d} leaves no filler tokens; sampled fillers need d >= 4"
                ))),
                Some(d) => Ok(d),
            },
        }
    }

    /// Draws the training and test sets.
    pub fn generate(&self, rng: &mut impl Rng) -> Result<TaskData, Error> {
        let vocab_size = self.resolved_vocab_size()?;
        let mut next_distinct = FIRST_FILLER;
        let mut draw_filler = |rng: &mut dyn rand::RngCore| -> usize {
            match self.fillers {
                FillerMode::Distinct => {
                    let id = next_distinct;
                    next_distinct += 1;
                    id
                }
                FillerMode::Sampled => rng.random_range(FIRST_FILLER..vocab_size),
            }
        };
        let train = draw_balanced(self.n, self.seq_len, vocab_size, rng, &mut draw_filler);
        let test = draw_balanced(self.n_test, self.seq_len, vocab_size, rng, &mut draw_filler);
        Ok(TaskData { train, test })
    }
}

/// Draws `n` samples with exact group sizes n/2, n/6, n/6, n/6, in shuffled order.
fn draw_balanced(
    n: usize,
    seq_len: usize,
    vocab_size: usize,
    rng: &mut impl Rng,
    draw_filler: &mut dyn FnMut(&mut dyn rand::RngCore) -> usize,
) -> Dataset {
    let mut groups = Vec::with_capacity(n);
    groups.extend(std::iter::repeat_n(Group::I1, n / 2));
    for g in [Group::I2, Group::I3, Group::I4] {
        groups.extend(std::iter::repeat_n(g, n / 6));
    }
    groups.shuffle(rng);

    let mut tokens = Vec::with_capacity(n * seq_len);
    let mut positions: Vec<usize> = (0..seq_len).collect();
    for &group in &groups {
        // A random permutation of positions puts the common token first, then the targets
        // the group needs, then fillers; this is the same as drawing each uniformly among
        // the positions still free.
        positions.shuffle(rng);
        let mut row = vec![usize::MAX; seq_len];
        row[positions[0]] = COMMON;
        let targets: &[usize] = match group {
            Group::I1 => &[TARGET_1, TARGET_2],
            Group::I2 => &[TARGET_1],
            Group::I3 => &[TARGET_2],
            Group::I4 => &[],
        };
        for (slot, &target) in targets.iter().enumerate() {
            row[positions[1 + slot]] = target;
        }
        debug_assert_eq!(group.filler_count(seq_len), seq_len - 1 - targets.len());
        for &pos in &positions[1 + targets.len()..] {
            row[pos] = draw_filler(rng);
        }
        tokens.extend_from_slice(&row);
    }
    let labels = groups.iter().map(|g| g.label()).collect();
    Dataset {
        tokens,
        labels,
        groups,
        seq_len,
        vocab_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn spec(fillers: FillerMode, vocab_size: Option<usize>) -> TaskSpec {
        TaskSpec {
            n: 24,
            seq_len: 6,
            vocab_size,
            fillers,
            n_test: 12,
        }
    }

    #[test]
    fn group_sizes_exact() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let data = spec(FillerMode::Sampled, Some(40))
            .generate(&mut rng)
            .unwrap();
        assert_eq!(data.train.group_sizes(), [12, 4, 4, 4]);
        assert_eq!(data.test.group_sizes(), [6, 2, 2, 2]);
    }

    #[test]
    fn labels_match_groups() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data = spec(FillerMode::Sampled, Some(10))
            .generate(&mut rng)
            .unwrap();
        for i in 0..data.train.len() {
            let row = data.train.sample(i);
            assert_eq!(row.iter().filter(|&&k| k == COMMON).count(), 1);
            assert_eq!(Group::of_tokens(row), data.train.groups[i]);
            assert_eq!(data.train.labels[i], data.train.groups[i].label());
        }
    }

    #[test]
    fn distinct_fillers_unique_and_held_out() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let s = spec(FillerMode::Distinct, None);
        let data = s.generate(&mut rng).unwrap();
        let train_fillers: Vec<usize> = data
            .train
            .tokens
            .iter()
            .copied()
            .filter(|&k| k >= FIRST_FILLER)
            .collect();
        let mut unique = train_fillers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), train_fillers.len());
        assert_eq!(train_fillers.len(), filler_occurrences(24, 6));
        let test_fillers: Vec<usize> = data
            .test
            .tokens
            .iter()
            .copied()
            .filter(|&k| k >= FIRST_FILLER)
            .collect();
        assert!(test_fillers.iter().all(|k| !train_fillers.contains(k)));
        assert_eq!(data.train.vocab_size, s.resolved_vocab_size().unwrap());
        assert!(data.test.tokens.iter().all(|&k| k < data.test.vocab_size));
    }

    #[test]
    fn distinct_vocab_formula() {
        // 3 + (n/2)(L-3) + (n/3)(L-2) + (n/6)(L-1) with n = 24, L = 6.
        assert_eq!(distinct_vocab_size(24, 6), 3 + 12 * 3 + 8 * 4 + 4 * 5);
    }

    #[test]
    fn too_small_vocab_rejected() {
        let err = spec(FillerMode::Distinct, Some(50))
            .resolved_vocab_size()
            .unwrap_err()
            .to_string();
        assert!(err.contains("task.d = 50"), "{err}");
        // 3 + 12*3 + 8*4 + 4*5 = 91 training ids, plus 2*3*3 + 2*2*4 + 2*5 = 44 test fillers.
        assert!(err.contains("d >= 135"), "{err}");
    }

    #[test]
    fn bad_sizes_rejected() {
        let mut s = spec(FillerMode::Sampled, Some(10));
        s.n = 25;
        assert!(
            s.resolved_vocab_size()
                .unwrap_err()
                .to_string()
                .contains("task.n = 25")
        );
        s.n = 24;
        s.seq_len = 2;
        assert!(
            s.resolved_vocab_size()
                .unwrap_err()
                .to_string()
                .contains("L >= 3")
        );
    }

    #[test]
    fn dataset_new_rejects_wrong_label() {
        let err = Dataset::new(vec![0, 1, 2], vec![-1.0], 3, 5).unwrap_err();
        assert!(err.to_string().contains("label of sample 0"), "{err}");
        let err = Dataset::new(vec![0, 1, 2], vec![0.5], 3, 5).unwrap_err();
        assert!(err.to_string().contains("+1 or -1"), "{err}");
        let err = Dataset::new(vec![0, 1, 9], vec![1.0], 3, 5).unwrap_err();
        assert!(err.to_string().contains("token id 9"), "{err}");
    }
}
