"""The Fashion-MNIST write-up's figures and tables, built from finished runs.

Reads the comparisons ``runs/<name>/summary.json`` and ``metrics.csv`` (any of
:data:`COMPARISONS` that exist) and the sweeps ``runs/<sweep>/sweep.json`` (:data:`SWEEPS`), and
writes into ``--out`` (default ``docs/experiments``):

* ``fashion_learning_curves.png`` — test accuracy and test loss per epoch, one row per
  comparison, mean over seeds with a one-standard-deviation band;
* ``fashion_per_class.png`` — per-class test precision and recall of every optimizer;
* ``fashion_confusion_<name>.png`` — the four optimizers' confusion matrices (rows normalised:
  the diagonal is each class's recall), summed over seeds;
* ``fashion_sweeps.png`` — validation accuracy against learning rate in each sweep;
* ``fashion_tables.md`` — the tables docs/experiments.md quotes.

A comparison run one optimizer per process (``runs/<name>_<optimizer>/``) is joined first
(:func:`merge_parts`).

  python -m experiments.classification.fashion_report [--runs runs] [--out docs/experiments]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from experiments.classification.plots import OPTIMIZER_COLORS
from experiments.common.optimizers import OPTIMIZER_LABELS as LABELS
from experiments.common.tables import markdown_table

COMPARISONS = {
    "fashion_mnist_mlp": "MLP 256-256, framework defaults",
    "fashion_mnist_mlp_tuned": "MLP 256-256, tuned on validation split",
    "fashion_mnist_cnn_cpu": "CNN (2c2d, half width), framework defaults",
    "fashion_mnist_cnn_cpu_tuned": "CNN (2c2d, half width), tuned on validation split",
}
SWEEPS = ("sweep_fashion_mlp", "sweep_fashion_cnn")
# Crowded Valley (Schmidt et al., 2021), DeepOBS fmnist_2c2d, 100 epochs, tuned constant
# learning rates, final test accuracy, one seed (see /work/shared/REFERENCE.md / the docs).
CROWDED_VALLEY = {"sgd": 0.9184, "momentum": 0.9186, "adam": 0.9210, "rmsprop": 0.9171}
THRESHOLDS = (0.85, 0.86, 0.87, 0.88, 0.89, 0.90)


def load_comparison(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """``summary.json`` and the curves: ``curves[f"{optimizer}/{field}"]`` is (seeds, epochs)."""
  summary = json.loads((folder / "summary.json").read_text())
  rows: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
  with open(folder / "metrics.csv") as handle:
    for row in csv.DictReader(handle):
      for field in ("test_accuracy", "test_loss", "train_loss"):
        per_seed = rows.setdefault((row["optimizer"], field), {})
        per_seed.setdefault(int(row["seed"]), {})[int(row["epoch"])] = float(row[field])
  curves = {
      f"{name}/{field}": np.array([[epochs[e] for e in sorted(epochs)]
                                   for _, epochs in sorted(per_seed.items())])
      for (name, field), per_seed in rows.items()
  }
  return summary, curves


def merge_parts(folder: Path, order: Sequence[str] = ("sgd", "momentum", "adam", "rmsprop")
                ) -> bool:
  """Joins per-optimizer comparisons ``<folder>_<optimizer>/`` into ``<folder>/``.

  A long comparison may run one optimizer per process (so that finished optimizers survive
  an interruption); with the same config and seeds each part equals the corresponding part of
  one run. Writes ``summary.json`` (``total_wall_time_s`` summed, ``merged_from`` naming the
  parts) and ``metrics.csv``; returns whether ``<folder>`` now holds a comparison. A
  comparison run whole (a ``summary.json`` without ``merged_from``) is left alone.
  """
  existing = folder / "summary.json"
  if existing.is_file() and "merged_from" not in json.loads(existing.read_text()):
    return True
  parts = [folder.with_name(f"{folder.name}_{name}") for name in order]
  parts = [part for part in parts if (part / "summary.json").is_file()]
  if not parts:
    return existing.is_file()
  summaries = [json.loads((part / "summary.json").read_text()) for part in parts]
  merged = dict(summaries[0])
  merged["optimizers"] = {name: result for summary in summaries
                          for name, result in summary["optimizers"].items()}
  merged["optimizers"] = {name: merged["optimizers"][name] for name in order
                          if name in merged["optimizers"]}
  merged["total_wall_time_s"] = sum(summary["total_wall_time_s"] for summary in summaries)
  merged["config"] = folder.name
  merged["merged_from"] = [part.name for part in parts]
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "summary.json").write_text(json.dumps(merged, indent=2))
  header, rows = None, []
  for part in parts:
    lines = (part / "metrics.csv").read_text().splitlines()
    header = lines[0]
    rows += lines[1:]
  (folder / "metrics.csv").write_text("\n".join([header or "", *rows]) + "\n")
  return True


def epochs_to(curve: np.ndarray, threshold: float) -> list[int | None]:
  """Per seed: the first epoch whose test accuracy reaches ``threshold`` (None: never)."""
  result: list[int | None] = []
  for seed_curve in curve:
    reached = np.nonzero(seed_curve >= threshold)[0]
    result.append(int(reached[0]) + 1 if reached.size else None)
  return result


def _fmt_epochs(values: Sequence[int | None]) -> str:
  reached = [value for value in values if value is not None]
  if len(reached) < len(values):
    return f"{len(reached)}/{len(values)} seeds" if reached else "never"
  mean = float(np.mean(reached))
  return f"{mean:.1f}" if min(reached) != max(reached) else f"{reached[0]}"


def _hyper(hparams: Mapping[str, Any]) -> str:
  keep = {k: v for k, v in hparams.items() if k in ("learning_rate", "decay", "momentum")}
  return ", ".join(f"{k.replace('learning_rate', 'lr')}={v:.4g}" for k, v in keep.items())


def tables(comparisons: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
           sweeps: Mapping[str, dict[str, Any]]) -> str:
  """The Markdown tables of the write-up (an orphan page of the Sphinx site)."""
  lines = ["---", "orphan: true", "---", "",
           "# Fashion-MNIST: every table of the runs", "",
           "Generated by `python -m experiments.classification.fashion_report` from `runs/`; "
           "quoted in [the experiments page](../experiments.md).", "",
           "## Test accuracy (mean ± std over seeds, final epoch)", ""]
  rows = []
  for name, (summary, _) in comparisons.items():
    for opt, result in summary["optimizers"].items():
      steps = result["steps_to_target"]
      spe = result["steps_per_epoch"]
      target = f"{summary['target_accuracy']:.0%}: "
      if steps is None:
        reached = f"{target}{result['target_reached_seeds']}/{summary['num_seeds']} seeds"
      else:
        reached = f"{target}{steps:.0f} ± {result['steps_to_target_std']:.0f} ({steps / spe:.1f})"
      per_seed = ", ".join(f"{value:.4f}" for value in result["test_accuracy_per_seed"])
      rows.append([
          name, LABELS[opt], _hyper(result["hyperparameters"]),
          f"{result['test_accuracy']:.4f} ± {result['test_accuracy_std']:.4f}", per_seed,
          f"{result['best_epoch_test_accuracy']:.4f}", f"{result['test_loss']:.4f}", reached,
          f"{result['train_time_s']:.0f}", f"{result['wall_time_s']:.0f}"])
  lines.append(markdown_table(
      ["comparison", "optimizer", "hyperparameters", "test accuracy", "per seed",
       "best epoch's acc.", "test loss", "steps to target (epochs)", "train s", "wall s"], rows))
  lines += ["", "Total wall time per comparison: " + "; ".join(
      f"{name} {summary['total_wall_time_s']:.0f} s ({summary['num_epochs']} epochs x "
      f"{summary['num_seeds']} seeds x {len(summary['optimizers'])} optimizers)"
      for name, (summary, _) in comparisons.items()) + ".", ""]
  lines += ["## Epochs to a test accuracy (first epoch reaching it; mean over seeds)", ""]
  lines.append(markdown_table(
      ["comparison", "optimizer", *(f"{t:.0%}" for t in THRESHOLDS)],
      [[name, LABELS[opt], *(_fmt_epochs(epochs_to(curves[f"{opt}/test_accuracy"], t))
                             for t in THRESHOLDS)]
       for name, (summary, curves) in comparisons.items() for opt in summary["optimizers"]]))
  for name, (summary, _) in comparisons.items():
    names = list(summary["optimizers"])
    lines += ["", f"## Per-class test precision / recall: {name} (mean over seeds)", ""]
    rows = [[class_name, *(f"{summary['optimizers'][n]['per_class_precision'][index]:.3f} / "
                           f"{summary['optimizers'][n]['per_class_recall'][index]:.3f}"
                           for n in names)]
            for index, class_name in enumerate(summary["class_names"])]
    rows.append(["min over classes", *(
        f"{min(summary['optimizers'][n]['per_class_precision']):.3f} / "
        f"{min(summary['optimizers'][n]['per_class_recall']):.3f}" for n in names)])
    lines.append(markdown_table(["class", *(LABELS[n] for n in names)], rows))
  for sweep_name, sweep in sweeps.items():
    epochs = sweep.get("num_epochs") or sweep.get("config", {}).get("num_epochs", "?")
    lines += ["", f"## Sweep {sweep_name} (validation accuracy after {epochs} epochs, by trial)",
              ""]
    lines.append(markdown_table(
        ["optimizer", "hyperparameters", "validation acc.", "test acc.", "diverged"],
        [[LABELS[record["optimizer"]], _hyper(record["hparams"]),
          _num(record.get("validation_accuracy")), _num(record.get("test_accuracy")),
          "yes" if record.get("diverged") else "no"] for record in sweep["trials"]]))
    lines += ["", "Best trials (chosen on validation accuracy): " + "; ".join(
        f"{LABELS[n]} {_hyper(b['hparams'])} (val. {b['validation_accuracy']:.4f})"
        for n, b in sweep["best"].items() if b) + "."]
  return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
  return "—" if value is None else f"{value:.4f}"


def plot_curves(comparisons: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
                path: Path) -> None:
  """Test accuracy and test loss against epochs, one row per comparison."""
  figure, axes = plt.subplots(len(comparisons), 2, figsize=(12, 3.6 * len(comparisons)),
                              squeeze=False)
  for row, (name, (summary, curves)) in enumerate(comparisons.items()):
    for column, (field, label) in enumerate((("test_accuracy", "test accuracy"),
                                             ("test_loss", "test loss"))):
      axis = axes[row, column]
      for opt in summary["optimizers"]:
        values = curves[f"{opt}/{field}"]
        epochs = np.arange(1, values.shape[1] + 1)
        mean, std = values.mean(axis=0), values.std(axis=0)
        axis.plot(epochs, mean, marker="o", markersize=3, color=OPTIMIZER_COLORS[opt],
                  label=LABELS[opt])
        axis.fill_between(epochs, mean - std, mean + std, color=OPTIMIZER_COLORS[opt],
                          alpha=0.2, linewidth=0)
      if field == "test_accuracy" and summary["model"] == "2c2d":
        axis.axhspan(min(CROWDED_VALLEY.values()), max(CROWDED_VALLEY.values()),
                     color="black", alpha=0.12,
                     label="Crowded Valley, full 2c2d,\n100 epochs: 91.7-92.1%")
      axis.xaxis.set_major_locator(MaxNLocator(integer=True))
      axis.set_xlabel(f"epoch ({summary['optimizers'][opt]['steps_per_epoch']} steps of "
                      f"batch {summary['batch_size']})")
      axis.set_ylabel(label)
      axis.grid(True, alpha=0.3)
      axis.set_title(f"{COMPARISONS.get(name, name)}: {label}", fontsize=10)
    axes[row, 0].legend(loc="lower right", fontsize=8)
  figure.suptitle(f"Fashion-MNIST, 10,000 test images: mean over {summary['num_seeds']} "
                  "seeds, band = one standard deviation", fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def plot_per_class(comparisons: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
                   path: Path) -> None:
  """Per-class precision and recall, one row per comparison, optimizers side by side."""
  figure, axes = plt.subplots(len(comparisons), 2, figsize=(13, 3.8 * len(comparisons)),
                              squeeze=False)
  for row, (name, (summary, _)) in enumerate(comparisons.items()):
    classes = summary["class_names"]
    names = list(summary["optimizers"])
    width = 0.8 / len(names)
    for column, metric in enumerate(("precision", "recall")):
      axis = axes[row, column]
      for index, opt in enumerate(names):
        values = np.array(summary["optimizers"][opt][f"per_class_{metric}"])
        errors = np.array(summary["optimizers"][opt][f"per_class_{metric}_std"])
        positions = np.arange(len(classes)) + (index - (len(names) - 1) / 2) * width
        axis.bar(positions, values, width, yerr=errors, color=OPTIMIZER_COLORS[opt],
                 label=LABELS[opt], error_kw={"elinewidth": 0.8})
      axis.set_xticks(np.arange(len(classes)), classes, rotation=30, ha="right", fontsize=8)
      axis.set_ylim(0.4, 1.0)
      axis.set_ylabel(f"test {metric}")
      axis.grid(True, axis="y", alpha=0.3)
      axis.set_title(f"{COMPARISONS.get(name, name)}: per-class {metric}", fontsize=10)
    axes[row, 1].legend(loc="lower left", fontsize=8, ncol=2)
  figure.suptitle("Fashion-MNIST per-class test precision and recall, mean over seeds "
                  "(error bar: std over seeds)", fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def plot_confusions(name: str, summary: dict[str, Any], path: Path) -> None:
  """The four optimizers' confusion matrices, rows normalised to recall (%)."""
  names = list(summary["optimizers"])
  classes = summary["class_names"]
  figure, axes = plt.subplots(2, 2, figsize=(13, 12))
  for axis, opt in zip(axes.flat, names, strict=False):
    matrix = np.array(summary["optimizers"][opt]["confusion_matrix"], dtype=float)
    normalised = 100 * matrix / matrix.sum(axis=1, keepdims=True)
    axis.imshow(normalised, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
      for j in range(len(classes)):
        if normalised[i, j] >= 1.0:
          axis.text(j, i, f"{normalised[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 60 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    accuracy = summary["optimizers"][opt]["test_accuracy"]
    axis.set_title(f"{LABELS[opt]} (test accuracy {accuracy:.4f})", fontsize=10)
  figure.suptitle(f"{COMPARISONS.get(name, name)}: test confusion matrices, % of each true "
                  f"class, summed over {summary['num_seeds']} seeds", fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_sweeps(sweeps: Mapping[str, dict[str, Any]], path: Path) -> None:
  """Validation accuracy against learning rate, one panel per sweep (RMSprop: one line per
  decay); diverged trials are marked at the bottom."""
  figure, axes = plt.subplots(1, len(sweeps), figsize=(6.5 * len(sweeps), 4.2), squeeze=False)
  for axis, (name, sweep) in zip(axes[0], sweeps.items(), strict=True):
    lines: dict[str, list[tuple[float, float | None, bool]]] = {}
    for record in sweep["trials"]:
      opt, hparams = record["optimizer"], record["hparams"]
      key = opt if opt != "rmsprop" else f"rmsprop/{hparams.get('decay', 0.9):g}"
      lines.setdefault(key, []).append(
          (hparams["learning_rate"], record.get("validation_accuracy"), record["diverged"]))
    accuracies = [a for points in lines.values() for _, a, d in points if a and not d]
    low = max(0.0, min(accuracies) - 0.01) if accuracies else 0.0
    decay_styles = {"0.9": "-", "0.99": "--", "0.999": ":"}
    for key, points in sorted(lines.items()):
      opt, _, decay = key.partition("/")
      points.sort()
      kept = [(lr, a) for lr, a, d in points if a is not None and not d]
      label = LABELS[opt] + (f", decay {decay}" if decay else "")
      if kept:
        axis.plot(*zip(*kept, strict=True), marker="o", markersize=4, label=label,
                  color=OPTIMIZER_COLORS[opt], linestyle=decay_styles.get(decay, "-"))
      for lr, _, diverged in points:
        if diverged:
          axis.plot(lr, low, marker="x", color=OPTIMIZER_COLORS[opt], markersize=8)
    axis.set_xscale("log")
    axis.set_ylim(low - 0.002, None)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("validation accuracy (6,000 held-out images)")
    epochs = sweep.get("num_epochs") or sweep.get("config", {}).get("num_epochs", "?")
    unit = "epoch" if epochs == 1 else "epochs"
    axis.set_title(f"{name}: {epochs} {unit} per trial, x = diverged", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
  figure.suptitle("Learning-rate sweeps on Fashion-MNIST (validation split, never the test set)",
                  fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", default="runs", help="folder holding the runs")
  parser.add_argument("--out", default="docs/experiments", help="output folder")
  args = parser.parse_args(argv)
  runs, out = Path(args.runs), Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  comparisons = {name: load_comparison(runs / name) for name in COMPARISONS
                 if merge_parts(runs / name)}
  if not comparisons:
    raise SystemExit(f"error: no Fashion-MNIST comparison in {runs}/ ({', '.join(COMPARISONS)})")
  sweeps = {name: json.loads((runs / name / "sweep.json").read_text()) for name in SWEEPS
            if (runs / name / "sweep.json").is_file()}
  plot_curves(comparisons, out / "fashion_learning_curves.png")
  plot_per_class(comparisons, out / "fashion_per_class.png")
  for name, (summary, _) in comparisons.items():
    plot_confusions(name, summary, out / f"fashion_confusion_{name}.png")
  if sweeps:
    plot_sweeps(sweeps, out / "fashion_sweeps.png")
  (out / "fashion_tables.md").write_text(tables(comparisons, sweeps))
  print(f"wrote {out}/fashion_*.png and fashion_tables.md from {', '.join(comparisons)}")


if __name__ == "__main__":
  main()
