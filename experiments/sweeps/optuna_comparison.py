"""Sweeps side by side with Optuna alone, on one search space and one validation split.

Five ways to tune RMSprop's learning rate and decay (``configs/sweeps/optuna_comparison.py``):
(a) ``optuna_tpe``: Optuna's TPE one trial after another with its ``MedianPruner`` checked after
every epoch — each trial a jitted epoch called per epoch, the hyperparameters as arguments (so
it compiles once; the same data order and model as the others, so a trial is the same run
whichever method trains it); (b) ``grid`` and (c) ``random``: the vmapped program, a chunk of
trials per call; (d) ``tpe_batches``: TPE asking a round of trials per vmapped call
(:mod:`~experiments.sweeps.optuna_batches`); (e) ``halving``: successive halving of the grid
inside the program (:mod:`~experiments.sweeps.halving`).

Each method is timed from its start (compilation included: a user pays it) and records the best
validation accuracy found so far after each call (a trial, a chunk, a round; halving's pick
exists only at its end), the pick's test accuracy and the trial-epochs trained. Outputs:
``comparison.json``, ``comparison.md`` and ``best_vs_time.png``; the measurements are in
``docs/sweeps.md``.

  python -m experiments.sweeps.optuna_comparison --config configs/sweeps/optuna_comparison.py:digits
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import matplotlib
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.common import cli, data_order, tables
from experiments.common import hardware as hardware_lib
from experiments.common.serialization import to_jsonable
from experiments.sweeps import halving as halving_lib
from experiments.sweeps import schema as sweep_schema
from experiments.sweeps.optuna_batches import run_optuna_batches, suggest
from experiments.sweeps.program import (
  ChunkRunner,
  TrainingSetup,
  TrialMesh,
  chunk_slices,
  make_run_parts,
  make_trial_fn,
  run_keys,
  trial_devices,
)
from experiments.sweeps.search_space import check_space, grid_trials, random_trials, to_plain
from experiments.sweeps.selection import (
  SELECTION_METRIC,
  best_trial,
  diverged_runs,
  divergence_loss_limit,
  trial_records,
)
from experiments.sweeps.validation_split import SweepData, split_validation

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (after matplotlib.use: the backend must be chosen first)

METHODS = {
    "optuna_tpe": "(a) Optuna TPE + median pruner, one trial at a time",
    "grid": "(b) vmapped grid",
    "random": "(c) vmapped random",
    "tpe_batches": "(d) Optuna TPE, a round per vmapped call",
    "halving": "(e) vmapped successive halving of the grid",
}


@dataclasses.dataclass
class MethodRun:
  """One method's search: what it found, when, and what it cost."""

  method: str
  trials: int
  trial_epochs: int
  wall_s: float
  cpu_s: float
  curve: list[tuple[float, float]]  # (seconds since start, best validation accuracy so far)
  pick: dict[str, Any] | None
  details: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def best_validation_accuracy(self) -> float | None:
    return self.pick["validation_accuracy"] if self.pick else None


@dataclasses.dataclass(frozen=True)
class Comparison:
  """What every method shares."""

  config: ml_collections.ConfigDict
  setup: TrainingSetup
  data: SweepData
  keys: jax.Array
  mesh: TrialMesh
  space: dict[str, tuple[str, float, float]]
  loss_limit: float

  def grid(self) -> dict[str, np.ndarray]:
    """``grid_side`` points per name: log-spaced for log-uniform names, else evenly spaced."""
    side = self.config.grid_side
    return grid_trials({
        name: list(np.geomspace(low, high, side) if distribution == "log_uniform"
                   else np.linspace(low, high, side))
        for name, (distribution, low, high) in self.space.items()
    })


