"""The learning-rate pilot behind the studies' configs.

For each optimizer of a study, every learning rate of a small grid is trained on seeds the study
itself does not use (100, and 101 for the non-stationary study), on a shortened run, and scored
by one number: the adding problem's final evaluation MSE at T=50, the non-stationary study's mean
normalized tracking error, the sparse study's final test accuracy. The configs take the best
value of each grid; docs/studies.md lists the scores.

Run: ``python -m experiments.studies.pilot --study sparse_features`` (or ``adding_problem``,
``nonstationary``); ``--quick`` runs the tests' tiny configuration instead.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from configs.studies import adding_problem as adding_config
from configs.studies import nonstationary as nonstationary_config
from configs.studies import sparse_features as sparse_config
from experiments.studies import adding_problem, nonstationary, sparse_features

# Per study: the grids, the run shortening and the score (lower is better unless maximize).
GRIDS: dict[str, dict[str, Sequence[float]]] = {
    "adding_problem": {"sgd": (0.1, 0.3, 1.0), "momentum": (0.01, 0.03, 0.1),
                       "adam": (1e-3, 3e-3, 1e-2), "rmsprop": (1e-3, 3e-3, 1e-2)},
    "nonstationary": {"sgd": (1e-2, 3e-2, 0.1, 0.3), "momentum": (1e-3, 3e-3, 1e-2, 3e-2),
                      "adam": (3e-3, 1e-2, 3e-2, 0.1), "rmsprop_090": (3e-3, 1e-2, 3e-2, 0.1)},
    "sparse_features": {"sgd": (1.0, 3.0, 10.0, 30.0), "momentum": (0.3, 1.0, 3.0),
                        "adam": (3e-3, 1e-2, 3e-2), "rmsprop": (1e-3, 3e-3, 1e-2, 3e-2, 0.1)},
}


def _adding_score(config: ml_collections.ConfigDict, spec: Mapping[str, Any]) -> float:
  length = config.sequence_lengths[0]
  curves = adding_problem.run_optimizer(config, spec, length, f"lr {spec['learning_rate']}")
  return float(np.mean(curves["eval_mse"][:, -1]))


def _nonstationary_score(config: ml_collections.ConfigDict, spec: Mapping[str, Any]) -> float:
  curves = nonstationary.run_optimizer(config, spec, f"lr {spec['learning_rate']}")
  return float(np.mean(curves["normalized_error"]))


def _sparse_score(config: ml_collections.ConfigDict, spec: Mapping[str, Any]) -> float:
  result = sparse_features.run_optimizer(config, spec, f"lr {spec['learning_rate']}")
  return float(np.mean(result["test_accuracy"][:, -1]))


def pilot_config(study: str, quick: bool) -> ml_collections.ConfigDict:
  """The study's config, shortened as in the pilot and moved to the pilot's seeds."""
  if study == "adding_problem":
    config = adding_config.get_config("quick" if quick else None)
    config.sequence_lengths = (config.sequence_lengths[0],)
    config.num_seeds = 1
    if not quick:
      config.num_steps = 600
  elif study == "nonstationary":
    config = nonstationary_config.get_config("quick" if quick else None)
    config.num_seeds = 2
    if not quick:
      config.num_segments = 3
  elif study == "sparse_features":
    config = sparse_config.get_config("quick" if quick else None)
    config.num_seeds = 1
    if not quick:
      config.num_steps, config.eval_every = 1000, 250
  else:
    raise ValueError(f"study must be one of {sorted(GRIDS)}, got {study!r}.")
  config.seed = 100
  return config


def run_pilot(study: str, quick: bool = False,
              grids: Mapping[str, Sequence[float]] | None = None) -> dict[str, dict[float, float]]:
  """Scores every learning rate of every grid; returns ``{optimizer: {learning_rate: score}}``.

  Diverged runs score NaN and are never chosen.
  """
  config = pilot_config(study, quick)
  score: Callable[[ml_collections.ConfigDict, Mapping[str, Any]], float] = {
      "adding_problem": _adding_score, "nonstationary": _nonstationary_score,
      "sparse_features": _sparse_score}[study]
  results: dict[str, dict[float, float]] = {}
  for name, learning_rates in (grids or GRIDS[study]).items():
    results[name] = {}
    for learning_rate in learning_rates:
      spec = dict(config.optimizers[name].to_dict(), learning_rate=learning_rate)
      results[name][learning_rate] = score(config, spec)
  return results


def best_learning_rate(scores: Mapping[float, float], maximize: bool) -> float:
  """The grid value with the best finite score."""
  finite = {rate: value for rate, value in scores.items() if math.isfinite(value)}
  if not finite:
    raise ValueError("every learning rate of the grid diverged.")
  return (max if maximize else min)(finite, key=finite.__getitem__)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--study", required=True, choices=sorted(GRIDS))
  parser.add_argument("--quick", action="store_true", help="use the tests' tiny configuration")
  args = parser.parse_args()
  results = run_pilot(args.study, args.quick)
  maximize = args.study == "sparse_features"
  for name, scores in results.items():
    listed = ", ".join(f"{rate:g}: {value:.4g}" for rate, value in scores.items())
    print(f"{name}: {listed} -> best {best_learning_rate(scores, maximize):g}")


if __name__ == "__main__":
  main()
