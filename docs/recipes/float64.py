"""float64 parameters keep float64 arithmetic, hyperparameters included."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rmsprop_jax

jax.config.update("jax_enable_x64", True)  # before any array is created (or JAX_ENABLE_X64=1)

lr, decay, eps, num_steps = 0.01, 0.9, 1e-8, 50
scale = np.array([0.5, 2.0, 8.0])
start = np.array([3.0, -1.0, 0.5])

theta, nu = start.copy(), np.zeros(3)  # the rule in NumPy float64
for _ in range(num_steps):
  g = 2 * scale * (theta - 1)
  nu = decay * nu + (1 - decay) * g**2
  theta = theta - lr * g / (np.sqrt(nu) + eps)


def run(decay):
  params = jnp.asarray(start)  # float64 under x64
  optimizer = rmsprop_jax.rmsprop(lr, decay=decay, eps=eps)
  state = optimizer.init(params)
  for _ in range(num_steps):
    updates, state = optimizer.update(2 * scale * (params - 1), state)
    params = optax.apply_updates(params, updates)
  return params, state


params, state = run(decay)  # Python floats: float64 for float64 parameters
print("params:", params.dtype, " nu:", optax.tree_utils.tree_get(state, "nu").dtype)
print("within 1e-12 of NumPy float64:", bool(np.max(np.abs(params - theta)) < 1e-12))

# A hyperparameter given as a float32 array keeps float32's value: 0.9 is 0.8999999762.
params, _ = run(jnp.float32(decay))
print("decay as a float32 array, within 1e-12:", bool(np.max(np.abs(params - theta)) < 1e-12))
params, _ = run(jnp.float64(decay))
print("decay as a float64 array, within 1e-12:", bool(np.max(np.abs(params - theta)) < 1e-12))
