"""Parity with the live optax, PyTorch and Keras 3 implementations and with TF1 golden files.

Every comparison runs a closed loop (gradients depend on the current parameters) for 100 steps,
so differences anywhere in the update rule accumulate and show.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import compat
from tests.rmsprop_jax.numpy_reference import quadratic_problem

STEPS = 100
A, B, X0, NOISE, numpy_grad = quadratic_problem(steps=STEPS)


def loss(x, noise):
  return 0.5 * jnp.sum((A @ x - B) ** 2) + 0.1 * jnp.sum(jnp.sin(x)) + jnp.sum(noise * x)


def run_optax(optimizer, steps=STEPS):
  """Trajectory of x under an optax GradientTransformation, jitted as users run it."""

  @jax.jit
  def step(x, state, noise):
    updates, state = optimizer.update(jax.grad(loss)(x, noise), state, x)
    return optax.apply_updates(x, updates), state

  x = jnp.asarray(X0)
  state = optimizer.init(x)
  path = [np.asarray(x)]
  for t in range(steps):
    x, state = step(x, state, NOISE[t])
    path.append(np.asarray(x))
  return np.stack(path)


# ------------------------------------------------------------------------------- optax

OPTAX_SHARED_OPTIONS = [
    dict(),
    dict(eps_in_sqrt=True),
    dict(centered=True, eps=1e-2),
    dict(centered=True, eps=1e-2, eps_in_sqrt=True),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(initial_scale=1.0, eps_in_sqrt=True),
    dict(bias_correction=True),
    dict(bias_correction=True, momentum=0.5, eps=1e-3),
    dict(decay=0.99, eps=1e-3, momentum=0.8, nesterov=True, centered=True),
]
# Not centered together with bias_correction: there the first step's variance g^2 - g^2 is
# exactly 0 and optax returns sqrt(rounding error) or NaN; see the test below.


@pytest.mark.parametrize("options", OPTAX_SHARED_OPTIONS, ids=str)
@pytest.mark.parametrize(
    "learning_rate",
    [1e-2, optax.warmup_cosine_decay_schedule(0.0, 2e-2, 10, 100, 1e-3)],
    ids=["constant", "schedule"],
)
def test_matches_optax_rmsprop(options, learning_rate):
  options = dict(options)
  options.setdefault("eps_in_sqrt", False)  # optax's default differs; pass it explicitly
  ours = run_optax(rmsprop_jax.rmsprop(learning_rate, **options))
  theirs = run_optax(optax.rmsprop(learning_rate, **options))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_centered_bias_corrected_first_step_is_finite_where_variance_vanishes():
  # Step 1: nu_hat = g^2 and mu_hat = g, so the variance is exactly 0 and the update is
  # -lr * g / eps. Rounding may make nu_hat - mu_hat^2 negative; it is clamped at 0, not NaN.
  g = jnp.array([0.3, -1.7, 2.9, 1e-3], jnp.float32)
  for eps_in_sqrt, denominator in [(False, 1e-3), (True, np.sqrt(1e-3))]:
    optimizer = rmsprop_jax.rmsprop(
        0.1, 0.99, 1e-3, centered=True, bias_correction=True, eps_in_sqrt=eps_in_sqrt
    )
    updates, _ = optimizer.update(g, optimizer.init(g), g)
    np.testing.assert_allclose(updates, -0.1 * g / denominator, rtol=2e-2)


def test_weight_decay_matches_optax_chain_of_decoupled_decay():
  # rmsprop_jax's decay is -lr*wd*param outside the momentum buffer; optax spells it as a chain.
  lr, wd = 1e-2, 0.1
  ours = run_optax(rmsprop_jax.rmsprop(lr, momentum=0.9, weight_decay=wd))
  theirs_tx = optax.chain(
      optax.scale_by_rms(0.9, 1e-8, eps_in_sqrt=False),
      optax.scale(-lr),
      optax.trace(0.9),
  )

  class DecayOutsideMomentum:
    init = theirs_tx.init

    @staticmethod
    def update(g, state, x):
      updates, state = theirs_tx.update(g, state, x)
      return updates - lr * wd * x, state

  np.testing.assert_allclose(ours, run_optax(DecayOutsideMomentum), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PyTorch

PYTORCH_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=1e-2, momentum=0.9),
    dict(lr=5e-3, alpha=0.9, centered=True, eps=1e-2),
    dict(lr=5e-3, centered=True, momentum=0.5, eps=1e-4),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.1, momentum=0.9, centered=True, eps=1e-2),
]


def run_torch(config, lr_lambda=None, steps=STEPS):
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[test]')")
  x = torch.tensor(X0, requires_grad=True)
  optimizer = torch.optim.RMSprop([x], **config)
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) if lr_lambda else None
  path = [X0.copy()]
  for t in range(steps):
    optimizer.zero_grad()
    x.grad = torch.from_numpy(numpy_grad(x.detach().numpy(), t))
    optimizer.step()
    if scheduler:
      scheduler.step()
    path.append(x.detach().numpy().copy())
  return np.stack(path)


@pytest.mark.parametrize("config", PYTORCH_CONFIGS, ids=str)
def test_pytorch_preset_matches_torch(config):
  theirs = run_torch(config)
  ours = run_optax(compat.pytorch_rmsprop(**config))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_pytorch_preset_matches_torch_under_a_schedule(momentum):
  decay_per_step = lambda t: 0.97**t
  theirs = run_torch(dict(lr=2e-2, momentum=momentum), lr_lambda=decay_per_step)
  schedule = lambda count: 2e-2 * 0.97**count
  ours = run_optax(compat.pytorch_rmsprop(lr=schedule, momentum=momentum))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  if momentum:
    # The convention matters: lr inside the buffer (TF/Keras/optax) gives another trajectory.
    lr_inside = run_optax(rmsprop_jax.rmsprop(schedule, 0.99, 1e-8, momentum=momentum))
    assert np.max(np.abs(lr_inside - theirs)) > 1e-3


# ------------------------------------------------------------------------------ Keras 3

KERAS_CONFIGS = [
    dict(learning_rate=1e-2),
    dict(learning_rate=1e-2, momentum=0.9),
    dict(learning_rate=5e-3, rho=0.95, centered=True, epsilon=1e-2),
    dict(learning_rate=1e-2, weight_decay=0.1),
    dict(learning_rate=1e-2, weight_decay=0.1, momentum=0.9, centered=True, epsilon=1e-2),
    dict(learning_rate=("exponential", 2e-2, 10, 0.5), momentum=0.9, weight_decay=0.05),
]


def run_keras(config, steps=STEPS):
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":
    pytest.skip("Keras must run on the JAX backend (KERAS_BACKEND=jax before importing it)")
  config = dict(config)
  if isinstance(config["learning_rate"], tuple):
    _, lr, steps_per_decay, rate = config["learning_rate"]
    config["learning_rate"] = keras.optimizers.schedules.ExponentialDecay(
        lr, steps_per_decay, rate
    )
  variable = keras.Variable(X0.copy(), dtype="float32")
  optimizer = keras.optimizers.RMSprop(**config)
  path = [X0.copy()]
  for t in range(steps):
    grad = numpy_grad(np.asarray(variable.value), t)
    optimizer.apply_gradients([(jnp.asarray(grad), variable)])
    path.append(np.asarray(variable.value).copy())
  return np.stack(path)


@pytest.mark.parametrize("config", KERAS_CONFIGS, ids=str)
def test_keras_preset_matches_keras(config):
  theirs = run_keras(config)
  ours_config = dict(config)
  if isinstance(config["learning_rate"], tuple):
    _, lr, steps_per_decay, rate = config["learning_rate"]
    ours_config["learning_rate"] = optax.exponential_decay(lr, steps_per_decay, rate)
  ours = run_optax(compat.keras_rmsprop(**ours_config))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- TensorFlow 1

GOLDEN = pathlib.Path(__file__).parent / "golden" / "tf1_rmsprop.npz"
TF1_CONFIGS = {  # must match tests/rmsprop_jax/golden/make_tf1_golden.py
    "plain": dict(learning_rate=0.01, decay=0.9, momentum=0.0, epsilon=1e-10),
    "momentum": dict(learning_rate=0.01, decay=0.9, momentum=0.9, epsilon=1e-10),
    "centered": dict(learning_rate=0.01, decay=0.9, momentum=0.0, epsilon=1e-3, centered=True),
    "centered_momentum": dict(
        learning_rate=0.005, decay=0.95, momentum=0.5, epsilon=1e-3, centered=True
    ),
    "schedule_momentum": dict(
        learning_rate=optax.exponential_decay(0.02, 10, 0.5), decay=0.9, momentum=0.9,
        epsilon=1e-10,
    ),
}


@pytest.mark.parametrize("name", sorted(TF1_CONFIGS))
def test_tf1_preset_matches_golden_trajectory(name):
  golden = np.load(GOLDEN)
  np.testing.assert_array_equal(golden["A"], A)  # same problem as the generator
  np.testing.assert_array_equal(golden["x0"], X0)
  np.testing.assert_array_equal(golden["noise"], NOISE)
  ours = run_optax(compat.tf1_rmsprop(**TF1_CONFIGS[name]))
  np.testing.assert_allclose(ours, golden[name], rtol=1e-5, atol=1e-5)


def test_tf1_first_step_shows_the_mean_square_starting_at_one():
  golden = np.load(GOLDEN)["plain"]
  g = numpy_grad(X0, 0).astype(np.float64)
  expected = -0.01 * g / np.sqrt(0.9 * 1.0 + 0.1 * g**2 + 1e-10)
  np.testing.assert_allclose(golden[1] - golden[0], expected, rtol=1e-4)
  keras_like = run_optax(compat.keras_rmsprop(learning_rate=0.01, rho=0.9, epsilon=1e-10))
  assert np.max(np.abs(keras_like - golden)) > 1e-2  # the conventions differ visibly
