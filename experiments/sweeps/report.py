"""A sweep's report: ``sweep.md`` (best trials, timings, every trial) and the plots of test
accuracy over the hyperparameters (:func:`plot_heatmap`, :func:`plot_sensitivity`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (after matplotlib.use: the backend must be chosen first)

from experiments.common.tables import markdown_table


def _format(value: Any, digits: int = 4) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return f"{value:.{digits}g}"
  return str(value)


def model_text(config: Mapping[str, Any]) -> str:
  """The model of a sweep as its titles and tables name it: ``mlp (hidden_sizes=(64,), ...)``."""
  kwargs = ", ".join(f"{key}={value}" for key, value in dict(config["model_kwargs"]).items())
  return f"{config['model']} ({kwargs})" if kwargs else str(config["model"])


def write_markdown(path: Path, summary: Mapping[str, Any]) -> None:
  """``sweep.md``: best trials, timings and every trial, sorted by validation accuracy."""
  lines = [f"# Sweep `{summary['name']}` (model `{summary['config']['model']}`)", ""]
  lines += [
      f"{summary['config']['dataset']}, {summary['config']['model']} "
      f"{summary['config']['model_kwargs']}, {summary['config']['num_epochs']} epochs of "
      f"batch {summary['config']['batch_size']}, seeds {summary['seeds']}, "
      f"selection by {summary['selection_metric']}. Hardware: {summary['hardware']}.",
      "",
      f"## Best trial per optimizer (model `{model_text(summary['config'])}`)",
      "",
  ]
  best_rows = []
  for name, best in summary["best"].items():
    if best is None:
      best_rows.append([name, "every trial diverged", "—", "—", "—"])
      continue
    hparams = ", ".join(f"{k}={_format(v)}" for k, v in best["hparams"].items())
    best_rows.append([name, hparams, _format(best["validation_accuracy"]),
                      _format(best["test_accuracy"]), _format(best["train_loss"])])
  lines.append(markdown_table(
      ["optimizer", "hyperparameters", "validation acc.", "test acc.", "train loss"], best_rows))
  lines += ["", "## Timing", ""]
  lines.append(markdown_table(
      ["optimizer", "runs", "mode", "compile s", "compile CPU s", "run s", "run CPU s"],
      [[name, timing["runs"], mode, f"{timing['compile_s']:.2f}", f"{timing['compile_cpu_s']:.2f}",
        f"{timing['run_s']:.2f}", f"{timing['run_cpu_s']:.2f}"]
       for name, modes in summary["timing"]["per_optimizer"].items()
       for mode, timing in modes.items()]))
  speedups = summary["timing"].get("speedup")
  if speedups:
    lines += ["", "Speed-up of the vmapped sweep (run time, compilation excluded):", ""]
    for name, values in speedups.items():
      lines.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in values.items()))
  lines += ["", "## Every trial", ""]
  records = sorted(summary["trials"], key=lambda r: (r["optimizer"],
                                                      -(r["validation_accuracy"] or 0.0)))
  lines.append(markdown_table(
      ["optimizer", "trial", "hyperparameters", "diverged", "validation acc.", "test acc.",
       "train loss"],
      [[record["optimizer"], record["trial"],
        ", ".join(f"{k}={_format(v)}" for k, v in record["hparams"].items()), record["diverged"],
        _format(record["validation_accuracy"]), _format(record["test_accuracy"]),
        _format(record["train_loss"])] for record in records]))
  if summary.get("plots"):
    lines += ["", "## Plots", ""] + [f"![{plot}]({plot})" for plot in summary["plots"]]
  path.write_text("\n".join(lines) + "\n")


def _label_color(value: float, vmin: float) -> str:
  """Black on viridis' light (yellow-green) upper range, white on its dark lower range."""
  if not np.isfinite(value):
    return "black"
  return "black" if (value - vmin) / max(1.0 - vmin, 1e-9) > 0.55 else "white"


