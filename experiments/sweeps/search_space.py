"""Search spaces of a sweep: grid and random trials, and each optimizer's swept and fixed
hyperparameters as a sweep config names them."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments.common import optimizers as optimizer_lib

DISTRIBUTIONS = ("log_uniform", "uniform")


def grid_trials(grid: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
  """The Cartesian product of per-hyperparameter value lists, as one float64 array per name.

  The first name varies slowest: ``{"learning_rate": [a, b], "decay": [c, d]}`` gives the
  trials ``(a, c), (a, d), (b, c), (b, d)``.
  """
  if not grid:
    raise ValueError("grid must name at least one hyperparameter.")
  names = list(grid)
  for name in names:
    values = grid[name]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
      raise ValueError(f"grid[{name!r}] must be a non-empty list of numbers; got {values!r}.")
  product = list(itertools.product(*(grid[name] for name in names)))
  return {
      name: np.asarray([trial[index] for trial in product], np.float64)
      for index, name in enumerate(names)
  }


def random_trials(
    space: Mapping[str, Sequence[Any]], num_trials: int, seed: int
) -> dict[str, np.ndarray]:
  """``num_trials`` independent draws from per-hyperparameter distributions.

  Each entry of ``space`` is ``(distribution, low, high)``: ``log_uniform`` draws
  ``exp(U(log low, log high))`` — the scale-free prior for learning rates and eps (Bergstra &
  Bengio, 2012) — and ``uniform`` draws ``U(low, high)``. Names are drawn in sorted order from
  one NumPy generator seeded with ``seed``, so a space and a seed fix the trials.
  """
  if num_trials < 1:
    raise ValueError(f"num_trials must be >= 1; got {num_trials}.")
  if not space:
    raise ValueError("random search space must name at least one hyperparameter.")
  generator = np.random.default_rng(seed)
  trials = {}
  for name in sorted(space):
    entry = space[name]
    if isinstance(entry, str) or len(entry) != 3:
      raise ValueError(f"random[{name!r}] must be (distribution, low, high); got {entry!r}.")
    distribution, low, high = entry[0], float(entry[1]), float(entry[2])
    if distribution not in DISTRIBUTIONS:
      raise ValueError(
          f"random[{name!r}] distribution must be one of {DISTRIBUTIONS}; got {distribution!r}."
      )
    if not low < high:
      raise ValueError(f"random[{name!r}] needs low < high; got low={low}, high={high}.")
    if distribution == "log_uniform":
      if low <= 0:
        raise ValueError(f"random[{name!r}] is log_uniform and needs low > 0; got {low}.")
      trials[name] = np.exp(generator.uniform(np.log(low), np.log(high), num_trials))
    else:
      trials[name] = generator.uniform(low, high, num_trials)
  return trials


def optimizer_trials(
    name: str, entry: Mapping[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The swept hyperparameters (one array per name) and the fixed ones of an optimizer.

  ``entry`` is a config's ``optimizers[name]``: ``fixed`` (values every trial shares, booleans
  included), and either ``grid`` (value lists, see :func:`grid_trials`) or ``random`` with
  ``num_trials`` (see :func:`random_trials`). Every name must be a hyperparameter that
  :func:`experiments.common.optimizers.make_optimizer` accepts for ``name``; a swept name must be
  numeric.
  """
  if name not in optimizer_lib.OPTIMIZERS:
    raise ValueError(
        f"optimizers has an unknown optimizer {name!r}; known: {optimizer_lib.OPTIMIZERS}."
    )
  entry = to_plain(entry)
  unknown_keys = set(entry) - {"fixed", "grid", "random", "num_trials"}
  if unknown_keys:
    raise ValueError(f"optimizers[{name!r}] has unknown keys {sorted(unknown_keys)}.")
  if ("grid" in entry) == ("random" in entry):
    raise ValueError(f"optimizers[{name!r}] needs exactly one of 'grid' or 'random'.")
  if "grid" in entry:
    swept = grid_trials(entry["grid"])
  else:
    if "num_trials" not in entry:
      raise ValueError(f"optimizers[{name!r}] uses random search and needs num_trials.")
    # Offset the seed by the optimizer so that two optimizers do not draw the same numbers.
    swept = random_trials(entry["random"], int(entry["num_trials"]),
                          seed + optimizer_lib.OPTIMIZERS.index(name))
  fixed = dict(entry.get("fixed", {}))
  allowed = {"learning_rate", *optimizer_lib.OPTIMIZER_DEFAULTS[name]}
  for source, names in (("grid/random", swept), ("fixed", fixed)):
    unknown = set(names) - allowed
    if unknown:
      raise ValueError(
          f"optimizers[{name!r}] {source} has unknown hyperparameters {sorted(unknown)}; "
          f"allowed: {sorted(allowed)}."
      )
  overlap = set(swept) & set(fixed)
  if overlap:
    raise ValueError(f"optimizers[{name!r}] both sweeps and fixes {sorted(overlap)}.")
  if "learning_rate" not in swept and "learning_rate" not in fixed:
    raise ValueError(f"optimizers[{name!r}] must sweep or fix learning_rate.")
  for hparam, values in swept.items():
    if not np.all(np.isfinite(values)):
      raise ValueError(f"optimizers[{name!r}] {hparam} values must be finite; got {values}.")
  return swept, fixed


def to_plain(value: Any) -> Any:
  """A ConfigDict (or nested mapping) as plain dicts, lists as they are."""
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return dict(value) if isinstance(value, Mapping) else value


def search_kind(entry: Mapping[str, Any]) -> str:
  """``"grid"`` or ``"random"``: how a config's ``optimizers[name]`` entry searches."""
  return "grid" if "grid" in entry else "random"
