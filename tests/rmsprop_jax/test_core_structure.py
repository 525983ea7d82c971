"""One state structure whatever the hyperparameters' types: floats, arrays, tracers, injected."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import compat

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
GRADS = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -2.0, 0.0])}

# Structural options only; the numbers are added by `numbers` below.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "centered": {"centered": True},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.0, "nesterov": True},
    "bias_correction_eps_in_sqrt": {"bias_correction": True, "eps_in_sqrt": True},
    "weight_decay": {"weight_decay": 1e-2},
    "weight_decay_zero_masked": {"weight_decay": 0.0, "weight_decay_mask": {"w": True, "b": False}},
    "bf16_centered_momentum": {
        "centered": True, "momentum": 0.5, "accumulator_dtype": jnp.bfloat16,
    },
    "schedule": {"learning_rate": optax.linear_schedule(1e-2, 1e-3, 10), "momentum": 0.9},
}
NUMBERS = {"learning_rate": 1e-2, "decay": 0.9, "eps": 1e-8, "initial_scale": 0.0,
           "weight_decay": 0.0}


def numbers(variant):
  """The variant's keyword arguments with every numeric default spelt out."""
  kwargs: dict[str, Any] = dict(NUMBERS)
  kwargs.update(VARIANTS[variant])
  return kwargs


def structure(tree: Any) -> Any:
  """``jax.tree.structure``; jaxlib ships no stub for ``PyTreeDef``, so mypy cannot compare it."""
  return jax.tree.structure(tree)


def as_arrays(kwargs):
  return {
      k: jnp.float32(v) if isinstance(v, float) and not isinstance(v, bool) else v
      for k, v in kwargs.items()
  }


@pytest.mark.parametrize("variant", VARIANTS)
def test_floats_arrays_tracers_and_inject_hyperparams_share_one_state_structure(variant):
  kwargs = numbers(variant)
  static = rmsprop_jax.rmsprop(**kwargs)
  reference = structure(static.init(PARAMS))
  # The library's defaults, not spelt out, are the same optimizer.
  defaults = {k: v for k, v in kwargs.items() if k not in NUMBERS or k in VARIANTS[variant]}
  assert structure(rmsprop_jax.rmsprop(**defaults).init(PARAMS)) == reference
  assert structure(rmsprop_jax.rmsprop(**as_arrays(kwargs)).init(PARAMS)) == reference

  numeric = {k: v for k, v in as_arrays(kwargs).items() if isinstance(v, jax.Array)}
  structural = {k: v for k, v in kwargs.items() if k not in numeric}
  traced = jax.jit(lambda h: rmsprop_jax.rmsprop(**h, **structural).init(PARAMS))(numeric)
  assert structure(traced) == reference

  # A dtype is callable, so inject_hyperparams would take it for a schedule; say it is static.
  injected = optax.inject_hyperparams(
      rmsprop_jax.rmsprop, static_args=("accumulator_dtype",)
  )(**kwargs)
  injected_state = injected.init(PARAMS)
  assert structure(injected_state.inner_state) == reference
  # The update keeps it, and (float32 throughout) gives the same bits as the static optimizer.
  static_updates, static_state = jax.jit(static.update)(GRADS, static.init(PARAMS), PARAMS)
  injected_updates, injected_state = jax.jit(injected.update)(GRADS, injected_state, PARAMS)
  chex.assert_trees_all_equal(injected_state.inner_state, static_state)
  chex.assert_trees_all_equal(injected_updates, static_updates)


def test_inject_hyperparams_state_fits_the_static_optimizer_and_back():
  """A state (a checkpoint) from either optimizer runs in the other."""
  static = rmsprop_jax.rmsprop(5e-3)
  injected = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=5e-3)
  static_state = static.init(PARAMS)
  inner_from_static = injected.init(PARAMS)._replace(inner_state=static_state)
  updates, _ = jax.jit(injected.update)(GRADS, inner_from_static, PARAMS)
  expected, _ = static.update(GRADS, static_state)
  chex.assert_trees_all_equal(updates, expected)
  updates, _ = static.update(GRADS, injected.init(PARAMS).inner_state)
  chex.assert_trees_all_equal(updates, expected)


def test_the_chain_has_four_stages_with_an_identity_for_absent_momentum():
  without = rmsprop_jax.rmsprop(1e-2).init(PARAMS)
  with_momentum = rmsprop_jax.rmsprop(1e-2, momentum=0.9).init(PARAMS)
  assert len(without) == len(with_momentum) == 4
  assert without[2] == optax.EmptyState()
  assert isinstance(with_momentum[2], rmsprop_jax.MomentumState)


@pytest.mark.parametrize(
    "factory,kwargs",
    [
        (compat.pytorch_rmsprop, {"lr": 1e-2, "weight_decay": 1e-2, "momentum": 0.9}),
        (compat.pytorch_rmsprop, {"lr": 1e-2, "weight_decay": 0.0, "centered": True}),
        (compat.keras_rmsprop, {"learning_rate": 1e-2, "weight_decay": 1e-2, "momentum": 0.5}),
        (compat.keras_rmsprop, {"learning_rate": 1e-2, "weight_decay": None}),
        (compat.tf1_rmsprop, {"learning_rate": 1e-2, "momentum": 0.9}),
    ],
)
def test_presets_structure_does_not_depend_on_number_types(factory, kwargs):
  static = factory(**kwargs)
  reference = structure(static.init(PARAMS))
  injected = optax.inject_hyperparams(factory)(**kwargs)
  if kwargs.get("momentum", 0.0) != 0.0:  # momentum 0 as a number: no buffer, as documented
    assert structure(injected.init(PARAMS).inner_state) == reference
  arrays = as_arrays(kwargs)
  if "momentum" in kwargs and kwargs["momentum"] == 0.0:
    arrays["momentum"] = 0.0
  assert structure(factory(**arrays).init(PARAMS)) == reference
  np.testing.assert_array_equal(
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(factory(**arrays).update(
          GRADS, factory(**arrays).init(PARAMS), PARAMS)[0])]),
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(static.update(
          GRADS, static.init(PARAMS), PARAMS)[0])]),
  )


def test_presets_allocate_no_momentum_buffer_for_momentum_zero_like_their_frameworks():
  for factory in (compat.pytorch_rmsprop, compat.keras_rmsprop):
    state = factory().init(PARAMS)
    assert not optax.tree_utils.tree_get_all_with_path(state, "trace")
    assert factory(momentum=0.9).init(PARAMS)[2].trace["w"].shape == (2, 3)
