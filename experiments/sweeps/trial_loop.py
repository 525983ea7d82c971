"""A sequential learning-rate sweep for CNNs on a CPU, selected on a validation split.

:mod:`experiments.sweeps.sweep` trains every trial inside one vmapped ``lax.scan`` program, which is
the fast layout for MLPs and accelerators; on XLA's CPU backend convolutions inside a scan, or
vmapped over trials (grouped convolutions), run several times slower (see docs/experiments.md,
"Input pipeline"). This sweep trains one trial after another with
:func:`experiments.classification.train.train_and_evaluate` and the config's own layout (for a CPU
CNN: one
compiled step per batch), on the training set minus a stratified validation split, and scores
each trial by its validation accuracy after the last epoch (mean over seeds). The test set is
not loaded into the choice at all.

The config is a comparison config (``base``, e.g. configs/classification/fashion_mnist_cnn_cpu.py)
plus the
sweep fields: ``num_epochs`` and ``num_seeds`` of the sweep, ``validation_fraction``, ``seed``
and ``optimizers`` with a ``grid`` (and ``fixed`` values) per optimizer, as in
:mod:`experiments.sweeps.sweep`. ``runs/<name>/sweep.json`` holds every trial and ``best`` per
optimizer in the form :func:`experiments.classification.train.load_tuned_hparams` reads, so a
comparison
config's ``tuned_from`` can point at it.

  python -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py
"""

from __future__ import annotations

import json
import math
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
from experiments.sweeps import sweep


def validation_dataset(dataset: data_lib.Dataset, fraction: float, seed: int) -> data_lib.Dataset:
  """``dataset`` with its test split replaced by a stratified ``fraction`` of the training set
  (:func:`experiments.sweeps.sweep.stratified_split`, the split the vmapped sweep holds out)."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1); got {fraction}.")
  train_images, train_labels, validation_images, validation_labels = sweep.stratified_split(
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
  records: list[dict[str, Any]] = []
  best: dict[str, Any] = {}
  with tempfile.TemporaryDirectory() as scratch:
    for name, entry in config.optimizers.items():
      swept, fixed = sweep.optimizer_trials(name, entry, config.seed)
      for trial in range(len(next(iter(swept.values())))):
        hparams = {**fixed, **{key: float(values[trial]) for key, values in swept.items()}}
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.optimizer = name
        run_config.tuned_from = ""
        run_config.optimizers = ml_collections.ConfigDict({name: hparams})
        train.check_config(run_config)
        tick = time.perf_counter()
        result = train.train_and_evaluate(run_config, Path(scratch) / name, dataset=held_out)
        final_loss = result.train_loss[:, -1]
        diverged = bool(not np.all(np.isfinite(result.train_loss))
                        or np.any(final_loss > config.divergence_factor
                                  * math.log(dataset.num_classes)))
        accuracy = result.test_accuracy[:, -1]  # The validation split, see held_out.
        record = {
            "optimizer": name,
            "hparams": hparams,
            "validation_accuracy": float(np.mean(accuracy)),
            "validation_accuracy_per_seed": [float(value) for value in accuracy],
            "validation_accuracy_per_epoch": [float(v) for v in result.test_accuracy.mean(0)],
            "train_loss": float(np.mean(final_loss)),
            "test_accuracy": None,  # Not evaluated: the choice must not see the test set.
            "diverged": diverged,
            "wall_time_s": time.perf_counter() - tick,
        }
        records.append(record)
        print(f"{name} {hparams}: validation accuracy {record['validation_accuracy']:.4f} "
              f"({record['wall_time_s']:.0f} s)", flush=True)
      candidates = [r for r in records if r["optimizer"] == name and not r["diverged"]]
      best[name] = (max(candidates, key=lambda r: r["validation_accuracy"])
                    if candidates else None)
  summary = {
      "name": config.name,
      "method": "sequential grid, train.train_and_evaluate per trial",
      "selection": f"validation accuracy after {config.num_epochs} epoch(s), mean over "
                   f"{config.num_seeds} seed(s), on a stratified {config.validation_fraction:.0%}"
                   " of the training set",
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
    for name, entry in summary["best"].items():
      print(f"{name}: best {entry['hparams'] if entry else 'none (all diverged)'}")
    print(f"wrote {workdir}/sweep.json in {summary['wall_time_s']:.0f} s")

  cli.run_job(sweep, argv=argv)


if __name__ == "__main__":
  main()
