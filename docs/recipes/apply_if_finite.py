"""optax.apply_if_finite: skip steps whose gradients are NaN or infinite."""

import jax.numpy as jnp
import optax

import rmsprop_jax

optimizer = optax.apply_if_finite(rmsprop_jax.rmsprop(1e-2), max_consecutive_errors=3)
params = jnp.array([1.0, 2.0])
state = optimizer.init(params)

gradients = [
    jnp.array([0.5, -0.5]),
    jnp.array([jnp.nan, 1.0]),  # e.g. an overflow in the loss: skipped, state untouched
    jnp.array([0.5, jnp.inf]),
    jnp.array([0.5, -0.5]),
]
for step, grads in enumerate(gradients):
  updates, state = optimizer.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  print(f"step {step}: finite {bool(state.last_finite)!s:<5}, "
        f"params {params[0]:.4f} {params[1]:.4f}, "
        f"skipped in a row {int(state.notfinite_count)}, in all {int(state.total_notfinite)}")
# After max_consecutive_errors skipped steps in a row, the update is applied anyway (and the
# NaN reaches the parameters): training should stop well before that.

# Without the wrapper a NaN gradient reaches nu, and nu stays NaN.
bare = rmsprop_jax.rmsprop(1e-2)
_, bare_state = bare.update(jnp.array([jnp.nan, 1.0]), bare.init(params))
nu = optax.tree_utils.tree_get(bare_state, "nu")
print(f"unwrapped, nu after a NaN gradient: {nu[0]:.4f} {nu[1]:.4f}")
