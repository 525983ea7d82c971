"""SGD, SGD with momentum, Adam and RMSprop on one config, with a report a person reads.

Usage (Flax-example style; any config field can be overridden on the command line)::

    python -m experiments.classification.compare --config configs/classification/digits.py
    python -m experiments.classification.compare --config configs/classification/fashion_mnist.py
    --config.data_dir=/data
    python -m experiments.classification.compare --config configs/classification/digits.py
    --config.num_epochs=5 \\
        --config.tuned_from=runs/sweep/sweep.json

Every optimizer in ``config.optimizers`` is trained by :func:`experiments.classification.train.
train_and_evaluate` with the same seeds (hence the same initial weights and data order), and
``runs/<config.name>/`` (or ``--workdir``) receives:

* ``summary.json`` — per optimizer: hyperparameters, test accuracy (mean and std over seeds),
  final training loss, steps to the target accuracy, per-class precision/recall/F1, the
  confusion matrix and timings; plus the run's settings, the hardware (the CPU's model, family,
  model number and stepping, the ISA XLA could use, the library versions:
  :func:`experiments.common.hardware.describe`) and the input-pipeline measurement;
* ``summary.md`` — the same as tables;
* ``metrics.csv`` — the learning curves, one row per optimizer, seed and epoch;
* ``learning_curves.png``, ``per_class.png`` and ``confusion_rmsprop.png``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from experiments.classification import data as data_lib
from experiments.classification import metrics, plots, schema, train
from experiments.classification.results import RunResult
from experiments.classification.steps import augment_images
from experiments.common import cli, data_order
from experiments.common import hardware as hardware_lib
from experiments.common import optimizers as optimizer_lib
from experiments.common.tables import markdown_table

PLOTS = ("learning_curves.png", "per_class.png", "confusion_rmsprop.png")


def measure_input_pipeline(
    config: ml_collections.ConfigDict, dataset: data_lib.Dataset, repeats: int = 5
) -> dict[str, float]:
  """Time to produce one epoch of training batches on the device, without any training.

  It runs exactly the input work of an epoch — drawing the permutation, gathering every batch
  from the on-device arrays and augmenting when the config asks — as one compiled program,
  and reports the median of ``repeats`` runs. Compared with the training time per epoch this
  says how much of an epoch the input pipeline could at most account for.
  """
  images = jax.device_put(dataset.train_images)
  batch_size = config.batch_size
  augment = bool(config.augment)

  @jax.jit
  def produce_epoch(key: jax.Array) -> jax.Array:
    permutation_key, augment_key = jax.random.split(key)
    batches = data_order.epoch_batches(permutation_key, images.shape[0], batch_size)
    gathered = images[batches]  # (steps, batch, H, W, C)
    if augment:
      keys = jax.random.split(augment_key, batches.shape[0])
      gathered = jax.vmap(augment_images)(gathered, keys)
    return jnp.sum(gathered)  # Reduce, so nothing of the work is skipped.

  jax.block_until_ready(produce_epoch(jax.random.key(0)))
  durations = []
  for repeat in range(repeats):
    tick = time.perf_counter()
    jax.block_until_ready(produce_epoch(jax.random.key(repeat + 1)))
    durations.append(time.perf_counter() - tick)
  return {"input_s_per_epoch": float(np.median(durations))}


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | Path | None = None,
    *,
    optimizers: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
  """Trains every optimizer of ``config`` and writes the report into ``workdir``.

  Args:
    config: a config from ``configs/``.
    workdir: output folder; default ``runs/<config.name>``.
    optimizers: names to run, in order; default every key of ``config.optimizers`` in the
      order of :data:`experiments.common.optimizers.OPTIMIZERS`, then the entries with a
      ``kind`` (variants) in the config's order.
    progress: show a tqdm bar (one tick per optimizer and epoch).

  Returns:
    The summary written to ``summary.json``.
  """
  schema.check_config(config)
  workdir = Path(workdir) if workdir else Path("runs") / config.name
  names = list(optimizers) if optimizers else [
      name for name in optimizer_lib.OPTIMIZERS if name in config.optimizers
  ] + [name for name in config.optimizers if name not in optimizer_lib.OPTIMIZERS]
  unknown = [name for name in names if name not in config.optimizers]
  if unknown or not names:
    raise cli.ConfigError(
        f"optimizers {unknown or names} not in config.optimizers ({sorted(config.optimizers)})."
    )
  check_replaceable(workdir)
  start = time.perf_counter()
  dataset = data_lib.load_config_dataset(config)
  schema.check_data_fits(config, dataset)
  # Everything is written into a fresh folder that replaces ``workdir`` only when the whole
  # comparison has succeeded: a failed or interrupted run never mixes with an earlier one.
  staging = workdir.parent / f".{workdir.name}.partial-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  try:
    summary = _train_and_report(config, names, dataset, staging, start, progress)
    publish(staging, workdir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return summary


def check_replaceable(workdir: Path) -> None:
  """Raises :class:`experiments.common.cli.ConfigError` unless ``workdir`` may receive a comparison.

  It may if it does not exist, is empty, or holds an earlier comparison (its ``summary.json``),
  which the new run replaces whole. Any other folder is left alone.
  """
  cli.check_workdir(str(workdir))
  if not workdir.exists():
    return
  if any(workdir.iterdir()) and not (workdir / "summary.json").is_file():
    raise cli.ConfigError(
        f"--workdir={workdir} holds files that are not a comparison's (no summary.json); "
        f"pass a new folder."
    )


def publish(staging: Path, workdir: Path) -> None:
  """Replaces ``workdir`` (if any) by the finished ``staging`` folder."""
  retired = workdir.parent / f".{workdir.name}.replaced-{os.getpid()}"
  if workdir.exists():
    workdir.rename(retired)
  staging.rename(workdir)
  shutil.rmtree(retired, ignore_errors=True)


def _train_and_report(
    config: ml_collections.ConfigDict,
    names: Sequence[str],
    dataset: data_lib.Dataset,
    workdir: Path,
    start: float,
    progress: bool,
) -> dict[str, Any]:
  """Trains each optimizer of ``names`` and writes the report into ``workdir``."""
  results: list[RunResult] = []
  with tqdm(total=len(names) * config.num_epochs, desc=config.name, disable=not progress,
            unit="epoch") as bar:
    for name in names:
      run_config = ml_collections.ConfigDict(config.to_dict())
      run_config.optimizer = name
      results.append(
          train.train_and_evaluate(run_config, workdir / name, dataset=dataset, progress=bar)
      )
  pipeline = measure_input_pipeline(config, dataset)
  summaries = {
      result.optimizer: metrics.summarize_run(
          result, dataset.num_classes, config.target_accuracy
      )
      for result in results
  }
  train_s_per_epoch = float(np.mean([
      result.train_time_s / (config.num_epochs * len(result.seeds)) for result in results
  ]))
  pipeline["train_s_per_epoch_per_seed"] = train_s_per_epoch
  pipeline["input_share_upper_bound"] = pipeline["input_s_per_epoch"] / train_s_per_epoch
  summary = {
      "config": config.name,
      "dataset": dataset.name,
      "num_train": int(dataset.train_images.shape[0]),
      "num_test": int(dataset.test_images.shape[0]),
      "class_names": list(dataset.class_names),
      "model": config.model,
      "model_kwargs": config.model_kwargs.to_dict() if config.model_kwargs else {},
      "batch_size": config.batch_size,
      "num_epochs": config.num_epochs,
      "num_seeds": config.num_seeds,
      "lr_schedule": config.lr_schedule,
      "augment": bool(config.augment),
      "target_accuracy": config.target_accuracy,
      "tuned_from": config.tuned_from,
      "hardware": hardware_lib.describe(),
      "input_pipeline": pipeline,
      "total_wall_time_s": time.perf_counter() - start,
      "optimizers": summaries,
  }
  write_report(summary, results, workdir, dataset.class_names)
  return summary


def write_report(
    summary: dict[str, Any],
    results: Sequence[RunResult],
    workdir: Path,
    class_names: Sequence[str],
) -> None:
  """Writes summary.json, summary.md, metrics.csv and the PNG plots."""
  with open(workdir / "summary.json", "w") as handle:
    json.dump(summary, handle, indent=2)
  rows = [row for result in results for row in metrics.curve_rows(result)]
  with open(workdir / "metrics.csv", "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  title = f"{summary['config']} ({summary['model']})"
  plots.plot_learning_curves(results, workdir / "learning_curves.png", title)
  plots.plot_per_class(summary["optimizers"], class_names, workdir / "per_class.png", title)
  focus = "rmsprop" if "rmsprop" in summary["optimizers"] else next(iter(summary["optimizers"]))
  plots.plot_confusion_matrix(
      summary["optimizers"][focus]["confusion_matrix"], class_names,
      workdir / f"confusion_{focus}.png",
      f"{optimizer_lib.OPTIMIZER_LABELS.get(focus, focus)} on {summary['config']} "
      f"({summary['model']}): test confusion matrix, summed over {summary['num_seeds']} "
      f"seed{'s' if summary['num_seeds'] > 1 else ''}",
  )
  (workdir / "summary.md").write_text(markdown_report(summary, class_names))


def steps_to_target_text(result: Mapping[str, Any], num_seeds: int) -> str:
  """An optimizer's steps to the target accuracy as read: ``125 ± 9``, or ``not reached (2/3
  seeds)`` when some seed never reached it."""
  if result["steps_to_target"] is None:
    return f"not reached ({result['target_reached_seeds']}/{num_seeds} seeds)"
  return f"{result['steps_to_target']:.0f} ± {result['steps_to_target_std']:.0f}"


def model_name(summary: Mapping[str, Any]) -> str:
  """The model of a comparison as its tables and titles name it, e.g. ``cnn (channels=(16, 32),
  ...)``."""
  kwargs = ", ".join(f"{key}={value}" for key, value in summary["model_kwargs"].items())
  return f"{summary['model']} ({kwargs})" if kwargs else summary["model"]


def markdown_report(summary: dict[str, Any], class_names: Sequence[str]) -> str:
  """The summary as Markdown tables."""
  seeds = summary["num_seeds"]
  labels = optimizer_lib.OPTIMIZER_LABELS
  names = list(summary["optimizers"])
  rows = []
  for name, result in summary["optimizers"].items():
    hyper = ", ".join(f"{key}={value}" for key, value in result["hyperparameters"].items())
    rows.append([
        labels.get(name, name), hyper,
        f"{result['test_accuracy']:.4f} ± {result['test_accuracy_std']:.4f}",
        f"{result['test_loss']:.4f} ± {result['test_loss_std']:.4f}",
        f"{result['final_train_loss']:.4f} ± {result['final_train_loss_std']:.4f}",
        steps_to_target_text(result, seeds), f"{result['macro_f1']:.4f}",
        f"{result['train_time_s']:.1f}", f"{result['wall_time_s']:.1f}",
    ])
  results_table = markdown_table(
      [f"optimizer (model `{summary['model']}`)", "hyperparameters", "test accuracy",
       "test loss", "final train loss", f"steps to {summary['target_accuracy']:.0%} test acc.",
       "macro F1", "train s", "wall s"],
      rows,
  )
  class_table = markdown_table(
      ["class", *(labels.get(name, name) for name in names)],
      [[class_name, *(
          f"{summary['optimizers'][name]['per_class_precision'][index]:.3f} / "
          f"{summary['optimizers'][name]['per_class_recall'][index]:.3f}" for name in names)]
       for index, class_name in enumerate(class_names)],
  )
  pipeline = summary["input_pipeline"]
  lines = [
      f"# {summary['config']} (model `{summary['model']}`): "
      + " vs ".join(labels.get(name, name) for name in names),
      "",
      f"{summary['dataset']} ({summary['num_train']} train / {summary['num_test']} test images), "
      f"model `{model_name(summary)}`, batch {summary['batch_size']}, {summary['num_epochs']} "
      f"epochs, learning-rate schedule `{summary['lr_schedule']}`, {seeds} seeds per optimizer "
      f"(mean ± std over seeds). Hardware: {hardware_lib.summary_line(summary['hardware'])}.",
      "",
      results_table,
      "",
      f"Per-class test precision / recall of the `{summary['model']}` (mean over seeds):",
      "",
      class_table,
      "",
      f"Input pipeline: producing one epoch of batches on the device alone takes "
      f"{pipeline['input_s_per_epoch'] * 1e3:.1f} ms, against "
      f"{pipeline['train_s_per_epoch_per_seed'] * 1e3:.1f} ms of training per epoch and seed "
      f"(at most {pipeline['input_share_upper_bound']:.1%} of it).",
      "",
      "![learning curves](learning_curves.png)",
      "",
      "![per-class precision and recall](per_class.png)",
      "",
      "![RMSprop confusion matrix](confusion_rmsprop.png)",
      "",
  ]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.classification.compare --config configs/classification/<name>.py``."""

  def compare(config: ml_collections.ConfigDict, workdir: str) -> None:
    summary = run_comparison(config, workdir)
    print(f"wrote {workdir}/summary.json, summary.md, metrics.csv and plots")
    print(f"{summary['config']}, model {model_name(summary)}, {summary['num_seeds']} seed(s); "
          f"steps to {summary['target_accuracy']:.0%} test accuracy:")
    for name, result in summary["optimizers"].items():
      print(
          f"  {name:9s} test accuracy {result['test_accuracy']:.4f} ± "
          f"{result['test_accuracy_std']:.4f}  steps to target "
          f"{steps_to_target_text(result, summary['num_seeds'])}"
      )

  cli.run_job(compare, schema=schema.SCHEMA, argv=argv)


if __name__ == "__main__":
  main()
