"""Write a seeded dataset .npz and initial-weights .npz for developing the baselines.

Defaults are the word co-occurrence experiment: n = 60 sequences of length L = 5 over
a vocabulary of d = 64 one-hot tokens. Token 0 and token 1 are the two target words,
token 2 is the common token that every sequence contains, and tokens 3..d-1 are
fillers drawn uniformly with replacement. 30 sequences contain both targets
(label +1); 10 contain only token 0, 10 only token 1 and 10 neither (label -1).
Samples and positions within a sequence are shuffled.

Weights follow PyTorch's nn.Linear default initialization, uniform on
[-1/sqrt(fan_in), 1/sqrt(fan_in)], with fan_in = d for W_Q, W_K, W_V (m x d) and
fan_in = m for W (m1 x m). The fixed output vector a is uniform on {+1, -1}.
"""

import argparse
import sys

import numpy as np

TARGET_0 = 0
TARGET_1 = 1
COMMON = 2
FIRST_FILLER = 3


def make_dataset(rng, n_both, n_only0, n_only1, n_neither, seq_len, vocab_size):
    """Return (tokens int64 n x L, labels float64 n) with the group sizes given."""
    groups = (
        [((TARGET_0, TARGET_1), 1.0)] * n_both
        + [((TARGET_0,), -1.0)] * n_only0
        + [((TARGET_1,), -1.0)] * n_only1
        + [((), -1.0)] * n_neither
    )
    order = rng.permutation(len(groups))

    tokens = np.empty((len(groups), seq_len), dtype=np.int64)
    labels = np.empty(len(groups), dtype=np.float64)
    for row, group_index in enumerate(order):
        targets, label = groups[group_index]
        filler_count = seq_len - 1 - len(targets)
        fillers = rng.integers(FIRST_FILLER, vocab_size, size=filler_count)
        sequence = np.concatenate([np.array(targets + (COMMON,), dtype=np.int64), fillers])
        tokens[row] = rng.permutation(sequence)
        labels[row] = label
    return tokens, labels


def make_weights(rng, vocab_size, m, m1):
    """Return the initial weights dict (W, W_V, W_K, W_Q, a), all float64."""
    attention_bound = 1.0 / np.sqrt(vocab_size)
    output_bound = 1.0 / np.sqrt(m)
    return {
        "W": rng.uniform(-output_bound, output_bound, size=(m1, m)),
        "W_V": rng.uniform(-attention_bound, attention_bound, size=(m, vocab_size)),
        "W_K": rng.uniform(-attention_bound, attention_bound, size=(m, vocab_size)),
        "W_Q": rng.uniform(-attention_bound, attention_bound, size=(m, vocab_size)),
        "a": rng.choice(np.array([1.0, -1.0]), size=m1),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="dataset.npz", help="output path of the dataset .npz")
    parser.add_argument("--init", default="init.npz", help="output path of the initial-weights .npz")
    parser.add_argument("--seed", type=int, default=0, help="seed of NumPy's default_rng")
    parser.add_argument("--n-both", type=int, default=30, help="sequences with both targets (label +1)")
    parser.add_argument("--n-only0", type=int, default=10, help="sequences with token 0 only (label -1)")
    parser.add_argument("--n-only1", type=int, default=10, help="sequences with token 1 only (label -1)")
    parser.add_argument("--n-neither", type=int, default=10, help="sequences with no target (label -1)")
    parser.add_argument("--seq-len", type=int, default=5, help="sequence length L")
    parser.add_argument("--vocab-size", type=int, default=64, help="vocabulary size d")
    parser.add_argument("--m", type=int, default=128, help="rows of W_Q, W_K, W_V")
    parser.add_argument("--m1", type=int, default=256, help="rows of W and length of a")
    args = parser.parse_args(argv)

    counts = (args.n_both, args.n_only0, args.n_only1, args.n_neither)
    if min(counts) < 0 or sum(counts) == 0:
        parser.error(f"group sizes must be non-negative with a positive sum, got {counts}")
    if args.seq_len < 3:
        parser.error(f"--seq-len must be at least 3 to fit both targets and the common token, got {args.seq_len}")
    if args.vocab_size <= FIRST_FILLER:
        parser.error(f"--vocab-size must be at least {FIRST_FILLER + 1} to leave a filler token, got {args.vocab_size}")
    if args.m < 1 or args.m1 < 1:
        parser.error(f"--m and --m1 must be positive, got {args.m} and {args.m1}")
    return args


def main(argv):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tokens, labels = make_dataset(
        rng, args.n_both, args.n_only0, args.n_only1, args.n_neither, args.seq_len, args.vocab_size
    )
    weights = make_weights(rng, args.vocab_size, args.m, args.m1)
    # Writing through a file object keeps the path as given, because np.savez appends
    # ".npz" to a path string that lacks it.
    with open(args.dataset, "wb") as dataset_file:
        np.savez(dataset_file, tokens=tokens, labels=labels)
    with open(args.init, "wb") as init_file:
        np.savez(init_file, **weights)
    print(
        f"wrote {args.dataset} (n={tokens.shape[0]}, L={tokens.shape[1]}) and "
        f"{args.init} (m1={args.m1}, m={args.m}, d={args.vocab_size}), seed {args.seed}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
