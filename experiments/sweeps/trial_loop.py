"""A sequential sweep for CNNs on a CPU: one
:func:`experiments.classification.train.train_and_evaluate` per trial, on the training set minus
a stratified validation split.

:mod:`experiments.sweeps.sweep` trains every trial in one vmapped program; on XLA's CPU backend
convolutions run several times slower that way (docs/experiments.md, "Input pipeline"), so
this sweep trains one trial after another with the config's own layout. The config is a
comparison config plus the sweep fields of :mod:`experiments.sweeps.sweep` (``optimizers``,
``validation_fraction``, ...). Trials are recorded and the best one chosen by validation
accuracy (mean over seeds, after the last epoch) with :mod:`experiments.sweeps.selection`, as
in the vmapped sweep; the test set is never evaluated. ``sweep.json``'s ``best`` entries feed
a comparison config's ``tuned_from``.

  python -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.common import cli
from experiments.common import hardware as hardware_lib
from experiments.sweeps import schema as sweep_schema
from experiments.sweeps import selection
from experiments.sweeps.report import model_text
from experiments.sweeps.search_space import optimizer_trials, search_kind
from experiments.sweeps.selection import SELECTION_METRIC
from experiments.sweeps.validation_split import stratified_split


def validation_dataset(dataset: data_lib.Dataset, fraction: float, seed: int) -> data_lib.Dataset:
  """``dataset`` with its test split replaced by a stratified ``fraction`` of the training set
  (:func:`~experiments.sweeps.validation_split.stratified_split`, as the vmapped sweep)."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1); got {fraction}.")
  train_images, train_labels, validation_images, validation_labels = stratified_split(
      dataset, fraction, seed
  )
  return data_lib.Dataset(dataset.name, train_images, train_labels, validation_images,
                          validation_labels, dataset.class_names)


def run_sweep_loop(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Trains every trial of ``config`` one after another; writes and returns ``sweep.json``."""
  start = time.perf_counter()
  workdir = Path(workdir)
  dataset = train.load_config_dataset(config)
  held_out = validation_dataset(dataset, config.validation_fraction, config.seed)
  loss_limit = selection.divergence_loss_limit(config.divergence_factor, dataset.num_classes)
  records: list[dict[str, Any]] = []
  best: dict[str, Any] = {}
  with tempfile.TemporaryDirectory() as scratch:
    for name, entry in config.optimizers.items():
      swept, fixed = optimizer_trials(name, entry, config.seed)
      results, seconds = [], []
      for trial in range(len(next(iter(swept.values())))):
        hparams = {**fixed, **{key: float(values[trial]) for key, values in swept.items()}}
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.optimizer = name
        run_config.tuned_from = ""
        run_config.optimizers = ml_collections.ConfigDict({name: hparams})
        train.check_config(run_config)
        tick = time.perf_counter()
        results.append(train.train_and_evaluate(run_config, Path(scratch) / name,
                                                dataset=held_out))
        seconds.append(time.perf_counter() - tick)
        print(f"{name} {hparams}: validation accuracy "
              f"{np.mean(results[-1].test_accuracy[:, -1]):.4f} ({seconds[-1]:.0f} s)", flush=True)
      # Arrays (trials, seeds[, epochs]); train_and_evaluate's test split is the held-out one.
      metrics = {
          "epoch_train_loss": np.stack([result.train_loss for result in results]),
          "validation_loss": np.stack([result.test_loss[:, -1] for result in results]),
          "validation_accuracy": np.stack([result.test_accuracy[:, -1] for result in results]),
      }
      trials = selection.trial_records(name, swept, fixed, metrics, loss_limit, search_kind(entry))
      for record, result, wall_time in zip(trials, results, seconds, strict=True):
        record["validation_accuracy_per_epoch"] = [
            float(value) for value in result.test_accuracy.mean(0)
        ]
        record["final_epoch_train_loss"] = selection.finite_or_none(
            np.mean(result.train_loss[:, -1])
        )
        record["wall_time_s"] = wall_time
      records.extend(trials)
      best[name] = selection.best_trial(trials, SELECTION_METRIC)
  summary = {
      "name": config.name,
      "method": "sequential grid, train.train_and_evaluate per trial",
      "selection": f"validation accuracy after {config.num_epochs} epoch(s), mean over "
                   f"{config.num_seeds} seed(s), on a stratified {config.validation_fraction:.0%}"
                   " of the training set",
      "selection_metric": SELECTION_METRIC,
      "divergence_loss_limit": loss_limit,
      "num_train": int(held_out.train_images.shape[0]),
      "num_validation": int(held_out.test_images.shape[0]),
      "model": config.model,
      "model_kwargs": config.model_kwargs.to_dict(),
      "num_epochs": config.num_epochs,
      "num_seeds": config.num_seeds,
      "hardware": hardware_lib.summary_line(),
      "wall_time_s": time.perf_counter() - start,
      "best": best,
      "trials": records,
  }
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "sweep.json").write_text(json.dumps(summary, indent=2))
  return summary


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py``."""

  def sweep(config: ml_collections.ConfigDict, workdir: str) -> None:
    summary = run_sweep_loop(config, workdir)
    print(f"{config.name}, model {model_text(config)}: best trial per optimizer by "
          f"{summary['selection_metric']}")
    for name, entry in summary["best"].items():
      print(f"{name}: best {entry['hparams'] if entry else 'none (all diverged)'}")
    print(f"wrote {workdir}/sweep.json in {summary['wall_time_s']:.0f} s")

  cli.run_job(sweep, schema=sweep_schema.TRIAL_LOOP, argv=argv)


if __name__ == "__main__":
  main()
