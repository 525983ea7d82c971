"""Search spaces of a sweep: grid and random trials, the ``(distribution, low, high)`` spaces of
random and Optuna searches, and each optimizer entry of a sweep config checked
(:class:`SearchPlan`)."""

from __future__ import annotations

import dataclasses
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


def check_space(space: Mapping[str, Any], field: str) -> dict[str, tuple[str, float, float]]:
  """``space`` as ``{name: (distribution, low, high)}``, checked; errors name ``field[name]``.

  The form a random search and Optuna's samplers share: ``log_uniform`` needs ``low > 0`` and
  every distribution ``low < high`` (Optuna's ``suggest_float``, with ``log`` for the first).
  """
  if not space:
    raise ValueError(f"{field} search space must name at least one hyperparameter.")
  checked = {}
  for name in sorted(space):
    entry = space[name]
    if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) != 3:
      raise ValueError(f"{field}[{name!r}] must be (distribution, low, high); got {entry!r}.")
    distribution = entry[0]
    try:
      low, high = float(entry[1]), float(entry[2])
    except (TypeError, ValueError):
      raise ValueError(
          f"{field}[{name!r}] must be (distribution, low, high) with numbers; got {entry!r}."
      ) from None
    if distribution not in DISTRIBUTIONS:
      raise ValueError(
          f"{field}[{name!r}] distribution must be one of {DISTRIBUTIONS}; got {distribution!r}."
      )
    if not low < high:
      raise ValueError(f"{field}[{name!r}] needs low < high; got low={low}, high={high}.")
    if distribution == "log_uniform" and low <= 0:
      raise ValueError(f"{field}[{name!r}] is log_uniform and needs low > 0; got {low}.")
    checked[name] = (distribution, low, high)
  return checked


def random_trials(
    space: Mapping[str, Sequence[Any]], num_trials: int, seed: int
) -> dict[str, np.ndarray]:
  """``num_trials`` independent draws from per-hyperparameter distributions.

  Each entry of ``space`` is ``(distribution, low, high)`` (:func:`check_space`):
  ``log_uniform`` draws ``exp(U(log low, log high))`` — the scale-free prior for learning rates
  and eps (Bergstra & Bengio, 2012) — and ``uniform`` draws ``U(low, high)``. Names are drawn in
  sorted order from one NumPy generator seeded with ``seed``, so a space and a seed fix the
  trials.
  """
  if num_trials < 1:
    raise ValueError(f"num_trials must be >= 1; got {num_trials}.")
  generator = np.random.default_rng(seed)
  trials = {}
  for name, (distribution, low, high) in check_space(space, "random").items():
    if distribution == "log_uniform":
      trials[name] = np.exp(generator.uniform(np.log(low), np.log(high), num_trials))
    else:
      trials[name] = generator.uniform(low, high, num_trials)
  return trials


# How an optimizer entry searches: drawn up front (grid, random) or asked of an Optuna sampler
# round by round (tpe, qmc; experiments.sweeps.optuna_batches).
SEARCHES = ("grid", "random", "tpe", "qmc")
MODEL_BASED = ("tpe", "qmc")
ENTRY_KEYS = (*SEARCHES, "fixed", "num_trials", "trials_per_round", "halving")


@dataclasses.dataclass(frozen=True)
class SearchPlan:
  """One optimizer entry of a sweep config, checked.

  ``swept`` holds the trials of a grid or random search (one array per name); a model-based
  search has none up front but a ``space`` and asks ``trials_per_round`` trials at a time.
  ``halving`` (``{"eta", "rung_epochs"}``, :mod:`experiments.sweeps.halving`) stops the worse
  trials of a grid or random search early.
  """

  optimizer: str
  search: str
  fixed: dict[str, Any]
  num_trials: int
  swept: dict[str, np.ndarray] | None = None
  space: dict[str, tuple[str, float, float]] | None = None
  trials_per_round: int | None = None
  halving: dict[str, int] | None = None