def check_comparison_config(
    config: ml_collections.ConfigDict,
) -> dict[str, tuple[str, float, float]]:
  """The checked space; :class:`cli.ConfigError` naming the field for anything that cannot run."""
  try:
    space = check_space(to_plain(config.space), "space")
  except ValueError as error:
    raise cli.ConfigError(str(error)) from None
  unknown = set(config.methods) - set(METHODS)
  if unknown or not config.methods:
    raise cli.ConfigError(f"methods must be a non-empty subset of {tuple(METHODS)}; got "
                          f"{tuple(config.methods)}.")
  if config.num_trials < 1 or config.num_epochs < 1 or config.grid_side < 2:
    raise cli.ConfigError("num_trials and num_epochs must be >= 1 and grid_side >= 2; got "
                          f"{config.num_trials}, {config.num_epochs}, {config.grid_side}.")
  if not 1 <= config.trials_per_call <= config.num_trials:
    raise cli.ConfigError(f"trials_per_call={config.trials_per_call} must be in [1, num_trials="
                          f"{config.num_trials}]: a call cannot be wider than the trials.")
  try:
    halving_lib.check_halving("halving", to_plain(config.halving), config.num_epochs)
  except ValueError as error:
    raise cli.ConfigError(str(error)) from None
  return space


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
) -> dict[str, Any]:
  """Runs the config's methods one after another; writes and returns ``comparison.json``."""
  space = check_comparison_config(config)
  devices = trial_devices(config.devices, config.trials_per_call)
  dataset = dataset if dataset is not None else train.load_config_dataset(config)
  data = split_validation(dataset, config.validation_fraction, config.seed)
  setup = TrainingSetup(
      spec=train.model_spec(config, dataset), optimizer="rmsprop",
      fixed=tuple(sorted(to_plain(config.fixed).items())), batch_size=config.batch_size,
      num_epochs=config.num_epochs, schedule=config.lr_schedule,
      eval_batch_size=config.eval_batch_size,
  )
  comparison = Comparison(
      config=config, setup=setup, data=data, keys=run_keys([config.seed], 1, "shared"),
      mesh=TrialMesh(devices), space=space,
      loss_limit=divergence_loss_limit(config.divergence_factor, dataset.num_classes),
  )
  runs = {}
  for method in config.methods:
    runs[method] = METHOD_RUNNERS[method](comparison)
    best = runs[method].best_validation_accuracy
    found = "no pick (every trial diverged)" if best is None else f"{best:.4f}"
    print(f"{method}: best validation accuracy {found} in {runs[method].wall_s:.1f} s, "
          f"{runs[method].trial_epochs} trial-epochs", flush=True)
  summary = build_summary(comparison, runs)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  plot_best_vs_time(workdir / "best_vs_time.png", summary)
  (workdir / "comparison.json").write_text(
      json.dumps(to_jsonable(summary), indent=1, allow_nan=False))
  (workdir / "comparison.md").write_text(markdown_table(summary))
  return summary


# ----------------------------------------------------------------------------------------------
# The methods.


class _Clock:
  """Wall and CPU seconds since the method started, and the best-so-far curve."""

  def __init__(self) -> None:
    self.wall, self.cpu = time.perf_counter(), time.process_time()
    self.curve: list[tuple[float, float]] = []
    self.best = -np.inf

  def elapsed(self) -> float:
    return time.perf_counter() - self.wall

  def seen(self, validation_accuracies: Sequence[float]) -> None:
    finite = [value for value in validation_accuracies if np.isfinite(value)]
    if finite:
      self.best = max(self.best, max(finite))
    if np.isfinite(self.best):
      self.curve.append((self.elapsed(), float(self.best)))

  def cpu_s(self) -> float:
    return time.process_time() - self.cpu


def _records_pick(comparison: Comparison, swept: Mapping[str, np.ndarray],
                  metrics: Mapping[str, np.ndarray], search: str,
                  epochs: np.ndarray | None = None) -> tuple[list[dict[str, Any]], Any]:
  records = trial_records("rmsprop", swept, dict(comparison.setup.fixed), metrics,
                          comparison.loss_limit, search)
  if epochs is not None:
    records = [record for record, trained in zip(records, epochs, strict=True)
               if trained == comparison.config.num_epochs]
  return records, best_trial(records, SELECTION_METRIC)


def _finite_accuracies(comparison: Comparison, metrics: Mapping[str, np.ndarray]) -> list[float]:
  """Per trial, the seed-mean validation accuracy, NaN for a trial with a diverged seed."""
  diverged = np.asarray(diverged_runs(metrics, comparison.loss_limit).any(axis=1))
  accuracy = np.mean(metrics[SELECTION_METRIC], axis=1)
  return np.where(diverged, np.nan, accuracy).astype(float).tolist()


