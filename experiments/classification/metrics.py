"""Summary statistics of a training run: per-class scores, convergence speed, seed statistics.

Per-class precision, recall and F1 and the confusion matrix come from scikit-learn, computed
per seed on the test predictions after the last epoch. Every scalar is reported as the mean
over seeds with the (population) standard deviation across seeds beside it; the confusion
matrix is summed over seeds, so its entries count test images times seeds.

Convergence speed is the number of training steps after which the test accuracy first reaches
the config's target (evaluated at the end of every epoch, so it is a multiple of the steps per
epoch). ``steps_to_target`` is the mean over seeds when every seed reached the target and
``None`` otherwise; ``target_reached_seeds`` says how many did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from experiments.classification.results import RunResult
from experiments.common.serialization import to_jsonable


def per_class_scores(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
  """Precision, recall and F1 of each class (0 where a class is never predicted) and the
  confusion matrix (rows: true class, columns: predicted class)."""
  classes = list(range(num_classes))
  precision, recall, f1, _ = precision_recall_fscore_support(
      labels, predictions, labels=classes, zero_division=0
  )
  return {
      "precision": np.asarray(precision, np.float64),
      "recall": np.asarray(recall, np.float64),
      "f1": np.asarray(f1, np.float64),
      "confusion_matrix": confusion_matrix(labels, predictions, labels=classes),
  }


def summarize_run(result: RunResult, num_classes: int, target_accuracy: float) -> dict[str, Any]:
  """The JSON-ready summary of one optimizer's run over all its seeds."""
  if result.test_predictions.shape[0] != len(result.seeds):
    raise ValueError(
        f"result has {result.test_predictions.shape[0]} prediction rows for "
        f"{len(result.seeds)} seeds."
    )
  scores = [
      per_class_scores(result.test_labels, predictions, num_classes)
      for predictions in result.test_predictions
  ]
  stacked = {key: np.stack([score[key] for score in scores]) for key in scores[0]}
  final_accuracy = result.test_accuracy[:, -1]
  steps = result.steps_to_target(target_accuracy)
  reached = [step for step in steps if step is not None]
  return {
      "hyperparameters": to_jsonable(result.hparams),
      "seeds": list(result.seeds),
      "test_accuracy": float(np.mean(final_accuracy)),
      "test_accuracy_std": float(np.std(final_accuracy)),
      "test_accuracy_per_seed": _floats(final_accuracy),
      "best_epoch_test_accuracy": float(np.mean(np.max(result.test_accuracy, axis=1))),
      "test_loss": float(np.mean(result.test_loss[:, -1])),
      "test_loss_std": float(np.std(result.test_loss[:, -1])),
      "final_train_loss": float(np.mean(result.train_loss[:, -1])),
      "final_train_loss_std": float(np.std(result.train_loss[:, -1])),
      "target_accuracy": target_accuracy,
      "steps_to_target": float(np.mean(reached)) if len(reached) == len(steps) else None,
      "steps_to_target_std": float(np.std(reached)) if len(reached) == len(steps) else None,
      "steps_to_target_per_seed": steps,
      "target_reached_seeds": len(reached),
      "per_class_precision": _floats(stacked["precision"].mean(axis=0)),
      "per_class_precision_std": _floats(stacked["precision"].std(axis=0)),
      "per_class_recall": _floats(stacked["recall"].mean(axis=0)),
      "per_class_recall_std": _floats(stacked["recall"].std(axis=0)),
      "per_class_f1": _floats(stacked["f1"].mean(axis=0)),
      "macro_f1": float(stacked["f1"].mean()),
      "macro_f1_std": float(stacked["f1"].mean(axis=1).std()),
      "confusion_matrix": stacked["confusion_matrix"].sum(axis=0).astype(int).tolist(),
      "steps_per_epoch": result.steps_per_epoch,
      "wall_time_s": result.wall_time_s,
      "train_time_s": result.train_time_s,
      "compile_time_s": result.compile_time_s,
      "eval_time_s": result.eval_time_s,
  }


def curve_rows(result: RunResult) -> list[dict[str, Any]]:
  """One row per (seed, epoch) with the learning-curve values, for ``metrics.csv``."""
  rows = []
  for seed_index, seed in enumerate(result.seeds):
    for epoch in range(result.test_accuracy.shape[1]):
      rows.append({
          "optimizer": result.optimizer,
          "seed": seed,
          "epoch": epoch + 1,
          "step": (epoch + 1) * result.steps_per_epoch,
          "train_loss": float(result.train_loss[seed_index, epoch]),
          "train_accuracy": float(result.train_accuracy[seed_index, epoch]),
          "test_loss": float(result.test_loss[seed_index, epoch]),
          "test_accuracy": float(result.test_accuracy[seed_index, epoch]),
      })
  return rows


def _floats(values: np.ndarray) -> list[float]:
  return [float(value) for value in np.asarray(values).reshape(-1)]
