"""State formats on sharded parameters: state sharded like its parameter, no collective.

8 simulated CPU devices need ``XLA_FLAGS`` before JAX starts, so the checks run in one fresh
interpreter (tests/conftest.py) and print one JSON line. On a mesh of 8 devices, a (64, 2048)
parameter sharded on its rows, one sharded on its columns and a sharded vector: plain
``optimizer.init(params)`` must give each state leaf its parameter's sharding (int8 codes
exactly; the per-block scales sharded along the same axes, each block within one shard), the
jitted update's compiled HLO must hold no collective, and two updates and the stored state
after them (codes and scales) must equal the unsharded run's. The factored format is the
exception it documents: its statistics of a sharded axis are reduced across the shards (one
small all-reduce, of O(rows + columns) values).
Shardings a format cannot honour are refused at init, naming the parameter.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import pytest

from tests.conftest import result_line, run_in_subprocess

# Left out of `make test-fast`: a fresh interpreter with 8 simulated devices.
pytestmark = pytest.mark.slow

CHECK = r"""
import json, re
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
import rmsprop_jax
from rmsprop_jax import formats

FORMATS = {
    "bfloat16": formats.bfloat16(),
    "int8": formats.int8(),
    "factored": formats.factored(min_dim_size=64),
    "bitsandbytes_int8": formats.bitsandbytes_int8(),
}
# mu and the momentum buffer in the format's signed role (factored: its float32 fallback; it
# refuses centered=True).
VARIANTS = {
    "plain": dict(),
    "second": dict(centered=True, momentum=0.9),
}
SECOND = {"factored": dict(momentum=0.9)}
# Rows: shards of 8 rows; columns: shards of 256 (one block); the vector: shards of 512.
SPECS = {"rows": P("x", None), "cols": P(None, "x"), "vec": P("x"), "small": P()}
SHAPES = {"rows": (64, 2048), "cols": (64, 2048), "vec": (4096,), "small": (16,)}
# An HLO instruction "%name = <result shape(s)> <op>(...)" of a collective op.
COLLECTIVE = re.compile(
    r"= *([^=\n]*?) (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)"
    r"(?:-start)?\(")
mesh = jax.make_mesh((8,), ("x",))


def make_params(names, sharded):
  params = {}
  for k in names:
    size = int(np.prod(SHAPES[k]))
    value = np.sin(np.arange(size, dtype=np.float32) * 0.37).reshape(SHAPES[k])
    place = NamedSharding(mesh, SPECS[k]) if sharded else jax.devices()[0]
    params[k] = jax.device_put(value, place)
  return params


def expected_spec(kind, field, key):
  # The spec a stored array of parameter `key` must carry.
  spec = tuple(SPECS[key]) + (None,) * (len(SHAPES[key]) - len(SPECS[key]))
  if kind == "FactoredLeaf":  # row: the largest axis (columns) reduced; column: the rows.
    return P(*(spec[:-1] if field == "row" else spec[:-2] + spec[-1:]))
  if kind == "BitsandbytesInt8Leaf" and field == "bnb_absmax":
    return P(spec[0])  # flattened blocks: only a first-axis sharding is allowed
  return P(*spec)      # arrays, int8 codes and scales, bitsandbytes codes


def mismatches(state, params):
  found, checked = [], 0
  for field in ("nu", "mu", "trace"):
    for _, mirror in optax.tree_utils.tree_get_all_with_path(state, field):
      for key in params:
        leaf = mirror[key]
        kind = type(leaf).__name__ if formats.is_encoded(leaf) else "array"
        parts = ({"": leaf} if kind == "array" else
                 {f: getattr(leaf, f) for f in ("codes", "scales", "bnb_codes", "bnb_absmax",
                                                  "row", "column") if hasattr(leaf, f)})
        for name, array in parts.items():
          checked += 1
          want = NamedSharding(mesh, expected_spec(kind, name, key))
          if not array.sharding.is_equivalent_to(want, array.ndim):
            found.append(f"{field}[{key!r}]{'.' + name if name else ''} ({kind}): "
                         f"{array.sharding.spec} != {want.spec}")
  return found, checked


def stored(state):
  # Every stored array of the state (codes, scales, statistics, plain arrays), by path: equal
  # stored bits mean equal decoded values.
  flat, _ = jax.tree_util.tree_flatten_with_path(state)
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def run(fmt_name, variant, names, sharded):
  fmt = FORMATS[fmt_name]
  options = SECOND.get(fmt_name, VARIANTS[variant]) if variant == "second" else {}
  optimizer = rmsprop_jax.rmsprop(1e-2, accumulator_dtype=fmt, **options)
  params = make_params(names, sharded)
  state = optimizer.init(params)
  facts = {}
  if sharded:
    facts["init"], facts["checked"] = mismatches(state, params)
  update = jax.jit(optimizer.update)
  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) * (1.0 + p), params)
  if sharded:
    # The inspected executable is also the one that runs (one compilation, not two).
    update = update.lower(grads, state, params).compile()
    hlo = update.as_text()
    facts["collectives"] = sorted({(op, shape) for shape, op in COLLECTIVE.findall(hlo)})
    facts["any_collective"] = bool(re.search(
        r"all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all", hlo))
  updates = []
  for step in range(2):
    step_grads = jax.tree.map(lambda g: g * (1.0 + 0.5 * step), grads)
    u, state = update(step_grads, state, params)
    updates.append({k: np.asarray(v) for k, v in u.items()})
  if sharded:
    facts["update"], _ = mismatches(state, params)
  return facts, updates, stored(state)


