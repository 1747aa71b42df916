"""Loss of the one-layer transformer in JAX (float64), shared by jax_gd.py and diffrax_flow.py.

Importing this module imports JAX and turns on jax_enable_x64, so the scripts call
`baseline_common.configure_xla_threads` before importing it.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (x64 must be on before arrays are made)
import numpy as np  # noqa: E402

TRAINED_NAMES = ("W", "W_V", "W_K", "W_Q")


def mean_loss(params, tokens, labels, a):
    """Return the mean of softplus(-y F) over the samples.

    `params` is a dict of the trained matrices W (m1 x m) and W_V, W_K, W_Q (m x d).
    With one-hot embeddings, column x of W_K is the key of token x, so indexing the
    transposed matrices by token id gives the (n, L, m) keys, queries and values.
    """
    keys = params["W_K"].T[tokens]
    queries = params["W_Q"].T[tokens]
    values = params["W_V"].T[tokens]
    # scores[i, l, h] = k_h . q_l / sqrt(m), normalized over the key position h.
    scores = queries @ jnp.swapaxes(keys, 1, 2) / np.sqrt(params["W_K"].shape[0])
    attention = jax.nn.softmax(scores, axis=2)
    outputs = attention @ values
    # F sums a^T W o_l over the L query positions, so (a^T W) is applied once to the sum.
    readout = a @ params["W"]
    F = outputs.sum(axis=1) @ readout
    # logaddexp(0, z) is log(1 + exp(z)) without overflow.
    return jnp.logaddexp(0.0, -labels * F).mean()


def device_inputs(tokens, labels, weights):
    """Move loaded NumPy inputs to JAX arrays: (params dict, tokens, labels, a)."""
    params = {name: jnp.asarray(weights[name]) for name in TRAINED_NAMES}
    return params, jnp.asarray(tokens), jnp.asarray(labels), jnp.asarray(weights["a"])
