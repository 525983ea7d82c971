"""RMSprop at one byte per parameter: block-wise 8-bit state with formats.int8()."""

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax
from rmsprop_jax import formats

# A two-layer MLP fitting a random teacher network: 20,752 parameters.
key_x, key_teacher, key_init = jax.random.split(jax.random.key(0), 3)
inputs = jax.random.normal(key_x, (512, 64))
teacher = jax.random.normal(key_teacher, (64, 16)) / 8.0
targets = jnp.tanh(inputs @ teacher)
k1, k2 = jax.random.split(key_init)
params = {
    "w1": jax.random.normal(k1, (64, 256)) / 8.0, "b1": jnp.zeros(256),
    "w2": jax.random.normal(k2, (256, 16)) / 16.0, "b2": jnp.zeros(16),
}
num_params = sum(leaf.size for leaf in jax.tree.leaves(params))


def loss_fn(params):
  hidden = jax.nn.relu(inputs @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] + params["b2"] - targets) ** 2)


def train(optimizer, num_steps=300):
  @jax.jit
  def step(carry, _):
    params, state = carry
    grads = jax.grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (trained, state), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=num_steps)
  return trained, state


# decay=0.99: where rounding to nearest stalls a moving average (see the bfloat16 recipe).
choices = {
    "float32": None,
    "bfloat16, nearest": jnp.bfloat16,
    "bfloat16, stochastic": formats.bfloat16(),
    "int8, stochastic": formats.int8(),
}
reference = None
for name, accumulator_dtype in choices.items():
  learning_rate = optax.cosine_decay_schedule(3e-3, 300)  # to 0: a final loss without jitter
  optimizer = rmsprop_jax.rmsprop(learning_rate, decay=0.99, accumulator_dtype=accumulator_dtype)
  trained, state = train(optimizer)
  loss = float(loss_fn(trained))
  reference = reference or loss
  print(f"{name:21s} {formats.state_nbytes(state) / num_params:.2f} bytes/param, "
        f"final loss {loss / reference:.2f}x float32's")

# int8 keeps leaves under min_size (4,096) entries in float32, as bitsandbytes does: here the
# biases. What the int8 state holds for w1: a code per entry and a float32 scale per block.
nu = optax.tree_utils.tree_get(state, "nu")
print(f"nu['w1']: codes {nu['w1'].codes.dtype}{list(nu['w1'].codes.shape)}, "
      f"scales {nu['w1'].scales.dtype}{list(nu['w1'].scales.shape)}; "
      f"nu['b1']: {nu['b1'].dtype}{list(nu['b1'].shape)}")
