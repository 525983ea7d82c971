"""Dtypes as users meet them: float64 runs, the bitwise rule per dtype, eps=0, integer leaves."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from tests.rmsprop_jax.numpy_reference import NumpyRmsprop, RmspropConfig, quadratic_problem

FLOAT64_CONFIGS = {
    "plain": RmspropConfig(learning_rate=1e-2, decay=0.9, eps=1e-8),
    "centered": RmspropConfig(learning_rate=1e-2, decay=0.9, eps=1e-3, centered=True),
    "momentum": RmspropConfig(learning_rate=1e-2, decay=0.9, eps=1e-8, momentum=0.9),
    "nesterov_bias_corrected_decayed": RmspropConfig(
        learning_rate=3e-3, decay=0.95, eps=1e-6, eps_in_sqrt=True, momentum=0.5, nesterov=True,
        bias_correction=True, weight_decay=0.1,
    ),
}


def build(config: RmspropConfig, **overrides) -> optax.GradientTransformation:
  kwargs: dict[str, Any] = dict(
      learning_rate=config.learning_rate, decay=config.decay, eps=config.eps,
      eps_in_sqrt=config.eps_in_sqrt, initial_scale=config.initial_scale,
      centered=config.centered, momentum=config.momentum, nesterov=config.nesterov,
      bias_correction=config.bias_correction, weight_decay=config.weight_decay,
  )
  kwargs.update(overrides)
  return rmsprop_jax.rmsprop(**kwargs)


@pytest.mark.parametrize("name", FLOAT64_CONFIGS)
def test_float64_parameters_follow_a_float64_reference_to_1e_12(name):
  """Hyperparameters enter float64 arithmetic as float64 (0.9, not float32's 0.8999999762)."""
  config = FLOAT64_CONFIGS[name]
  a, b, x0, noise, _ = quadratic_problem(seed=3, dim=6, steps=50)
  a, b, noise = (np.asarray(v, np.float64) for v in (a, b, noise))

  def grad(x, t):
    return a.T @ (a @ x - b) + 0.1 * np.cos(x) + noise[t]

  reference_x = np.asarray(x0, np.float64)
  reference = NumpyRmsprop(config, {"x": reference_x})
  with jax.enable_x64(True):
    optimizer = build(config)
    x = jnp.asarray(x0, jnp.float64)
    state = optimizer.init({"x": x})
    step = jax.jit(optimizer.update)
    for t in range(50):
      updates, state = step({"x": jnp.asarray(grad(np.asarray(x), t))}, state, {"x": x})
      x = x + updates["x"]
      reference_x = reference_x + reference.step(
          {"x": grad(reference_x, t)}, {"x": reference_x}
      )["x"]
    assert x.dtype == jnp.float64
    for leaf in jax.tree.leaves(state):
      assert leaf.dtype in (jnp.float64, jnp.int32), leaf.dtype
    np.testing.assert_allclose(np.asarray(x), reference_x, rtol=0, atol=1e-12)
    assert np.max(np.abs(reference_x - np.asarray(x0, np.float64))) > 0.05  # it moved


BITWISE_CONFIGS = {
    "plain": dict(learning_rate=3e-3, decay=0.95, eps=1e-3),
    "centered_nesterov_decayed": dict(
        learning_rate=3e-3, decay=0.95, eps=1e-3, centered=True, momentum=0.9, nesterov=True,
        weight_decay=1e-2, initial_scale=0.1,
    ),
    "bias_corrected_eps_in_sqrt": dict(
        learning_rate=1e-2, decay=0.9, eps=1e-7, eps_in_sqrt=True, bias_correction=True,
        centered=True,
    ),
    "bf16_accumulators": dict(
        learning_rate=1e-2, decay=0.99, eps=1e-8, momentum=0.5, accumulator_dtype=jnp.bfloat16
    ),
}
STRUCTURAL = ("eps_in_sqrt", "centered", "nesterov", "bias_correction", "accumulator_dtype")


def trajectory(hyperparameters, structural, dtype, steps=40):
  optimizer = rmsprop_jax.rmsprop(**hyperparameters, **structural)
  params = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(3, 4), "b": jnp.ones(4, dtype)}

  def loss(p, t):
    return jnp.sum(jnp.sin(p["w"] * t) ** 2) + jnp.sum((p["b"] - t) ** 2)

  def step(carry, t):
    p, state = carry
    updates, state = optimizer.update(jax.grad(loss)(p, t), state, p)
    return (optax.apply_updates(p, updates), state), None

  times = jnp.linspace(0.1, 2.0, steps, dtype=dtype)
  return jax.lax.scan(step, (params, optimizer.init(params)), times)[0]


@pytest.mark.parametrize("name", BITWISE_CONFIGS)
@pytest.mark.parametrize(
    "param_dtype,argument_dtype",
    [("float32", "float32"), ("float64", "float64"), ("float32", "float64"),
     ("bfloat16", "float32")],
)
def test_python_floats_and_jit_arguments_are_bitwise_identical_per_dtype(
    name, param_dtype, argument_dtype
):
  """Static == traced, bit for bit, when the argument has (at least) the leaf's compute dtype."""
  config = dict(BITWISE_CONFIGS[name])
  structural = {k: config.pop(k) for k in STRUCTURAL if k in config}
  with jax.enable_x64("float64" in (param_dtype, argument_dtype)):
    dtype = jnp.dtype(param_dtype)
    static = jax.jit(lambda: trajectory(config, structural, dtype))()
    as_arrays = {k: jnp.asarray(v, argument_dtype) for k, v in config.items()}
    traced = jax.jit(lambda h: trajectory(h, structural, dtype))(as_arrays)
    chex.assert_trees_all_equal(static, traced)
    assert jax.tree.leaves(static[0])[0].dtype == dtype


