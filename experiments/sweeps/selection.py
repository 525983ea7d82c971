"""Trial records and the choice of the best trial: which runs diverged, one JSON-ready record per
trial, and the best trial per optimizer as ``sweep.json`` holds it under ``best``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# What every sweep chooses its best trial by: the held-out validation split, never the test set.
SELECTION_METRIC = "validation_accuracy"

# A run's final metrics, one scalar each; a trial function also returns the per-epoch training
# losses (``epoch_train_loss``).
RUN_METRICS = (
    "train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "test_loss",
    "test_accuracy",
)


def divergence_loss_limit(divergence_factor: float, num_classes: int) -> float:
  """The final training loss above which a run counts as diverged.

  A uniform prediction has loss ln(num_classes); ``divergence_factor`` times that is far above
  anything a training run reaches unless it has blown up.
  """
  return divergence_factor * math.log(num_classes)


def diverged_runs(
    metrics: Mapping[str, np.ndarray], loss_limit: float = math.inf
) -> np.ndarray:
  """``(trials, seeds)`` booleans: which runs diverged.

  A run diverged when any epoch's training loss or a final loss is NaN or infinite, or when its
  final training loss exceeds ``loss_limit``: a learning rate far too large can also leave a
  ReLU network with finite but enormous logits and a loss in the thousands, which is divergence
  in all but the floating-point sense.

  ``metrics`` holds ``epoch_train_loss`` (``(trials, seeds, epochs)``) and those final losses of
  :data:`RUN_METRICS` that were measured. The final training loss is ``train_loss`` (the
  training split evaluated after training) where measured, else the last epoch's mean loss.
  """
  bad = ~np.isfinite(metrics["epoch_train_loss"]).all(axis=-1)
  for split in ("train", "validation", "test"):
    if f"{split}_loss" in metrics:
      bad |= ~np.isfinite(metrics[f"{split}_loss"])
  final_train_loss = (metrics["train_loss"] if "train_loss" in metrics
                      else metrics["epoch_train_loss"][..., -1])
  with np.errstate(invalid="ignore"):
    bad |= ~(final_train_loss <= loss_limit)
  return bad


def finite_or_none(value: float) -> float | None:
  """JSON has no NaN or infinity: non-finite numbers are written as null."""
  return float(value) if math.isfinite(float(value)) else None


def trial_records(
    name: str,
    swept: Mapping[str, np.ndarray],
    fixed: Mapping[str, Any],
    metrics: Mapping[str, np.ndarray],
    loss_limit: float = math.inf,
    search: str = "grid",
    sequential: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
  """One JSON-ready record per trial: hyperparameters, seed means and per-seed values.

  ``metrics`` maps names to arrays of shape ``(trials, seeds, ...)``: ``epoch_train_loss`` and
  any of :data:`RUN_METRICS`; a metric that was not measured is recorded as ``None``.
  A trial is marked ``diverged`` when any of its seeds diverged (:func:`diverged_runs`).
  With ``sequential`` (the same runs trained one at a time) its final training loss and test
  accuracy are recorded beside the vmapped ones.
  """
  diverged = diverged_runs(metrics, loss_limit)
  records = []
  for trial in range(len(next(iter(swept.values())))):
    hparams = {**fixed, **{hparam: float(values[trial]) for hparam, values in swept.items()}}
    record: dict[str, Any] = {
        "optimizer": name,
        "search": search,
        "trial": trial,
        "hparams": hparams,
        "diverged": bool(diverged[trial].any()),
        "diverged_seeds": int(diverged[trial].sum()),
    }
    for metric in RUN_METRICS:
      if metric not in metrics:
        record[metric] = record[f"{metric}_per_seed"] = None
        continue
      per_seed = metrics[metric][trial]
      with np.errstate(invalid="ignore"):
        record[metric] = finite_or_none(np.mean(per_seed))
      record[f"{metric}_per_seed"] = [finite_or_none(value) for value in per_seed]
    if sequential is not None:
      for metric in ("train_loss", "test_accuracy"):
        with np.errstate(invalid="ignore"):
          record[f"sequential_{metric}"] = finite_or_none(np.mean(sequential[metric][trial]))
    records.append(record)
  return records


def best_trial(records: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
  """The non-diverged trial with the highest mean ``metric`` (ties: lower validation loss).

  Returns the entry written under ``best[optimizer]`` in ``sweep.json`` — the hyperparameters
  under ``hparams``, as :func:`experiments.classification.train.load_tuned_hparams` reads them —
  or ``None`` when every trial diverged.
  """
  candidates = [r for r in records if not r["diverged"] and r[metric] is not None]
  if not candidates:
    return None

  def score(record: Mapping[str, Any]) -> tuple[float, float]:
    loss = record.get("validation_loss")
    return record[metric], -(loss if loss is not None else math.inf)

  best = max(candidates, key=score)
  return {
      "trial": best["trial"],
      "hparams": dict(best["hparams"]),
      "selected_by": metric,
      **{key: best[key] for key in RUN_METRICS},
  }

