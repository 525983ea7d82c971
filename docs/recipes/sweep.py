"""A learning-rate x decay sweep over your own model: every trial in one compiled program."""

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax


# Your model, loss and data. Here: a tiny MLP fitting a synthetic regression problem.
def init_params(key):
  k1, k2 = jax.random.split(key)
  return {
      "w1": jax.random.normal(k1, (8, 32)) / jnp.sqrt(8.0),
      "b1": jnp.zeros(32),
      "w2": jax.random.normal(k2, (32, 1)) / jnp.sqrt(32.0),
      "b2": jnp.zeros(1),
  }


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


key_x, key_init = jax.random.split(jax.random.key(0))
x = jax.random.normal(key_x, (256, 8))
y = jnp.sin(x[:, :1] * x[:, 1:2]) + 0.5 * x[:, 2:3]

traces = 0


def train(learning_rate, decay, num_steps=300):
  """One whole training run. The hyperparameters are ordinary (traced) arguments."""
  global traces
  traces += 1
  # Decaying the rate to 0 lets every trial settle, so its final loss says how good the
  # hyperparameters are rather than where an oscillation happened to stop.
  schedule = optax.cosine_decay_schedule(learning_rate, decay_steps=num_steps)
  optimizer = rmsprop_jax.rmsprop(schedule, decay=decay)
  params = init_params(key_init)  # the same initialization for every trial

  def step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  _, losses = jax.lax.scan(step, (params, optimizer.init(params)), length=num_steps)
  return losses[-1]


learning_rates = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
decays = [0.9, 0.99, 0.999]
lr_grid, decay_grid = jnp.meshgrid(jnp.array(learning_rates), jnp.array(decays), indexing="ij")

sweep = jax.jit(jax.vmap(train))  # 15 trials, one program
final_loss = sweep(lr_grid.ravel(), decay_grid.ravel()).reshape(lr_grid.shape)

print(f"{lr_grid.size} trials, train traced {traces} time(s)")
print("final loss " + "".join(f"{f'decay {d}':>12}" for d in decays))
for lr, row in zip(learning_rates, final_loss.tolist(), strict=True):
  print(f"lr {lr:<7}" + "".join(f"{loss:12.4f}" for loss in row))
i, j = jnp.unravel_index(jnp.nanargmin(final_loss), final_loss.shape)  # NaN = diverged trial
print(f"best: lr {learning_rates[i]}, decay {decays[j]}, final loss {final_loss[i, j]:.4f}")