def search_plan(name: str, entry: Mapping[str, Any], seed: int) -> SearchPlan:
  """Checks a config's ``optimizers[name]`` entry and draws its grid or random trials.

  ``entry`` holds ``fixed`` (values every trial shares, booleans included) and exactly one of
  ``grid`` (value lists, see :func:`grid_trials`), ``random`` with ``num_trials`` (see
  :func:`random_trials`), or ``tpe`` / ``qmc`` with ``num_trials`` and ``trials_per_round`` (a
  ``(distribution, low, high)`` space as ``random``'s, searched by Optuna's sampler of that
  name); a grid or random search may add ``halving``. Every name must be a hyperparameter that
  :func:`experiments.common.optimizers.make_optimizer` accepts for ``name``; a swept name must
  be numeric. Errors name the field.
  """
  if name not in optimizer_lib.OPTIMIZERS:
    raise ValueError(
        f"optimizers has an unknown optimizer {name!r}; known: {optimizer_lib.OPTIMIZERS}."
    )
  entry = to_plain(entry)
  field = f"optimizers[{name!r}]"
  unknown_keys = set(entry) - set(ENTRY_KEYS)
  if unknown_keys:
    raise ValueError(f"{field} has unknown keys {sorted(unknown_keys)}; allowed: {ENTRY_KEYS}.")
  searches = [search for search in SEARCHES if search in entry]
  if len(searches) != 1:
    raise ValueError(f"{field} needs exactly one of {', '.join(map(repr, SEARCHES))}; got "
                     f"{searches or 'none'}.")
  search = searches[0]
  fixed = dict(entry.get("fixed", {}))
  swept: dict[str, np.ndarray] | None = None
  space = None
  if search == "grid":
    swept = grid_trials(entry["grid"])
  elif "num_trials" not in entry:
    raise ValueError(f"{field} uses {search} search and needs num_trials.")
  elif search == "random":
    # Offset the seed by the optimizer so that two optimizers do not draw the same numbers.
    swept = random_trials(entry["random"], int(entry["num_trials"]),
                          seed + optimizer_lib.OPTIMIZERS.index(name))
  else:
    space = check_space(entry[search], f"{field}.{search}")
  num_trials = len(next(iter(swept.values()))) if swept is not None else int(entry["num_trials"])
  if num_trials < 1:
    raise ValueError(f"{field}.num_trials must be >= 1; got {num_trials}.")
  trials_per_round = entry.get("trials_per_round")
  if search in MODEL_BASED:
    if trials_per_round is None:
      raise ValueError(f"{field} uses {search} search and needs trials_per_round (trials per "
                       "compiled call).")
    if not 1 <= int(trials_per_round) <= num_trials:
      raise ValueError(
          f"{field}.trials_per_round={trials_per_round} must be in [1, num_trials={num_trials}]: "
          "a round cannot be wider than the trials."
      )
    trials_per_round = int(trials_per_round)
  elif trials_per_round is not None:
    raise ValueError(f"{field}.trials_per_round belongs to a tpe or qmc search, not {search}.")
  halving = entry.get("halving")
  if halving is not None and search in MODEL_BASED:
    raise ValueError(f"{field}.halving applies to a grid or random search, not {search}.")
  allowed = {"learning_rate", *optimizer_lib.OPTIMIZER_DEFAULTS[name]}
  for source, names in ((search, swept if swept is not None else space), ("fixed", fixed)):
    unknown = set(names or ()) - allowed
    if unknown:
      raise ValueError(
          f"{field} {source} has unknown hyperparameters {sorted(unknown)}; "
          f"allowed: {sorted(allowed)}."
      )
  overlap = set(swept if swept is not None else space or ()) & set(fixed)
  if overlap:
    raise ValueError(f"{field} both sweeps and fixes {sorted(overlap)}.")
  if "learning_rate" not in (swept if swept is not None else space or {}) and (
      "learning_rate" not in fixed):
    raise ValueError(f"{field} must sweep or fix learning_rate.")
  for hparam, values in (swept or {}).items():
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{field} {hparam} values must be finite; got {values}.")
  return SearchPlan(name, search, fixed, num_trials, swept, space, trials_per_round,
                    dict(halving) if halving is not None else None)


def optimizer_trials(
    name: str, entry: Mapping[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The swept hyperparameters (one array per name) and the fixed ones of a grid or random
  entry (:func:`search_plan`), for sweeps that train every trial to the end."""
  plan = search_plan(name, entry, seed)
  if plan.swept is None or plan.halving is not None:
    raise ValueError(
        f"optimizers[{name!r}] uses {'halving' if plan.halving else plan.search}, which only "
        "the vmapped sweep (experiments.sweeps.sweep) runs; use grid or random here."
    )
  return plan.swept, plan.fixed


def to_plain(value: Any) -> Any:
  """A ConfigDict (or nested mapping) as plain dicts, lists as they are."""
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return dict(value) if isinstance(value, Mapping) else value


def search_kind(entry: Mapping[str, Any]) -> str:
  """How a config's ``optimizers[name]`` entry searches: one of :data:`SEARCHES`."""
  return next((search for search in SEARCHES if search in entry), "grid")