def run_vmapped_chunks(comparison: Comparison, swept: Mapping[str, np.ndarray],
                       method: str) -> MethodRun:
  """(b), (c): the trials chunk by chunk, ``trials_per_call`` per compiled call."""
  clock = _Clock()
  runner = ChunkRunner(make_trial_fn(comparison.setup), comparison.data, per_trial_keys=False,
                       mesh=comparison.mesh)
  num_trials = len(next(iter(swept.values())))
  hparams = {name: np.asarray(values, np.float32) for name, values in swept.items()}
  outputs = []
  for indices, real in chunk_slices(num_trials, comparison.mesh.width(
      comparison.config.trials_per_call)):
    metrics = runner({name: values[indices] for name, values in hparams.items()},
                     comparison.keys)
    outputs.append({name: value[:real] for name, value in metrics.items()})
    clock.seen(_finite_accuracies(comparison, outputs[-1]))
  wall_s, cpu_s = clock.elapsed(), clock.cpu_s()
  metrics = {name: np.concatenate([out[name] for out in outputs]) for name in outputs[0]}
  _, pick = _records_pick(comparison, swept, metrics, method)
  return MethodRun(method, num_trials, num_trials * comparison.config.num_epochs, wall_s, cpu_s,
                   clock.curve, pick, {"compile_s": runner.compile_s})


def run_grid(comparison: Comparison) -> MethodRun:
  return run_vmapped_chunks(comparison, comparison.grid(), "grid")


def run_random(comparison: Comparison) -> MethodRun:
  swept = random_trials(comparison.space, comparison.config.num_trials,
                        comparison.config.seed)
  return run_vmapped_chunks(comparison, swept, "random")


def run_tpe_batches(comparison: Comparison) -> MethodRun:
  """(d): ``num_trials`` TPE trials, ``trials_per_call`` asked per vmapped call."""
  clock = _Clock()
  runner = ChunkRunner(make_trial_fn(comparison.setup), comparison.data, per_trial_keys=False,
                       mesh=comparison.mesh)
  config = comparison.config
  swept, metrics, _, rounds = run_optuna_batches(
      runner, "tpe", comparison.space, config.num_trials, config.trials_per_call,
      comparison.keys, seed=config.seed, loss_limit=comparison.loss_limit,
      on_round=lambda round_metrics: clock.seen(_finite_accuracies(comparison, round_metrics)),
  )
  wall_s, cpu_s = clock.elapsed(), clock.cpu_s()
  _, pick = _records_pick(comparison, swept, metrics, "tpe")
  return MethodRun("tpe_batches", config.num_trials, config.num_trials * config.num_epochs,
                   wall_s, cpu_s, clock.curve, pick,
                   {"rounds": max(rounds) + 1, "compile_s": runner.compile_s})


def run_halving(comparison: Comparison) -> MethodRun:
  """(e): the grid of (b) by successive halving; its pick exists only at the end."""
  clock = _Clock()
  swept = comparison.grid()
  halving = to_plain(comparison.config.halving)
  result = halving_lib.run_halving(
      comparison.setup, swept, comparison.keys, comparison.data, eta=halving["eta"],
      rung_epochs=halving["rung_epochs"], loss_limit=comparison.loss_limit,
      mesh=comparison.mesh,
  )
  _, pick = _records_pick(comparison, swept, result.metrics, "grid+halving",
                          result.epochs_trained)
  if pick is not None:
    clock.seen([pick["validation_accuracy"]])
  return MethodRun(
      "halving", len(result.epochs_trained), int(result.epochs_trained.sum()), clock.elapsed(),
      clock.cpu_s(), clock.curve, pick,
      {"compiled_widths": result.compiled_widths, "compilations": result.compilations,
       "compile_s": result.timing.compile_s},
  )


