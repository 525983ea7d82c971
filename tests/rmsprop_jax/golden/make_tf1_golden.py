"""Writes tf1_rmsprop.npz: trajectories of tf.compat.v1.train.RMSPropOptimizer.

TensorFlow is not a test dependency; this script is how the golden file was produced:

  python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
  /tmp/tfvenv/bin/python tests/rmsprop_jax/golden/make_tf1_golden.py

The problem is closed-loop (gradients depend on the current parameters) so the trajectory tests
the whole update rule: loss(x) = 0.5 * ||A x - b||^2 + 0.1 * sum(sin(x)) + <noise[t], x>, float32,
100 steps -- the same problem as tests/rmsprop_jax/numpy_reference.py:quadratic_problem.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()

STEPS = 100
rng = np.random.default_rng(0)
A = rng.normal(size=(6, 4)).astype(np.float32)
B = rng.normal(size=(6,)).astype(np.float32)
X0 = rng.normal(size=(4,)).astype(np.float32)
NOISE = rng.normal(size=(STEPS, 4)).astype(np.float32)  # as tests/rmsprop_jax/numpy_reference.py

# name -> (learning rate, decay, momentum, eps, centered); a learning rate may be
# ("exponential", lr, transition_steps, rate).
CONFIGS = {
    "plain": (0.01, 0.9, 0.0, 1e-10, False),
    "momentum": (0.01, 0.9, 0.9, 1e-10, False),
    "centered": (0.01, 0.9, 0.0, 1e-3, True),
    "centered_momentum": (0.005, 0.95, 0.5, 1e-3, True),
    "schedule_momentum": (("exponential", 0.02, 10, 0.5), 0.9, 0.9, 1e-10, False),
}


def trajectory(learning_rate, decay, momentum, eps, centered) -> np.ndarray:
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.get_variable("x", initializer=X0)
    step = tf.compat.v1.train.get_or_create_global_step()
    noise = tf.gather(tf.constant(NOISE), step)
    loss = (
        0.5 * tf.reduce_sum(tf.square(tf.linalg.matvec(A, x) - B))
        + 0.1 * tf.reduce_sum(tf.sin(x))
        + tf.reduce_sum(noise * x)
    )
    if isinstance(learning_rate, tuple):
      _, lr, transition_steps, rate = learning_rate
      learning_rate = tf.compat.v1.train.exponential_decay(lr, step, transition_steps, rate)
    optimizer = tf.compat.v1.train.RMSPropOptimizer(
        learning_rate, decay=decay, momentum=momentum, epsilon=eps, centered=centered
    )
    train = optimizer.minimize(loss, global_step=step)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      path = [session.run(x)]
      for _ in range(STEPS):
        session.run(train)
        path.append(session.run(x))
  return np.stack(path)


def main() -> None:
  arrays: dict[str, Any] = {"A": A, "B": B, "x0": X0, "noise": NOISE}
  for name, config in CONFIGS.items():
    arrays[name] = trajectory(*config)
  out = pathlib.Path(__file__).with_name("tf1_rmsprop.npz")
  np.savez(out, **arrays)
  print(f"wrote {out} with tensorflow {tf.__version__}")


if __name__ == "__main__":
  main()
