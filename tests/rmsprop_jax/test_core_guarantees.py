"""The promises optax does not keep (issues #1532, #583, #577) and every bad-input error."""

from __future__ import annotations

import math
from typing import Any, cast

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import compat

HYPERPARAMETERS = dict(
    learning_rate=3e-3, decay=0.95, eps=1e-3, momentum=0.9, weight_decay=1e-2, initial_scale=0.1
)


def trajectory(hyperparameters, steps=50):
  """Trains with hyperparameters that are whatever was passed: floats or traced arrays."""
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
  optimizer = rmsprop_jax.rmsprop(centered=True, nesterov=True, **hyperparameters)

  def loss(p, t):
    return jnp.sum(jnp.sin(p["w"] * t) ** 2) + jnp.sum((p["b"] - t) ** 2)

  def step(carry, t):
    p, state = carry
    updates, state = optimizer.update(jax.grad(loss)(p, t), state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, state), _ = jax.lax.scan(
      step, (params, optimizer.init(params)), jnp.linspace(0.1, 2.0, steps)
  )
  return params, state


def test_python_floats_and_float32_jit_arguments_are_bitwise_identical():
  static = jax.jit(lambda: trajectory(HYPERPARAMETERS))()
  as_arrays = {k: jnp.float32(v) for k, v in HYPERPARAMETERS.items()}
  traced = jax.jit(trajectory)(as_arrays)
  chex.assert_trees_all_equal(static, traced)


def test_python_floats_and_inject_hyperparams_are_bitwise_identical():
  params = jnp.linspace(-1.0, 1.0, 8)
  static = rmsprop_jax.rmsprop(3e-3, 0.95, 1e-3, momentum=0.9, centered=True)
  injected = optax.inject_hyperparams(rmsprop_jax.rmsprop)(
      3e-3, 0.95, 1e-3, momentum=0.9, centered=True
  )

  def run(optimizer):
    @jax.jit
    def step(p, state, t):
      updates, state = optimizer.update(jnp.cos(p * t), state, p)
      return p + updates, state

    p, state = params, optimizer.init(params)
    for t in np.linspace(0.5, 3.0, 50, dtype=np.float32):
      p, state = step(p, state, t)
    return p

  np.testing.assert_array_equal(run(static), run(injected))


def test_jitted_step_compiles_once_whatever_the_hyperparameter_values():
  traces = []

  @jax.jit
  def train_step(params, state, grads, learning_rate, decay, momentum):
    traces.append(1)
    optimizer = rmsprop_jax.rmsprop(learning_rate, decay, momentum=momentum)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jnp.ones(5)
  state = rmsprop_jax.rmsprop(1e-3, momentum=0.9).init(params)
  values = [(1e-3, 0.9, 0.9), (3e-2, 0.99, 0.5), (0.1, 0.5, 0.0), (0.0, 1.0, 0.1)]
  for lr, decay, momentum in values:
    params, state = train_step(params, state, jnp.ones(5), lr, decay, momentum)
  assert len(traces) == 1
  assert cast(Any, train_step)._cache_size() == 1


# ------------------------------------------------------------------------ bad input

BAD_VALUES = [
    ("learning_rate", -1e-3, r"learning_rate must be a finite number in \[0, inf\]"),
    ("learning_rate", math.nan, "learning_rate"),
    ("learning_rate", np.float32("nan"), "learning_rate"),
    ("decay", 1.5, r"decay must be a finite number in \[0, 1\], got 1.5"),
    ("decay", -0.1, r"decay .* \[0, 1\]"),
    ("decay", jnp.float32(2.0), "decay"),
    ("eps", -1e-8, r"eps must be a finite number in \[0, inf\]"),
    ("momentum", 1.0, r"momentum must be a finite number in \[0, 1\), got 1.0"),
    ("momentum", -0.5, "momentum"),
    ("weight_decay", -0.1, "weight_decay"),
    ("initial_scale", -1.0, "initial_scale"),
]


@pytest.mark.parametrize("name,value,message", BAD_VALUES, ids=lambda v: str(v))
def test_invalid_hyperparameters_raise_at_build_time(name, value, message):
  with pytest.raises(ValueError, match=message):
    rmsprop_jax.rmsprop(**{name: value})