def run_optuna_tpe(comparison: Comparison) -> MethodRun:
  """(a): TPE and the median pruner, one trial after another, as a user would write it.

  Each trial initialises its state, then calls a jitted one-epoch function once per epoch and
  reports the validation accuracy to the pruner; a trial whose loss is not finite or exceeds
  the divergence limit is told as failed. The functions take the hyperparameters as arguments,
  so they compile once for the whole study.
  """
  import optuna

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  config, setup, data = comparison.config, comparison.setup, comparison.data
  clock = _Clock()
  parts = make_run_parts(setup)
  graphdef = train.model_graphdef(setup.spec)
  init = jax.jit(parts.init)
  train_epoch = jax.jit(parts.train_epochs)

  @jax.jit
  def score(state: train.TrainState, images: jax.Array, labels: jax.Array) -> dict[str, Any]:
    return train.evaluate(graphdef, state, images, labels, batch_size=setup.eval_batch_size)

  pruner = optuna.pruners.MedianPruner(**to_plain(config.pruner))
  study = optuna.create_study(direction="maximize", pruner=pruner,
                              sampler=optuna.samplers.TPESampler(seed=config.seed))
  trial_epochs, picks = 0, {}
  states = {"complete": 0, "pruned": 0, "failed": 0}
  for _ in range(config.num_trials):
    trial = study.ask()
    values = suggest(trial, comparison.space)
    hparams = {name: np.float32(value) for name, value in values.items()}
    state, data_key = init(hparams, comparison.keys[0], data)
    epoch_keys = data_order.epoch_keys(data_key, config.num_epochs)
    outcome, accuracy = "complete", float("nan")
    for epoch in range(config.num_epochs):
      state, losses = train_epoch(hparams, state, epoch_keys[epoch:epoch + 1], data)
      trial_epochs += 1
      loss = float(losses[-1])
      if not loss <= comparison.loss_limit:
        outcome = "failed"
        break
      accuracy = float(score(state, data.validation_images, data.validation_labels)["accuracy"])
      trial.report(accuracy, epoch)
      if trial.should_prune():
        outcome = "pruned"
        break
    states[outcome] += 1
    if outcome == "complete":
      study.tell(trial, accuracy)
      test = score(state, data.test_images, data.test_labels)
      picks[trial.number] = {"hparams": {**dict(setup.fixed), **values},
                             "validation_accuracy": accuracy,
                             "test_accuracy": float(test["accuracy"])}
      clock.seen([accuracy])
    else:
      study.tell(trial, state=(optuna.trial.TrialState.PRUNED if outcome == "pruned"
                               else optuna.trial.TrialState.FAIL))
  completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
  pick = picks[study.best_trial.number] if completed else None
  return MethodRun("optuna_tpe", config.num_trials, trial_epochs, clock.elapsed(), clock.cpu_s(),
                   clock.curve, pick, {"trial_states": states})


METHOD_RUNNERS: dict[str, Callable[[Comparison], MethodRun]] = {
    "optuna_tpe": run_optuna_tpe, "grid": run_grid, "random": run_random,
    "tpe_batches": run_tpe_batches, "halving": run_halving,
}


# ----------------------------------------------------------------------------------------------
# The verdicts and the report.


def time_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
  """The first time the best-so-far reaches ``target`` (None if never)."""
  return next((seconds for seconds, best in curve if best >= target), None)


def build_summary(comparison: Comparison, runs: Mapping[str, MethodRun]) -> dict[str, Any]:
  """``comparison.json``: every method's run and the issue's two goals checked."""
  config = comparison.config
  summary: dict[str, Any] = {
      "name": config.name,
      "config": to_plain(config),
      "hardware": hardware_lib.summary_line(),
      "devices": comparison.mesh.size,
      "split_sizes": {split: int(getattr(comparison.data, f"{split}_labels").shape[0])
                      for split in ("train", "validation", "test")},
      "methods": {method: {**dataclasses.asdict(run), "label": METHODS[method]}
                  for method, run in runs.items()},
  }
  goals: dict[str, Any] = {}
  alone = runs.get("optuna_tpe")
  if alone is not None and alone.best_validation_accuracy is not None:
    target = alone.best_validation_accuracy
    goals["optuna_tpe_best_validation_accuracy"] = target
    goals["optuna_tpe_wall_s"] = alone.wall_s
    for method, run in runs.items():
      reached = time_to_reach(run.curve, target)
      goals[f"{method}_reaches_it_after_s"] = reached
      goals[f"{method}_fraction_of_optuna_tpe_wall"] = (
          reached / alone.wall_s if reached is not None else None)
    goals["d_or_e_within_quarter"] = any(
        (goals.get(f"{method}_fraction_of_optuna_tpe_wall") or np.inf) <= 0.25
        for method in ("tpe_batches", "halving"))
  grid, halving = runs.get("grid"), runs.get("halving")
  if grid and halving and grid.pick and halving.pick:
    gap = 100 * (grid.pick["validation_accuracy"] - halving.pick["validation_accuracy"])
    goals["halving_points_below_grid_best"] = gap
    goals["halving_trial_epochs_fraction_of_grid"] = halving.trial_epochs / grid.trial_epochs
    goals["halving_within_half_point_and_half_the_trial_epochs"] = bool(
        gap <= 0.5 and halving.trial_epochs <= grid.trial_epochs / 2)
  summary["goals"] = goals
  return summary


