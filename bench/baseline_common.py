"""Shared helpers of the baseline scripts: .npz input loading, arguments and output.

The dataset and initial-weights .npz files have the format that attnflow exports.

Dataset file: `tokens` (integer, n x L, token ids in 0..d-1) and `labels`
(float64, n, each +1 or -1).
Initial-weights file: `W` (m1 x m), `W_V`, `W_K`, `W_Q` (each m x d) and `a` (m1),
all float64.

Only NumPy is imported here, so the PyTorch and JAX scripts can share this module.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

WEIGHT_NAMES = ("W", "W_V", "W_K", "W_Q", "a")


def _require_keys(archive, path, names):
    missing = [name for name in names if name not in archive.files]
    if missing:
        raise ValueError(
            f"{path}: missing array(s) {', '.join(missing)}. "
            f"The file contains {', '.join(archive.files) or 'no arrays'}"
        )


def load_dataset(path):
    """Read `tokens` as int64 (n, L) and `labels` as float64 (n,) from a dataset .npz.

    Raises ValueError if an array is missing, has the wrong shape or type, or a label
    is not +1 or -1. Token ids are checked against the vocabulary in `validate_inputs`.
    """
    with np.load(path) as archive:
        _require_keys(archive, path, ("tokens", "labels"))
        tokens = archive["tokens"]
        labels = archive["labels"]

    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"{path}: tokens must be a non-empty n x L array, got shape {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: tokens must have an integer dtype, got {tokens.dtype}")
    if labels.shape != (tokens.shape[0],):
        raise ValueError(
            f"{path}: labels must have shape ({tokens.shape[0]},) to match tokens, got {labels.shape}"
        )
    labels = labels.astype(np.float64)
    if not np.all(np.abs(labels) == 1.0):
        bad = labels[np.abs(labels) != 1.0][:5]
        raise ValueError(f"{path}: every label must be +1 or -1, found {bad.tolist()}")

    return tokens.astype(np.int64), labels


def load_init(path):
    """Read the initial weights as a dict of float64 arrays keyed by W, W_V, W_K, W_Q, a.

    Raises ValueError if an array is missing, an entry is not finite, or the shapes do
    not fit together (W: m1 x m, W_V/W_K/W_Q: m x d, a: m1).
    """
    with np.load(path) as archive:
        _require_keys(archive, path, WEIGHT_NAMES)
        weights = {name: np.asarray(archive[name], dtype=np.float64) for name in WEIGHT_NAMES}

    W = weights["W"]
    if W.ndim != 2:
        raise ValueError(f"{path}: W must be an m1 x m matrix, got shape {W.shape}")
    m1, m = W.shape
    d = weights["W_Q"].shape[1] if weights["W_Q"].ndim == 2 else None
    for name in ("W_V", "W_K", "W_Q"):
        if weights[name].shape != (m, d):
            raise ValueError(
                f"{path}: {name} must have shape (m, d) = ({m}, {d}) like W_Q and W, "
                f"got {weights[name].shape}"
            )
    if weights["a"].shape != (m1,):
        raise ValueError(f"{path}: a must have shape (m1,) = ({m1},), got {weights['a'].shape}")
    for name in WEIGHT_NAMES:
        if not np.all(np.isfinite(weights[name])):
            raise ValueError(f"{path}: {name} contains NaN or infinite entries")
    return weights


def validate_inputs(tokens, weights, dataset_path):
    """Raise ValueError if a token id falls outside the vocabulary 0..d-1 of the weights."""
    d = weights["W_Q"].shape[1]
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d:
        raise ValueError(
            f"{dataset_path}: token ids range over {low}..{high}, "
            f"but the weights have a vocabulary of d = {d} (ids 0..{d - 1})"
        )


def load_inputs(dataset_path, init_path):
    """Load both files, check them against each other and return (tokens, labels, weights)."""
    tokens, labels = load_dataset(dataset_path)
    weights = load_init(init_path)
    validate_inputs(tokens, weights, dataset_path)
    return tokens, labels, weights


def add_input_arguments(parser):
    parser.add_argument("--dataset", required=True, help="dataset .npz with tokens and labels")
    parser.add_argument("--init", required=True, help="initial-weights .npz with W, W_V, W_K, W_Q, a")


def add_gd_arguments(parser):
    parser.add_argument("--eta", type=float, required=True, help="learning rate of gradient descent")
    parser.add_argument(
        "--steps", type=nonnegative_int, required=True, help="number of full-batch gradient steps"
    )


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_repeats_argument(parser):
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="timed runs from the same initial weights; seconds is the minimum wall-clock time",
    )


def time_repeats(run, repeats):
    """Call run() `repeats` times and measure each call.

    Returns (last result, wall-clock seconds per call, CPU seconds per call). The CPU
    seconds are time.process_time, summed over all threads of this process, so other
    load on the machine inflates them less than the wall-clock seconds.
    """
    wall_seconds = []
    cpu_seconds = []
    result = None
    for _ in range(repeats):
        wall_start = time.perf_counter()
        cpu_start = time.process_time()
        result = run()
        cpu_seconds.append(time.process_time() - cpu_start)
        wall_seconds.append(time.perf_counter() - wall_start)
    return result, wall_seconds, cpu_seconds


def nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def load_inputs_or_exit(args):
    """Load the --dataset and --init files, or print the error and exit with status 2."""
    try:
        return load_inputs(args.dataset, args.init)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def print_result(result):
    """Print one result as a single JSON line on standard output."""
    print(json.dumps(result), flush=True)


def configure_xla_threads(threads):
    """Set XLA_FLAGS for `threads` CPU threads. Call this before the first `import jax`.

    For 1 thread this adds `--xla_cpu_multi_thread_eigen=false`, which turns off the
    intra-op Eigen thread pool. XLA has no flag for another count (jaxlib 0.10.2
    rejects `--intra_op_parallelism_threads` as unknown), so a larger count keeps
    XLA's default pool. Returns the thread setting to report.
    """
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        return 1
    print(
        f"warning: XLA cannot be set to {threads} threads; it uses its default thread pool",
        file=sys.stderr,
    )
    return "xla-default"
