"""PNG figures of a comparison (matplotlib, Agg backend: no display needed).

* :func:`plot_learning_curves` — training loss, test loss and test accuracy per epoch, every
  optimizer on the same axes; lines are the mean over seeds, bands one standard deviation.
* :func:`plot_per_class` — per-class precision and recall, one panel per optimizer; the y axis
  and the error bars end at 1.
* :func:`plot_confusion_matrix` — one optimizer's confusion matrix (counts summed over seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from experiments.classification.results import RunResult
from experiments.common.optimizers import OPTIMIZER_LABELS

OPTIMIZER_COLORS = {"sgd": "tab:gray", "momentum": "tab:blue", "adam": "tab:green",
                    "rmsprop": "tab:red"}


def plot_learning_curves(results: Sequence[RunResult], path: Path, title: str) -> Path:
  """Train loss, test loss and test accuracy against epochs for every optimizer."""
  panels = (
      ("train_loss", "training loss (running mean)", True),
      ("test_loss", "test loss", True),
      ("test_accuracy", "test accuracy", False),
  )
  figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  num_seeds = min(result.train_loss.shape[0] for result in results)
  for axis, (field, label, log_scale) in zip(axes, panels, strict=True):
    for result in results:
      values = getattr(result, field)
      epochs = np.arange(1, values.shape[1] + 1)
      mean, std = values.mean(axis=0), values.std(axis=0)
      color = OPTIMIZER_COLORS.get(result.optimizer)
      axis.plot(epochs, mean, label=OPTIMIZER_LABELS.get(result.optimizer, result.optimizer),
                color=color, marker="o" if len(epochs) <= 5 else None, markersize=3)
      if num_seeds > 1:
        axis.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    if log_scale:
      axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
  axes[2].legend(loc="lower right")
  if num_seeds > 1:
    figure.suptitle(f"{title}: mean over {num_seeds} seeds, band = one standard deviation")
  else:
    figure.suptitle(f"{title}: one seed")
  return _save(figure, path)


def plot_per_class(
    summaries: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], path: Path,
    title: str,
) -> Path:
  """Per-class precision and recall (mean over seeds, error bar = std), one panel per optimizer."""
  names = list(summaries)
  figure, axes = plt.subplots(len(names), 1, figsize=(max(8, len(class_names)), 2.6 * len(names)),
                              sharex=True, sharey=True, squeeze=False)
  positions = np.arange(len(class_names))
  width = 0.38
  # Scores are at most 1: an error bar stops there (the std of a score near 1 is lopsided).
  bars = {
      name: {metric: (np.asarray(summaries[name][f"per_class_{metric}"], np.float64),
                      np.asarray(summaries[name].get(f"per_class_{metric}_std")
                                 or np.zeros(len(class_names)), np.float64))
             for metric in ("precision", "recall")}
      for name in names
  }
  # One y range for every panel, so that the optimizers can be compared by eye; it starts
  # below the lowest bar's error bar and ends at 1.
  low = min(float(np.min(mean - std)) for metrics in bars.values()
            for mean, std in metrics.values())
  bottom = max(0.0, np.floor((low - 0.02) * 50) / 50)
  for axis, name in zip(axes[:, 0], names, strict=True):
    for offset, metric, color in ((-width / 2, "precision", "tab:blue"),
                                  (width / 2, "recall", "tab:orange")):
      mean, std = bars[name][metric]
      errors = np.stack([np.minimum(std, mean - bottom), np.minimum(std, 1.0 - mean)])
      axis.bar(positions + offset, mean, width, yerr=np.clip(errors, 0.0, None), label=metric,
               color=color)
    axis.set_ylim(bottom, 1.0)
    axis.set_ylabel(OPTIMIZER_LABELS.get(name, name), fontsize=9)
    axis.grid(True, axis="y", alpha=0.3)
  axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)
  axes[-1, 0].set_xticks(positions, class_names, rotation=_tick_rotation(class_names),
                         ha="right" if _tick_rotation(class_names) else "center")
  axes[-1, 0].set_xlabel("class")
  starts = f"; y axis from {bottom:.2f}" if bottom > 0 else ""
  figure.suptitle(f"{title}: per-class test precision and recall (mean over seeds, error bar "
                  f"one std, at most 1{starts})")
  return _save(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> Path:
  """A confusion matrix as a heat map with the counts written in the cells."""
  counts = np.asarray(matrix)
  figure, axis = plt.subplots(figsize=(1.0 + 0.6 * len(class_names), 0.6 * len(class_names)))
  image = axis.imshow(counts, cmap="Blues")
  threshold = counts.max() / 2 if counts.size else 0
  for row in range(counts.shape[0]):
    for column in range(counts.shape[1]):
      axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=8,
                color="white" if counts[row, column] > threshold else "black")
  ticks = np.arange(len(class_names))
  rotation = _tick_rotation(class_names)
  axis.set_xticks(ticks, class_names, rotation=rotation, ha="right" if rotation else "center")
  axis.set_yticks(ticks, class_names)
  axis.set_xlabel("predicted class")
  axis.set_ylabel("true class")
  axis.set_title(title)
  figure.colorbar(image, ax=axis, fraction=0.046)
  return _save(figure, path)


def _tick_rotation(class_names: Sequence[str]) -> int:
  """Tick labels are tilted only when they are words that would overlap (not digits)."""
  return 30 if len(max(class_names, key=len)) > 3 else 0


def _save(figure: Any, path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path
