"""Train the one-layer transformer with full-batch gradient descent in PyTorch eager mode.

All four matrices W, W_V, W_K, W_Q are updated at once by theta <- theta - eta * grad,
in float64. Prints one JSON line with framework, seconds, final_loss and steps.
`seconds` is the minimum over --repeats runs of the training loop alone, so it
excludes imports, file loading and the final loss evaluation.
"""

import argparse
import math
import sys

import torch

import baseline_common


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    baseline_common.add_input_arguments(parser)
    baseline_common.add_gd_arguments(parser)
    parser.add_argument(
        "--threads", type=baseline_common.positive_int, default=1, help="intra-op threads (torch.set_num_threads)"
    )
    baseline_common.add_repeats_argument(parser)
    return parser.parse_args(argv)


def mean_loss(W, W_V, W_K, W_Q, a, tokens, labels):
    """Return the mean of softplus(-y F) over the samples.

    With one-hot embeddings, column x of W_K is the key of token x, so indexing the
    transposed matrices by token id gives the (n, L, m) keys, queries and values.
    """
    keys = W_K.T[tokens]
    queries = W_Q.T[tokens]
    values = W_V.T[tokens]
    # scores[i, l, h] = k_h . q_l / sqrt(m), normalized over the key position h.
    scores = queries @ keys.transpose(1, 2) / math.sqrt(W_K.shape[0])
    attention = torch.softmax(scores, dim=2)
    outputs = attention @ values
    # F sums a^T W o_l over the L query positions, so (a^T W) is applied once to the sum.
    readout = a @ W
    F = outputs.sum(dim=1) @ readout
    # logaddexp(0, z) is log(1 + exp(z)) without overflow, and unlike
    # torch.nn.functional.softplus it has no linear cut-off at z > 20.
    margins = -labels * F
    return torch.logaddexp(torch.zeros_like(margins), margins).mean()


def main(argv):
    args = parse_args(argv)
    tokens_np, labels_np, weights_np = baseline_common.load_inputs_or_exit(args)

    torch.set_num_threads(args.threads)
    tokens = torch.from_numpy(tokens_np)
    labels = torch.from_numpy(labels_np)
    a = torch.from_numpy(weights_np["a"])
    initial_params = [torch.from_numpy(weights_np[name]) for name in ("W", "W_V", "W_K", "W_Q")]

    def train():
        params = [param.clone().requires_grad_(True) for param in initial_params]
        for _ in range(args.steps):
            loss = mean_loss(*params, a, tokens, labels)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for param, grad in zip(params, grads):
                    param.sub_(grad, alpha=args.eta)
        return params

    params, seconds_all, cpu_seconds_all = baseline_common.time_repeats(train, args.repeats)

    with torch.no_grad():
        final_loss = mean_loss(*params, a, tokens, labels).item()

    baseline_common.print_result(
        {
            "framework": "torch-eager",
            "seconds": min(seconds_all),
            "seconds_all": seconds_all,
            "cpu_seconds_all": cpu_seconds_all,
            "final_loss": final_loss,
            "steps": args.steps,
            "eta": args.eta,
            "threads": args.threads,
            "torch_version": torch.__version__,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1:])
