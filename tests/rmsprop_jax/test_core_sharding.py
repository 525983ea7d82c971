"""Optimizer state sharded like the parameters, built as users build it: ``optimizer.init(params)``.

8 simulated CPU devices need ``XLA_FLAGS`` before JAX starts, so the checks run in a fresh
interpreter and print one JSON line; the tests below read it. On a 4x2 mesh (Auto axes, and
Explicit axes under ``jax.set_mesh``) every state leaf that mirrors a parameter must carry
exactly that parameter's sharding after eager init, after jitted init and after an update, and
the compiled update must contain no collective.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests.conftest import result_line, run_in_subprocess

# Left out of `make test-fast`: a fresh interpreter with 8 simulated devices (~25 s).
pytestmark = pytest.mark.slow

CHECK = r"""
import json, re
import jax, jax.numpy as jnp, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import rmsprop_jax

VARIANTS = {
    "plain": lambda: rmsprop_jax.rmsprop(1e-2),
    "centered": lambda: rmsprop_jax.rmsprop(1e-2, centered=True),
    "momentum": lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9),
    "nesterov_centered": lambda: rmsprop_jax.rmsprop(
        1e-2, centered=True, momentum=0.9, nesterov=True),
    "weight_decay_masked": lambda: rmsprop_jax.rmsprop(
        1e-2, momentum=0.5, weight_decay=1e-2,
        weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
    "bf16_accumulators": lambda: rmsprop_jax.rmsprop(
        1e-2, centered=True, momentum=0.9, accumulator_dtype=jnp.bfloat16),
    "inject_hyperparams": lambda: optax.inject_hyperparams(rmsprop_jax.rmsprop)(
        1e-2, centered=True, momentum=0.9),
    "pytorch_preset": lambda: rmsprop_jax.compat.pytorch_rmsprop(
        1e-2, momentum=0.9, weight_decay=1e-2, centered=True),
}
SPECS = {"w": P("data", "model"), "b": P("model"), "v": P("data"), "s": P()}
SHAPES = {"w": (8, 4), "b": (4,), "v": (16,), "s": ()}
COLLECTIVE = re.compile(r"all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all")


def place(mesh):
  return {
      k: jax.device_put(jnp.linspace(-1.0, 1.0, max(1, int(jnp.prod(jnp.array(shape)))))
                        .reshape(shape), NamedSharding(mesh, SPECS[k]))
      for k, shape in SHAPES.items()
  }


def mismatches(state, params):
  found, checked = [], 0
  for field in ("nu", "mu", "trace"):
    for path, mirror in optax.tree_utils.tree_get_all_with_path(state, field):
      for key, param in params.items():
        checked += 1
        if mirror[key].sharding != param.sharding:
          found.append(f"{field}[{key!r}]: {mirror[key].sharding} != {param.sharding}")
  return found, checked


def check(mode, variant):
  axis_type = AxisType.Auto if mode == "auto_eager" else AxisType.Explicit
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
  optimizer = VARIANTS[variant]()
  params = place(mesh)
  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
  with jax.set_mesh(mesh) if mode != "auto_eager" else contextlib.nullcontext():
    state = jax.jit(optimizer.init)(params) if mode == "explicit_jit" else optimizer.init(params)
    init_found, checked = mismatches(state, params)
    update = jax.jit(optimizer.update)
    hlo = update.lower(grads, state, params).compile().as_text()
    _, new_state = update(grads, state, params)
    update_found, _ = mismatches(new_state, params)
  return {"init": init_found, "update": update_found, "checked": checked,
          "collectives": sorted(set(COLLECTIVE.findall(hlo)))}


import contextlib
results = {f"{mode}/{variant}": check(mode, variant)
           for mode in ("auto_eager", "explicit_eager", "explicit_jit") for variant in VARIANTS}
print("RESULT " + json.dumps({"devices": jax.device_count(), "results": results}))
"""


@functools.cache
def report() -> dict[str, Any]:
  return result_line(run_in_subprocess(CHECK, devices=8, timeout=600))


MODES = ("auto_eager", "explicit_eager", "explicit_jit")
VARIANTS = (
    "plain", "centered", "momentum", "nesterov_centered", "weight_decay_masked",
    "bf16_accumulators", "inject_hyperparams", "pytorch_preset",
)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", MODES)
def test_state_leaves_have_their_parameters_sharding_and_update_has_no_collective(mode, variant):
  facts = report()
  assert facts["devices"] == 8
  result = facts["results"][f"{mode}/{variant}"]
  assert result["checked"] >= 4  # every parameter leaf, for each of nu / mu / trace present
  assert result["init"] == [], "\n".join(result["init"])
  assert result["update"] == [], "\n".join(result["update"])
  assert result["collectives"] == []