def test_float32_arguments_for_float64_parameters_are_rounded_as_documented():
  """The documented limit: a float32 hyperparameter is float32's 0.8999999762, even in float64."""
  config = BITWISE_CONFIGS["plain"]
  with jax.enable_x64(True):
    static = jax.jit(lambda: trajectory(config, {}, jnp.float64))()
    as_float32 = {k: jnp.float32(v) for k, v in config.items()}
    traced = jax.jit(lambda h: trajectory(h, {}, jnp.float64))(as_float32)
    difference = np.max(np.abs(np.asarray(static[0]["w"]) - np.asarray(traced[0]["w"])))
  assert 0 < difference < 1e-6


# ------------------------------------------------------------------ eps = 0, zero gradients


@pytest.mark.parametrize(
    "options",
    [{}, {"centered": True}, {"eps_in_sqrt": True}, {"bias_correction": True},
     {"momentum": 0.9, "nesterov": True}],
    ids=lambda o: "-".join(o) or "plain",
)
def test_zero_gradient_with_eps_zero_gives_zero_update_not_nan(options):
  config = RmspropConfig(learning_rate=0.1, decay=0.9, eps=0.0, **options)
  optimizer = build(config)
  params = {"w": jnp.zeros(4)}
  state = optimizer.init(params)
  reference = NumpyRmsprop(config, {"w": np.zeros(4)})
  # Entry 0 stays 0, entry 1 becomes nonzero later, entries 2 and 3 are nonzero throughout.
  schedule = [[0.0, 0.0, 1.0, -2.0], [0.0, 0.0, 0.5, 1.0], [0.0, 3.0, -1.0, 0.25]]
  for grad in schedule:
    grads = {"w": jnp.asarray(grad, jnp.float32)}
    updates, state = jax.jit(optimizer.update)(grads, state, params)
    expected = reference.step({"w": np.asarray(grad)}, {"w": np.zeros(4)})["w"]
    chex.assert_tree_all_finite(updates)
    np.testing.assert_array_equal(updates["w"][0], 0.0)
    # float32 against a float64 re-derivation: Nesterov's g + momentum * m subtracts nearly
    # equal terms at entry 3, so a few float32 roundings show at 1e-6 on some CPUs.
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)
  with np.errstate(invalid="ignore"):
    assert np.isnan(np.float32(0.0) / (np.sqrt(np.float32(0.0)) + np.float32(0.0)))  # the bug


def test_zero_gradient_update_is_the_gradient_itself_and_does_not_hide_a_nan_state():
  """Only 0/0 changes: a zero gradient on a live state gives g (signed zero), a NaN state NaN."""
  optimizer = rmsprop_jax.scale_by_rmsprop(decay=0.9, eps=0.0)
  state = optimizer.init(jnp.zeros(4))
  state = state._replace(nu=jnp.array([0.0, 0.5, jnp.nan, 0.0]))
  grads = jnp.array([-0.0, -0.0, 0.0, 0.0])
  updates, _ = optimizer.update(grads, state)
  np.testing.assert_array_equal(np.signbit(updates), [True, True, False, False])
  np.testing.assert_array_equal(np.isnan(updates), [False, False, True, False])


# ------------------------------------------------------------------ integer leaves


def test_integer_gradients_and_params_raise_naming_the_leaf_and_the_fix():
  optimizer = rmsprop_jax.rmsprop(1e-2, momentum=0.9)
  params = {"w": jnp.ones(3), "step": jnp.zeros((), jnp.int32)}
  with pytest.raises(TypeError, match=r"\['step'\] of the params has dtype int32.*optax.masked"):
    optimizer.init(params)
  float_state = optimizer.init({"w": jnp.ones(3), "step": jnp.zeros(())})
  grads = {"w": jnp.ones(3), "step": jnp.zeros((), jnp.int32)}
  with pytest.raises(TypeError, match=r"\['step'\] of the updates has dtype int32.*set_to_zero"):
    optimizer.update(grads, float_state, params)
  with pytest.raises(TypeError, match=r"\['step'\].*float0"):
    float0_grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2), allow_int=True)(params)
    optimizer.update(float0_grads, float_state, params)
  with pytest.raises(TypeError, match=r"\['step'\].*int32"):
    learning_rate = rmsprop_jax.scale_by_learning_rate(0.1)
    learning_rate.update(grads, learning_rate.init(grads))


def test_the_suggested_mask_freezes_an_integer_leaf():
  params = {"w": jnp.ones(3), "step": jnp.zeros((), jnp.int32)}
  optimizer = optax.masked(rmsprop_jax.rmsprop(1e-2), {"w": True, "step": False})
  state = optimizer.init(params)
  grads = {"w": jnp.ones(3), "step": jnp.zeros((), jnp.int32)}
  updates, _ = optimizer.update(grads, state, params)
  np.testing.assert_allclose(updates["w"], -1e-2 * np.sqrt(10.0) * np.ones(3), rtol=1e-6)
