"""Numerics at the edges: half-precision parameters, decay=1 with bias correction, eps=0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import scale_by_rmsprop


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_parameters_keep_float32_state_and_answer(dtype):
  optimizer = rmsprop_jax.rmsprop(1e-3, momentum=0.9, centered=True)
  params = {"w": jnp.zeros(3, dtype)}
  grads = {"w": jnp.asarray([1e-4, -1e-4, 1.0], dtype)}
  updates, state = optimizer.update(grads, optimizer.init(params), params)
  for name in ("nu", "mu", "trace"):
    assert optax.tree_utils.tree_get(state, name)["w"].dtype == jnp.float32
  assert updates["w"].dtype == dtype
  # float32 arithmetic's answer, -lr * g / sqrt(0.1 g^2 - 0.01 g^2) = -lr * sign(g) / 0.3; a
  # float16 nu (g^2 = 1e-8 underflows) gave -10.
  expected = -1e-3 * np.sign([1.0, -1.0, 1.0]) / 0.3
  np.testing.assert_allclose(np.asarray(updates["w"], np.float32), expected, rtol=1e-2)
  # Asked for explicitly, half-precision storage is still available.
  state = rmsprop_jax.rmsprop(1e-3, accumulator_dtype=dtype).init(params)
  assert optax.tree_utils.tree_get(state, "nu")["w"].dtype == dtype


def test_decay_one_with_bias_correction_is_refused():
  with pytest.raises(ValueError, match="decay=1 with bias_correction"):
    scale_by_rmsprop(decay=1.0, bias_correction=True)
  with pytest.raises(ValueError, match="decay=1 with bias_correction"):
    rmsprop_jax.rmsprop(1e-2, decay=1, bias_correction=True)
  scale_by_rmsprop(decay=1.0)  # without bias correction a constant nu is well defined


@pytest.mark.parametrize("eps_in_sqrt", [False, True])
def test_eps_zero_with_underflowing_squares_is_finite_and_differentiable(eps_in_sqrt):
  transformation = scale_by_rmsprop(0.9, eps=0.0, eps_in_sqrt=eps_in_sqrt)
  grads = jnp.asarray([1e-30, 0.0, 1.0, -2.0])
  state = transformation.init(grads)
  updates, _ = transformation.update(grads, state)
  assert np.all(np.isfinite(np.asarray(updates)))
  # Guarded entries (denominator 0) pass their gradient through; the others are unchanged.
  np.testing.assert_array_equal(updates[:2], grads[:2])
  np.testing.assert_allclose(updates[2:], np.sign([1.0, -2.0]) / np.sqrt(0.1), rtol=1e-6)

  def total(g):
    return jnp.sum(transformation.update(g, state)[0])

  gradient = jax.grad(total)(grads)
  assert np.all(np.isfinite(np.asarray(gradient))), gradient
  np.testing.assert_array_equal(gradient[:2], 1.0)


def test_centered_bias_corrected_first_step_is_lr_g_over_eps():
  # Documented, not changed: the centered, bias-corrected first variance is g^2 - g^2 = 0.
  optimizer = rmsprop_jax.rmsprop(0.1, centered=True, bias_correction=True)
  updates, _ = optimizer.update({"w": jnp.asarray([0.5])}, optimizer.init({"w": jnp.zeros(1)}))
  np.testing.assert_allclose(updates["w"], [-5e6], rtol=1e-3)
  # The way out the docstring gives: a larger eps bounds the first step by lr * g / eps.
  optimizer = rmsprop_jax.rmsprop(0.1, centered=True, bias_correction=True, eps=1.0)
  updates, _ = optimizer.update({"w": jnp.asarray([0.5])}, optimizer.init({"w": jnp.zeros(1)}))
  np.testing.assert_allclose(updates["w"], [-0.05], rtol=1e-3)