def plot_heatmap(
    path: Path, records: Sequence[Mapping[str, Any]], x_name: str, y_name: str, title: str
) -> bool:
  """Test accuracy over two hyperparameters; a grid as a heatmap, random trials as a scatter.

  Diverged trials are marked with a cross. Returns False (and writes nothing) when the records
  do not vary both hyperparameters.
  """
  rows = [r for r in records if x_name in r["hparams"] and y_name in r["hparams"]]
  if not rows:
    return False
  xs = np.array([r["hparams"][x_name] for r in rows], np.float64)
  ys = np.array([r["hparams"][y_name] for r in rows], np.float64)
  accuracy = np.array([r["test_accuracy"] if r["test_accuracy"] is not None else np.nan
                       for r in rows])
  diverged = np.array([r["diverged"] for r in rows])
  x_values, y_values = np.unique(xs), np.unique(ys)
  if len(x_values) < 2 or len(y_values) < 2:
    return False
  figure, axes = plt.subplots(figsize=(7.5, 5.5))
  is_grid = len(x_values) * len(y_values) == len(rows)
  # The colour scale starts at the worst non-diverged trial, so that differences near the top
  # stay visible; the cell labels give the numbers.
  finite = accuracy[~diverged & np.isfinite(accuracy)]
  vmin = float(np.floor(finite.min() * 10) / 10) if finite.size else 0.0
  image: Any
  if is_grid:
    table = np.full((len(y_values), len(x_values)), np.nan)
    crossed = np.zeros_like(table, bool)
    for x, y, acc, bad in zip(xs, ys, accuracy, diverged, strict=True):
      row, col = np.searchsorted(y_values, y), np.searchsorted(x_values, x)
      table[row, col], crossed[row, col] = (np.nan if bad else acc), bad
    image = axes.imshow(table, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=1)
    for row, col in itertools.product(range(len(y_values)), range(len(x_values))):
      text = "x" if crossed[row, col] else f"{table[row, col]:.2f}"
      axes.text(col, row, text, ha="center", va="center", fontsize=7,
                color="red" if crossed[row, col] else _label_color(table[row, col], vmin))
    axes.set_xticks(range(len(x_values)), [f"{x:.2g}" for x in x_values], rotation=45)
    axes.set_yticks(range(len(y_values)), [f"{y:.4g}" for y in y_values])
  else:
    ok = ~diverged
    image = axes.scatter(xs[ok], ys[ok], c=accuracy[ok], cmap="viridis", vmin=vmin, vmax=1, s=40)
    axes.scatter(xs[~ok], ys[~ok], marker="x", color="red", label="diverged")
    axes.set_xscale("log")
    if (~ok).any():
      axes.legend(loc="best")
  figure.colorbar(image, ax=axes, label="test accuracy (mean over seeds)")
  axes.set_xlabel(x_name)
  axes.set_ylabel(y_name)
  axes.set_title(title)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return True


def _sensitivity_label(name: str, by_rate: Mapping[float, Sequence[Mapping[str, Any]]]) -> str:
  """``name``, and when a learning rate has several trials, of how many each point is the best."""
  most = max(len(trials) for trials in by_rate.values())
  if most == 1:
    return name
  trials = [trial for group in by_rate.values() for trial in group]
  others = sorted({key for trial in trials for key in trial["hparams"] if key != "learning_rate"
                   and len({repr(other["hparams"].get(key)) for other in trials}) > 1})
  what = " x ".join(others) if others else "trial"
  return f"{name}: best of {most} {what} values per learning rate"


def plot_sensitivity(path: Path, records: Sequence[Mapping[str, Any]], title: str) -> None:
  """Test accuracy against learning rate, one line per optimizer.

  Where an optimizer sweeps more than the learning rate (RMSprop's decay, say), each point is
  the best trial at that learning rate by validation accuracy, so the line shows the
  learning-rate sensitivity with the other hyperparameters tuned. Random searches, whose
  learning rates do not repeat, are drawn as points. Diverged trials are plotted at zero
  accuracy with a cross. The legend says which points are such a best (``rmsprop: best of 8
  decay values per learning rate``; by validation accuracy, as the y-axis label says).
  """
  figure, axes = plt.subplots(figsize=(8.5, 6))
  names = list(dict.fromkeys(r["optimizer"] for r in records))
  for index, name in enumerate(names):
    color = f"C{index}"
    rows = [r for r in records if r["optimizer"] == name]
    by_rate: dict[float, list[Mapping[str, Any]]] = {}
    for r in rows:
      by_rate.setdefault(float(r["hparams"]["learning_rate"]), []).append(r)
    rates = sorted(by_rate)
    chosen = []
    for rate in rates:
      finite = [r for r in by_rate[rate] if not r["diverged"]]
      chosen.append(max(finite, key=lambda r: r["validation_accuracy"]) if finite else None)
    accuracy = np.array([c["test_accuracy"] if c else np.nan for c in chosen])
    # A grid gives a curve; drawn learning rates (random, Optuna) do not repeat: points.
    style = "o-" if str(rows[0].get("search", "grid")).startswith("grid") else "o"
    axes.plot(rates, accuracy, style, color=color, label=_sensitivity_label(name, by_rate),
              markersize=4)
    failed = [rate for rate, c in zip(rates, chosen, strict=True) if c is None]
    axes.plot(failed, np.zeros(len(failed)), "x", color=color, markersize=8)
  axes.set_xscale("log")
  axes.set_ylim(0, 1.02)
  axes.set_xlabel("learning rate")
  axes.set_ylabel("test accuracy (mean over seeds)\nof the best trial by validation accuracy")
  axes.set_title(title)
  axes.grid(True, which="both", alpha=0.3)
  # Below the axes: inside, it covered the low-accuracy ends of the curves; beside them, a long
  # entry ("best of 8 decay values ...") squeezed the axes.
  axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