results = {}
for fmt_name in FORMATS:
  # bitsandbytes' flattened blocks cannot follow a column sharding (refused below).
  names = [k for k in SHAPES if not (fmt_name == "bitsandbytes_int8" and k == "cols")]
  for variant in VARIANTS:
    facts, sharded_updates, sharded_state = run(fmt_name, variant, names, True)
    _, plain_updates, plain_state = run(fmt_name, variant, names, False)
    worst, bitwise = 0.0, True
    for a, b in zip(sharded_updates + [sharded_state], plain_updates + [plain_state]):
      for k in b:
        bitwise &= bool(np.array_equal(a[k], b[k]))
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-30))))
    facts.update(bitwise=bitwise, worst_relative=worst)
    results[f"{fmt_name}/{variant}"] = facts

refusals = {}
cases = {
    # Shards of 128 columns: half a block of 256.
    "int8_half_blocks": (formats.int8(), "cols", (256, 1024)),
    # Rows of 64 are grouped 4 to a block; shards of 2 rows split the groups.
    "int8_row_groups": (formats.int8(min_size=0), "rows", (16, 64)),
    "bitsandbytes_columns": (formats.bitsandbytes_int8(), "cols", (64, 2048)),
}
for name, (fmt, key, shape) in cases.items():
  value = jax.device_put(np.ones(shape, np.float32), NamedSharding(mesh, SPECS[key]))
  try:
    rmsprop_jax.rmsprop(1e-2, accumulator_dtype=fmt).init({"layer": {"kernel": value}})
    refusals[name] = None
  except ValueError as error:
    refusals[name] = str(error)
print("RESULT " + json.dumps({"devices": jax.device_count(), "results": results,
                              "refusals": refusals}))
"""


@functools.cache
def report() -> dict[str, Any]:
  return result_line(run_in_subprocess(CHECK, devices=8, timeout=900))


FORMATS = ("bfloat16", "int8", "factored", "bitsandbytes_int8")
VARIANTS = ("plain", "second")  # "second": centered with momentum (factored: momentum only)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", FORMATS)
def test_state_is_sharded_like_its_parameter(name, variant):
  facts = report()
  assert facts["devices"] == 8
  result = facts["results"][f"{name}/{variant}"]
  assert result["checked"] >= 4  # every parameter's nu (and mu, trace) leaves
  assert result["init"] == [], "\n".join(result["init"])
  assert result["update"] == [], "\n".join(result["update"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", FORMATS)
def test_update_has_no_collective_except_factoreds_small_all_reduce(name, variant):
  result = report()["results"][f"{name}/{variant}"]
  if name != "factored":
    assert result["collectives"] == [] and not result["any_collective"]
    return
  # The statistic of a sharded factored axis (and the row statistics' mean) is reduced
  # across shards: all-reduces of vectors (<= 2048 values), never the (64, 2048) leaf.
  assert result["collectives"], "a factored, sharded axis cannot do without a reduction"
  for op, shapes in result["collectives"]:
    assert op == "all-reduce", (op, shapes)
    for dims in re.findall(r"\w+\[([\d,]*)\]", shapes):
      assert math.prod(int(n) for n in dims.split(",") if n) <= 2048, shapes


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", FORMATS)
def test_sharded_run_equals_the_unsharded_run(name, variant):
  result = report()["results"][f"{name}/{variant}"]
  if name == "factored":
    # Means reduced across shards are summed in another order: a few ulps.
    assert result["worst_relative"] < 1e-5
  else:
    # Element by element the same arithmetic, and the blocks' maxima (of the gradient, of the
    # codes) are exact whatever the order: bit for bit.
    assert result["bitwise"], result["worst_relative"]


def test_a_sharding_that_would_split_blocks_is_refused_naming_the_parameter():
  refusals = report()["refusals"]
  for name, message in refusals.items():
    assert message is not None, f"{name}: accepted"
    assert "['layer']['kernel']" in message, message
    assert "straddle" in message or "blocks of 256" in message, message
  assert "whole number of blocks of 256" in refusals["int8_half_blocks"]
  assert "row groups of 4" in refusals["int8_row_groups"]
  assert "first axis" in refusals["bitsandbytes_columns"]
