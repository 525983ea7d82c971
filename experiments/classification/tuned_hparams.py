"""Hyperparameters tuned by a sweep: reading ``best[<optimizer>]`` of a sweep result file.

A classification config with ``tuned_from`` set trains every optimizer with the best
hyperparameters the sweep (:mod:`experiments.sweeps`) wrote for it, over the config's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections

from experiments.common import optimizers as optimizer_lib


def resolve_hparams(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """``name``'s hyperparameters: the config's, overridden by the sweep's best when
  ``config.tuned_from`` names a sweep result (see :func:`load_tuned_hparams`)."""
  if name not in config.optimizers:
    raise ValueError(
        f"config.optimizers has no entry {name!r}; it has {sorted(config.optimizers)}."
    )
  hparams = dict(config.optimizers[name])
  if config.tuned_from:
    hparams.update(load_tuned_hparams(config.tuned_from, name))
  return hparams


def load_tuned_hparams(path: str | Path, name: str) -> dict[str, Any]:
  """The best hyperparameters of optimizer ``name`` from a sweep result file.

  The file is JSON with a ``best`` mapping from optimizer name to an entry, as
  :func:`experiments.sweeps.selection` writes it: an object holding the hyperparameters under
  ``hparams`` beside the trial's scores. Only keys :func:`.optimizers.make_optimizer` accepts
  for ``name`` are taken. An optimizer the sweep did not cover, or whose every trial diverged
  (the sweep writes ``None``), keeps the config's values (an empty result). An entry of
  another shape (the hyperparameters themselves, or under ``hyperparameters``: files no sweep
  of this repository writes) is refused with the fix, rerun the sweep.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"tuned_from={str(path)!r}: no such sweep result file.")
  with open(path) as handle:
    sweep = json.load(handle)
  best = sweep.get("best") if isinstance(sweep, dict) else None
  if not isinstance(best, dict):
    raise ValueError(f"tuned_from={str(path)!r}: the file has no 'best' mapping per optimizer.")
  entry = best.get(name)
  if entry is None:
    return {}
  if not isinstance(entry, dict) or not isinstance(entry.get("hparams"), dict):
    raise ValueError(
        f"tuned_from={str(path)!r}: best[{name!r}] holds no 'hparams' object ({entry!r}); the "
        f"file is not one the sweep writes (an older format?): rerun the sweep that makes it."
    )
  allowed = {"learning_rate", *optimizer_lib.OPTIMIZER_DEFAULTS[name]}
  tuned = {key: value for key, value in entry["hparams"].items() if key in allowed}
  if "learning_rate" not in tuned:
    raise ValueError(f"tuned_from={str(path)!r}: best[{name!r}] holds no learning_rate.")
  return tuned
