"""Optimizer state in bfloat16: half the memory, float32 arithmetic, unbiased rounding."""

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax
from rmsprop_jax import formats

params = {"w": jnp.zeros((1024, 256)), "b": jnp.zeros(256)}  # float32 parameters
target = jax.random.normal(jax.random.key(0), (1024, 256))


def loss_fn(params):
  return jnp.mean((params["w"] + params["b"] - target) ** 2)


def train(optimizer, num_steps=60):
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  p = params
  for _ in range(num_steps):
    p, state = step(p, state)
  return p, state


for name, dtype in (("float32 state", None), ("bfloat16 state", formats.bfloat16())):
  optimizer = rmsprop_jax.rmsprop(1e-2, momentum=0.9, accumulator_dtype=dtype)
  trained, state = train(optimizer)
  state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
  nu = optax.tree_utils.tree_get(state, "nu")
  print(f"{name}: nu {nu['w'].dtype}, params {trained['w'].dtype}, "
        f"state {state_bytes / 2**20:.2f} MiB, loss {loss_fn(trained):.4f}")

# Why the rounding matters: bfloat16 has an 8-bit mantissa. Each step moves nu by
# (1 - decay) * (g^2 - nu); once that is below half of bfloat16's spacing at nu, rounding to
# nearest (jnp.bfloat16) undoes it and nu stops short. Stochastic rounding (formats.bfloat16(),
# the default) rounds up with probability (dropped part) / (spacing): right on average.
# A constant gradient of 1 should drive nu to 1:
for decay in (0.9, 0.99, 0.999):
  row = []
  for dtype in (None, jnp.bfloat16, formats.bfloat16()):
    optimizer = rmsprop_jax.rmsprop(1e-3, decay=decay, accumulator_dtype=dtype)
    ones = jnp.ones(1)

    def step(state, _, optimizer=optimizer, ones=ones):
      return optimizer.update(ones, state)[1], None

    state, _ = jax.lax.scan(step, optimizer.init(ones), length=10_000)
    row.append(float(optax.tree_utils.tree_get(state, "nu")[0]))
  print(f"decay {decay}: nu after 10,000 steps: float32 {row[0]:.4f}, bfloat16 nearest "
        f"{row[1]:.4f}, stochastic {row[2]:.4f}")
