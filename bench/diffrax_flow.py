"""Integrate the gradient flow of the one-layer transformer's loss with diffrax Dopri5.

Solves d(theta)/dt = -grad L(theta) for theta = (W, W_V, W_K, W_Q) from t = 0 to
--t-end with the Dormand-Prince 5(4) method (diffrax.Dopri5) and an adaptive step
size from diffrax.PIDController(rtol, atol) with its default coefficients, in float64.
The initial step size is chosen by diffrax (dt0=None).

Prints one JSON line. `seconds` covers only running the compiled solve (the minimum
over --repeats runs), and
`compile_seconds` reports lowering plus compilation. `num_steps` is diffrax's count of
attempted steps, the sum of `num_accepted_steps` and `num_rejected_steps`.
"""

import argparse
import sys
import time

import baseline_common


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    baseline_common.add_input_arguments(parser)
    parser.add_argument("--t-end", type=float, required=True, help="end time of the flow (t = eta * steps for GD)")
    parser.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance of the PID step size controller")
    parser.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance of the PID step size controller")
    parser.add_argument(
        "--max-steps",
        type=baseline_common.positive_int,
        default=1_000_000,
        help="maximum number of attempted steps before the solve stops with an error",
    )
    parser.add_argument(
        "--threads",
        type=baseline_common.positive_int,
        default=1,
        help="CPU threads: 1 turns off XLA's intra-op thread pool, and a larger value keeps XLA's default pool",
    )
    baseline_common.add_repeats_argument(parser)
    args = parser.parse_args(argv)
    if not args.t_end > 0.0:
        parser.error(f"--t-end must be positive, got {args.t_end}")
    if not (args.rtol > 0.0 and args.atol > 0.0):
        parser.error(f"--rtol and --atol must be positive, got {args.rtol} and {args.atol}")
    return args


def main(argv):
    args = parse_args(argv)
    threads = baseline_common.configure_xla_threads(args.threads)
    tokens_np, labels_np, weights_np = baseline_common.load_inputs_or_exit(args)

    import diffrax
    import jax
    import jax.numpy as jnp

    import jax_model

    def negative_gradient(t, params, inputs):
        grads = jax.grad(jax_model.mean_loss)(params, *inputs)
        return jax.tree.map(jnp.negative, grads)

    def solve(params, tokens, labels, a, t_end, rtol, atol):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(negative_gradient),
            diffrax.Dopri5(),
            t0=0.0,
            t1=t_end,
            dt0=None,
            y0=params,
            args=(tokens, labels, a),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=args.max_steps,
            throw=False,
        )
        final_params = jax.tree.map(lambda ys: ys[-1], solution.ys)
        succeeded = solution.result == diffrax.RESULTS.successful
        hit_max_steps = solution.result == diffrax.RESULTS.max_steps_reached
        return final_params, solution.ts[-1], succeeded, hit_max_steps, solution.stats

    params, tokens, labels, a = jax_model.device_inputs(tokens_np, labels_np, weights_np)
    t_end = jnp.float64(args.t_end)
    rtol = jnp.float64(args.rtol)
    atol = jnp.float64(args.atol)

    # t_end, rtol and atol are traced arguments, so one compiled solve serves every value.
    start = time.perf_counter()
    solve_compiled = jax.jit(solve).lower(params, tokens, labels, a, t_end, rtol, atol).compile()
    compile_seconds = time.perf_counter() - start

    solution, seconds_all, cpu_seconds_all = baseline_common.time_repeats(
        lambda: jax.block_until_ready(solve_compiled(params, tokens, labels, a, t_end, rtol, atol)), args.repeats
    )
    final_params, t_final, succeeded, hit_max_steps, stats = solution

    if bool(hit_max_steps):
        print(
            f"error: the diffrax solve stopped at t = {float(t_final)} before t_end = {args.t_end} "
            f"after {int(stats['num_steps'])} attempted steps. Raise --max-steps "
            f"(now {args.max_steps}) or loosen --rtol/--atol.",
            file=sys.stderr,
        )
        sys.exit(1)
    if not bool(succeeded):
        print(
            f"error: the diffrax solve failed at t = {float(t_final)} before t_end = {args.t_end} "
            f"after {int(stats['num_steps'])} attempted steps, for example from a non-finite loss "
            f"or gradient. Check the initial weights and the tolerances.",
            file=sys.stderr,
        )
        sys.exit(1)

    final_loss = float(jax.jit(jax_model.mean_loss)(final_params, tokens, labels, a))

    baseline_common.print_result(
        {
            "framework": "diffrax-dopri5",
            "seconds": min(seconds_all),
            "seconds_all": seconds_all,
            "cpu_seconds_all": cpu_seconds_all,
            "compile_seconds": compile_seconds,
            "final_loss": final_loss,
            "num_steps": int(stats["num_steps"]),
            "num_accepted_steps": int(stats["num_accepted_steps"]),
            "num_rejected_steps": int(stats["num_rejected_steps"]),
            "t_end": args.t_end,
            "rtol": args.rtol,
            "atol": args.atol,
            "threads": threads,
            "diffrax_version": diffrax.__version__,
            "jax_version": jax.__version__,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1:])