def markdown_table(summary: Mapping[str, Any]) -> str:
  """The methods as one Markdown table, the goals below it."""
  from experiments.sweeps.report import _format

  lines = [f"# {summary['name']}", "",
           f"{summary['config']['dataset']} {summary['config']['model']} "
           f"{summary['config']['model_kwargs']}; split {summary['split_sizes']}; "
           f"{summary['devices']} device(s); {summary['hardware']}.", ""]
  rows = []
  for run in summary["methods"].values():
    pick = run["pick"] or {}
    hparams = ", ".join(f"{k}={_format(v, 3)}" for k, v in pick.get("hparams", {}).items()
                        if k != "eps")
    rows.append([run["label"], run["trials"], run["trial_epochs"], f"{run['wall_s']:.1f}",
                 f"{run['cpu_s']:.1f}", _format(pick.get("validation_accuracy")),
                 _format(pick.get("test_accuracy")), hparams])
  lines.append(tables.markdown_table(
      ["method", "trials", "trial-epochs", "wall s", "CPU s", "best validation acc.",
       "pick's test acc.", "pick"], rows))
  lines += ["", "Goals:", ""] + [f"- {key}: {_format(value)}"
                                 for key, value in summary["goals"].items()]
  return "\n".join(lines) + "\n"


def plot_best_vs_time(path: Path, summary: Mapping[str, Any]) -> None:
  """Best validation accuracy so far against wall time, one line per method."""
  figure, axes = plt.subplots(figsize=(8.5, 5))
  for index, run in enumerate(summary["methods"].values()):
    if not run["curve"]:
      continue
    seconds, best = zip(*run["curve"], strict=True)
    axes.step(seconds, best, where="post", color=f"C{index}", label=run["label"])
    axes.plot(seconds, best, "o", color=f"C{index}", markersize=3)
  goals = summary["goals"]
  if "optuna_tpe_best_validation_accuracy" in goals:
    axes.axhline(goals["optuna_tpe_best_validation_accuracy"], color="grey", ls="--", lw=0.8,
                 label="(a)'s final best")
    axes.axvline(goals["optuna_tpe_wall_s"] / 4, color="grey", ls=":", lw=0.8,
                 label="1/4 of (a)'s wall time")
  axes.set_xscale("log")
  axes.set_xlabel("wall time since the method started, s (log; compilation included)")
  axes.set_ylabel("best validation accuracy so far")
  config = summary["config"]
  axes.set_title(f"RMSprop lr x decay: {config['dataset']} {config['model']} "
                 f"{tuple(config['model_kwargs']['hidden_sizes'])}, {config['num_epochs']} epochs")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend(loc="lower right", fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
  """The command line (see the module docstring for the command)."""

  def compare(config: ml_collections.ConfigDict, workdir: str) -> None:
    summary = run_comparison(config, workdir)
    for key, value in summary["goals"].items():
      print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {workdir}/comparison.json, comparison.md and best_vs_time.png")

  cli.run_job(compare, default_config="configs/sweeps/optuna_comparison.py",
              schema=sweep_schema.OPTUNA_COMPARISON, argv=argv)


if __name__ == "__main__":
  main()
