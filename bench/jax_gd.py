"""Train the one-layer transformer with full-batch gradient descent as one jit-compiled JAX loop.

All four matrices W, W_V, W_K, W_Q are updated at once by theta <- theta - eta * grad,
in float64, inside a lax.fori_loop. The loop is compiled ahead of time, so `seconds`
covers only running the compiled loop (the minimum over --repeats runs), and `compile_seconds` reports lowering plus
compilation. Neither includes imports, file loading or the final loss evaluation.
"""

import argparse
import sys
import time

import baseline_common


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    baseline_common.add_input_arguments(parser)
    baseline_common.add_gd_arguments(parser)
    parser.add_argument(
        "--threads",
        type=baseline_common.positive_int,
        default=1,
        help="CPU threads: 1 turns off XLA's intra-op thread pool, and a larger value keeps XLA's default pool",
    )
    baseline_common.add_repeats_argument(parser)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    threads = baseline_common.configure_xla_threads(args.threads)
    tokens_np, labels_np, weights_np = baseline_common.load_inputs_or_exit(args)

    import jax
    import jax.numpy as jnp

    import jax_model

    def train(params, tokens, labels, a, eta, steps):
        gradient = jax.grad(jax_model.mean_loss)

        def step(_, current):
            grads = gradient(current, tokens, labels, a)
            return jax.tree.map(lambda param, grad: param - eta * grad, current, grads)

        return jax.lax.fori_loop(0, steps, step, params)

    params, tokens, labels, a = jax_model.device_inputs(tokens_np, labels_np, weights_np)
    eta = jnp.float64(args.eta)
    steps = jnp.int64(args.steps)

    # eta and steps are traced arguments, so one compiled loop serves every value.
    start = time.perf_counter()
    train_compiled = jax.jit(train).lower(params, tokens, labels, a, eta, steps).compile()
    compile_seconds = time.perf_counter() - start

    final_params, seconds_all, cpu_seconds_all = baseline_common.time_repeats(
        lambda: jax.block_until_ready(train_compiled(params, tokens, labels, a, eta, steps)), args.repeats
    )

    final_loss = float(jax.jit(jax_model.mean_loss)(final_params, tokens, labels, a))

    baseline_common.print_result(
        {
            "framework": "jax-jit",
            "seconds": min(seconds_all),
            "seconds_all": seconds_all,
            "cpu_seconds_all": cpu_seconds_all,
            "compile_seconds": compile_seconds,
            "final_loss": final_loss,
            "steps": args.steps,
            "eta": args.eta,
            "threads": threads,
            "jax_version": jax.__version__,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1:])
