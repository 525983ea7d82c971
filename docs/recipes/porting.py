"""Porting RMSprop from PyTorch, Keras or TF1: the preset, checked against the framework's rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rmsprop_jax
from rmsprop_jax import compat

# Each framework's update rule, in NumPy, as its documentation and source define it.
# g: gradient, v: mean square, b: momentum buffer, theta: the parameter.


def torch_rule(theta, g, v, b, lr, alpha, eps, weight_decay, momentum):
  g = g + weight_decay * theta  # L2: added to the gradient first
  v = alpha * v + (1 - alpha) * g**2
  b = momentum * b + g / (np.sqrt(v) + eps)  # eps outside the root
  return theta - lr * b, v, b  # lr after the buffer


def keras_rule(theta, g, v, b, lr, rho, eps, weight_decay, momentum):
  theta = theta - lr * weight_decay * theta  # decoupled, outside the momentum buffer
  v = rho * v + (1 - rho) * g**2
  b = momentum * b + lr * g / np.sqrt(v + eps)  # eps inside the root, lr inside the buffer
  return theta - b, v, b


def tf1_rule(theta, g, v, b, lr, decay, eps, weight_decay, momentum):
  del weight_decay  # TF1's RMSPropOptimizer has none
  v = decay * v + (1 - decay) * g**2  # v starts at 1, not 0
  b = momentum * b + lr * g / np.sqrt(v + eps)
  return theta - b, v, b


def max_gap(optimizer, rule, v0, num_steps=50, **hparams):
  """Runs ``optimizer`` and ``rule`` on the loss sum((theta - 1)^2 * scale); their largest gap."""
  scale = np.array([0.5, 2.0, 8.0])
  theta_np = np.array([3.0, -1.0, 0.5])
  v, b = np.full(3, v0), np.zeros(3)
  params = jnp.asarray(theta_np, jnp.float32)
  state = optimizer.init(params)
  gap = 0.0
  for _ in range(num_steps):
    theta_np, v, b = rule(theta_np, 2 * scale * (theta_np - 1), v, b, **hparams)
    grads = 2 * jnp.asarray(scale, jnp.float32) * (params - 1)
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    gap = max(gap, float(np.max(np.abs(np.asarray(params) - theta_np))))
  return gap


# torch.optim.RMSprop(params, lr=1e-2, alpha=0.9, momentum=0.9, weight_decay=1e-2)
torch_like = compat.pytorch_rmsprop(lr=1e-2, alpha=0.9, momentum=0.9, weight_decay=1e-2)
# keras.optimizers.RMSprop(learning_rate=1e-2, rho=0.9, momentum=0.9, weight_decay=1e-2)
keras_like = compat.keras_rmsprop(learning_rate=1e-2, rho=0.9, momentum=0.9, weight_decay=1e-2)
# tf.compat.v1.train.RMSPropOptimizer(1e-2, decay=0.9, momentum=0.9)
tf1_like = compat.tf1_rmsprop(1e-2, decay=0.9, momentum=0.9)

common = dict(lr=1e-2, weight_decay=1e-2, momentum=0.9)
gaps = {
    "PyTorch": max_gap(torch_like, torch_rule, 0.0, alpha=0.9, eps=1e-8, **common),
    "Keras 3": max_gap(keras_like, keras_rule, 0.0, rho=0.9, eps=1e-7, **common),
    "TF1": max_gap(tf1_like, tf1_rule, 1.0, decay=0.9, eps=1e-10, **common),
}
for name, gap in gaps.items():
  print(f"{name:<8} preset follows the framework's rule for 50 steps: {gap < 1e-5}")

# The same options through rmsprop_jax.rmsprop (e.g. to add a weight_decay_mask):
keras_as_rmsprop = rmsprop_jax.rmsprop(
    1e-2, decay=0.9, eps=1e-7, eps_in_sqrt=True, momentum=0.9, weight_decay=1e-2
)
tf1_as_rmsprop = rmsprop_jax.rmsprop(
    1e-2, decay=0.9, eps=1e-10, eps_in_sqrt=True, initial_scale=1.0, momentum=0.9
)
print("rmsprop(eps_in_sqrt=True, ...) = Keras:",
      max_gap(keras_as_rmsprop, keras_rule, 0.0, rho=0.9, eps=1e-7, **common) < 1e-5)
print("rmsprop(eps_in_sqrt=True, initial_scale=1.0, ...) = TF1:",
      max_gap(tf1_as_rmsprop, tf1_rule, 1.0, decay=0.9, eps=1e-10, **common) < 1e-5)

# Same name, same learning rate, every other argument at its default: different steps.
defaults = {
    "torch.optim.RMSprop": compat.pytorch_rmsprop(lr=1e-3),
    "keras RMSprop": compat.keras_rmsprop(learning_rate=1e-3),
    "tf1 RMSPropOptimizer": compat.tf1_rmsprop(1e-3),
    "optax.rmsprop": optax.rmsprop(1e-3),
    "rmsprop_jax.rmsprop": rmsprop_jax.rmsprop(1e-3),
}


def step_sizes(optimizer, num_steps=1000):
  """|update| / learning rate for a constant gradient of 0.01."""
  grads = jnp.full(1, 0.01)

  def step(state, _):
    updates, state = optimizer.update(grads, state)
    return state, jnp.abs(updates[0]) / 1e-3

  return jax.lax.scan(step, optimizer.init(grads), length=num_steps)[1]


print("step / lr at step:        1       10      100     1000")
for name, optimizer in defaults.items():
  sizes = step_sizes(optimizer)
  print(f"{name:<21}" + "".join(f"{float(sizes[i - 1]):9.3f}" for i in (1, 10, 100, 1000)))
