"""What a classification run measured: :class:`RunResult`, and the per-epoch recorder behind it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass
class RunResult:
  """What :func:`train_and_evaluate` measured for one optimizer over ``num_seeds`` seeds.

  Per-epoch arrays have shape ``(num_seeds, num_epochs)``.
  """

  optimizer: str
  hparams: dict[str, Any]
  seeds: list[int]
  steps_per_epoch: int
  train_loss: np.ndarray
  train_accuracy: np.ndarray
  test_loss: np.ndarray
  test_accuracy: np.ndarray
  test_predictions: np.ndarray  # (num_seeds, n_test) after the last epoch.
  test_labels: np.ndarray
  compile_time_s: float
  train_time_s: float
  eval_time_s: float
  wall_time_s: float

  def steps_to_target(self, target: float) -> list[int | None]:
    """Per seed, the first step count (epoch end) whose test accuracy reaches ``target``."""
    result: list[int | None] = []
    for curve in self.test_accuracy:
      reached = np.flatnonzero(curve >= target)
      result.append(int((reached[0] + 1) * self.steps_per_epoch) if reached.size else None)
    return result


@dataclasses.dataclass
class EpochRecorder:
  """Per-epoch training and test metrics of every seed group, the last epoch's predictions and
  the time spent training and evaluating."""

  history: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {
      "train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []})
  predictions: list[np.ndarray] = dataclasses.field(default_factory=list)
  train_time_s: float = 0.0
  eval_time_s: float = 0.0
  _epoch: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

  def start_epoch(self) -> None:
    self._epoch = {key: [] for key in self.history}
    self.predictions = []

  def add_group(self, train_metrics: Mapping[str, Any], evaluation: Mapping[str, Any],
                num_test: int) -> None:
    """Records one seed group's epoch: its training metrics and its test evaluation."""
    for split, values in (("train", train_metrics), ("test", evaluation)):
      self._epoch[f"{split}_loss"].append(np.atleast_1d(values["loss"]))
      self._epoch[f"{split}_accuracy"].append(np.atleast_1d(values["accuracy"]))
    self.predictions.append(np.asarray(evaluation["predictions"]).reshape(-1, num_test))

  def end_epoch(self) -> None:
    for key, values in self._epoch.items():
      self.history[key].append(np.concatenate(values))

  def curves(self) -> dict[str, np.ndarray]:
    """Each metric as ``(seeds, epochs)`` float64."""
    return {key: np.stack(values, axis=1).astype(np.float64)
            for key, values in self.history.items()}