@pytest.mark.parametrize(
    "factory,kwargs,message",
    [
        (compat.pytorch_rmsprop, dict(alpha=1.2), "alpha"),
        (compat.pytorch_rmsprop, dict(lr=-1.0), "lr"),
        (compat.keras_rmsprop, dict(rho=-0.2), "rho"),
        (compat.keras_rmsprop, dict(epsilon=-1.0), "epsilon"),
        (compat.tf1_rmsprop, dict(learning_rate=0.1, momentum=1.0), "momentum"),
        (rmsprop_jax.scale_by_rmsprop, dict(decay=2.0), "decay"),
    ],
)
def test_presets_name_their_own_arguments(factory, kwargs, message):
  with pytest.raises(ValueError, match=message):
    factory(**kwargs)


def test_non_scalar_and_non_numeric_hyperparameters_are_rejected():
  with pytest.raises(ValueError, match=r"learning_rate must be a scalar, got an array of shape"):
    rmsprop_jax.rmsprop(learning_rate=jnp.array([1e-3, 1e-2]))
  with pytest.raises(TypeError, match="decay must be a real number"):
    rmsprop_jax.rmsprop(decay=cast(Any, "0.9"))
  with pytest.raises(TypeError, match="eps must be a real number"):
    rmsprop_jax.rmsprop(eps=True)
  with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
    rmsprop_jax.rmsprop(nesterov=True)


def test_traced_hyperparameters_are_not_checked_and_do_not_break():
  def first_update(lr, decay, eps, momentum):
    optimizer = rmsprop_jax.rmsprop(lr, decay, eps, momentum=momentum, weight_decay=lr)
    params = jnp.ones(3)
    return optimizer.update(params, optimizer.init(params), params)[0]

  updates = jax.jit(first_update)(-1.0, 2.0, 0.1, 0.5)  # invalid, but traced: not checkable
  assert updates.shape == (3,)
  batched = jax.vmap(first_update)(jnp.ones(4), jnp.full(4, 0.9), jnp.full(4, 1e-3), jnp.zeros(4))
  assert batched.shape == (4, 3)


def test_gradient_tree_mismatch_names_the_leaf():
  params = {"encoder": {"w": jnp.ones((3,)), "b": jnp.ones(())}, "head": jnp.ones((2, 2))}
  optimizer = rmsprop_jax.rmsprop(1e-2)
  state = optimizer.init(params)
  broadcastable = {"encoder": {"w": jnp.ones((1,)), "b": jnp.ones(())}, "head": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match=r"\['encoder'\]\['w'\].*shape \(1,\).*shape \(3,\)"):
    optimizer.update(broadcastable, state, params)
  missing = {"encoder": {"w": jnp.ones((3,))}, "head": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match=r"missing leaves \[\"\['encoder'\]\['b'\]\"\]"):
    optimizer.update(missing, state, params)
  with pytest.raises(ValueError, match="shape"):
    jax.jit(optimizer.update)(broadcastable, state, params)


def test_weight_decay_without_params_and_mismatched_params():
  optimizer = rmsprop_jax.rmsprop(1e-2, weight_decay=0.1)
  params = {"w": jnp.ones(3)}
  state = optimizer.init(params)
  with pytest.raises(ValueError, match="needs the parameters"):
    optimizer.update(params, state)
  with pytest.raises(ValueError, match=r"\['w'\].*params"):
    optimizer.update(params, state, {"w": jnp.ones(1)})


def test_weight_decay_of_zero_needs_no_params_and_accepts_a_mask():
  """The default weight_decay=0 keeps `update(grads, state)` working, as in optax.rmsprop."""
  params = {"w": jnp.array([1.0, -2.0])}
  plain = rmsprop_jax.rmsprop(1e-2)
  updates, _ = plain.update(params, plain.init(params))
  chex.assert_trees_all_close(updates, {"w": jnp.array([-1e-2, 1e-2]) * math.sqrt(10)})
  masked = rmsprop_jax.rmsprop(1e-2, weight_decay_mask={"w": True})
  chex.assert_trees_all_equal(masked.update(params, masked.init(params))[0], updates)


def test_complex_parameters_refuse_a_real_accumulator_dtype():
  optimizer = rmsprop_jax.rmsprop(1e-2, centered=True, accumulator_dtype=jnp.bfloat16)
  with pytest.raises(ValueError, match=r"complex parameter \['z'\]"):
    optimizer.init({"z": jnp.ones(2, jnp.complex64)})
