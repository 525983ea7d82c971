r"""Vmapped hyperparameter sweeps: grid and random search in one compiled program per optimizer.

A run (one trial's hyperparameters, one seed) is a pure function (:func:`make_trial_fn`),
vmapped over seeds and trials and compiled once per optimizer (:func:`make_chunk_program`);
trials are chosen on a validation split. This module holds that program, the timing modes
(vmapped, sequential, Python loop), :func:`run_sweep` and the command line; the search spaces,
the validation split, the selection of the best trial and the report are in
:mod:`~experiments.sweeps.search_space`, :mod:`~experiments.sweeps.validation_split`,
:mod:`~experiments.sweeps.selection` and :mod:`~experiments.sweeps.report`. The method,
outputs and measurements are in ``docs/sweeps.md``.

Usage::

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py [--sequential]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.common import cli, data_order
from experiments.common import hardware as hardware_lib
from experiments.common import optimizers as optimizer_lib
from experiments.common.serialization import to_jsonable
from experiments.sweeps.report import plot_heatmap, plot_sensitivity, write_markdown
from experiments.sweeps.search_space import optimizer_trials, search_kind, to_plain
from experiments.sweeps.selection import (
  RUN_METRICS,
  best_trial,
  diverged_runs,
  divergence_loss_limit,
  trial_records,
)
from experiments.sweeps.validation_split import SweepData, split_validation

# ----------------------------------------------------------------------------------------------
# One run as a pure function, and the vmapped program over chunks of trials.


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
  """What every run of one optimizer shares (hashable, so jit can treat it as static)."""

  spec: train.ModelSpec
  optimizer: str
  fixed: tuple[tuple[str, Any], ...]
  batch_size: int
  num_epochs: int
  schedule: str = "constant"
  eval_batch_size: int = 1000

  def steps_per_epoch(self, num_train: int) -> int:
    return num_train // self.batch_size


TRIAL_RANDOMNESS = ("shared", "per_trial")


def seed_keys(seeds: Sequence[int]) -> jax.Array:
  """One typed key per seed, ``jax.random.key(seed)``, stacked."""
  return jnp.stack([jax.random.key(int(seed)) for seed in seeds])


def run_keys(seeds: Sequence[int], num_trials: int, trial_randomness: str) -> jax.Array:
  """The key of every run.

  ``shared``: shape ``(seeds,)``; every trial of a seed starts from the same weights and sees
  the same batches and dropout masks. ``per_trial``: shape ``(trials, seeds)``, the seed's key
  folded with the trial index, so every run draws its own — the layout of independent jobs,
  kept to measure what sharing saves.
  """
  if trial_randomness not in TRIAL_RANDOMNESS:
    raise ValueError(
        f"trial_randomness must be one of {TRIAL_RANDOMNESS}; got {trial_randomness!r}."
    )
  keys = seed_keys(seeds)
  if trial_randomness == "shared":
    return keys
  trials = jnp.arange(num_trials)
  return jax.vmap(lambda trial: jax.vmap(lambda key: jax.random.fold_in(key, trial))(keys))(
      trials
  )


def make_trial_fn(
    setup: TrainingSetup, trace_counter: dict[str, int] | None = None
) -> Callable[[dict[str, jax.Array], jax.Array, SweepData], dict[str, jax.Array]]:
  """A run as a pure function ``(hparams, key, data) -> metrics``.

  ``hparams`` maps the swept names to scalars (arrays or tracers); the setup's fixed values
  complete them. The key is split into initialisation and data keys as in
  :func:`experiments.classification.train.train_and_evaluate`; each epoch is one
  :func:`experiments.classification.train.train_epoch` inside a ``lax.scan`` over epochs. The
  metrics are the per-epoch mean training losses (``epoch_train_loss``, training mode, before
  each update) and the final loss and accuracy on each split in inference mode
  (:data:`~experiments.sweeps.selection.RUN_METRICS`).

  ``trace_counter[setup.optimizer]`` is incremented each time the function is traced, which is
  how the sweep verifies that one compilation served every chunk.
  """
  graphdef = train.model_graphdef(setup.spec)
  fixed = dict(setup.fixed)

  def run(hparams: dict[str, jax.Array], key: jax.Array, data: SweepData) -> dict[str, jax.Array]:
    if trace_counter is not None:  # Python side effect: runs at trace time only.
      trace_counter[setup.optimizer] = trace_counter.get(setup.optimizer, 0) + 1
    total_steps = setup.steps_per_epoch(data.train_images.shape[0]) * setup.num_epochs
    optimizer = optimizer_lib.make_optimizer(
        setup.optimizer, {**fixed, **hparams}, schedule=setup.schedule, total_steps=total_steps
    )
    init_key, data_key = data_order.seed_keys(key)
    state = train.init_train_state(setup.spec, optimizer, init_key)

    def epoch(
        state: train.TrainState, epoch_key: jax.Array
    ) -> tuple[train.TrainState, jax.Array]:
      state, metrics = train.train_epoch(
          graphdef, optimizer, state, data.train_images, data.train_labels, epoch_key,
          batch_size=setup.batch_size,
      )
      return state, metrics["loss"]

    state, epoch_losses = jax.lax.scan(
        epoch, state, data_order.epoch_keys(data_key, setup.num_epochs)
    )
    metrics = {"epoch_train_loss": epoch_losses}
    for split in ("train", "validation", "test"):
      evaluation = train.evaluate(
          graphdef, state, getattr(data, f"{split}_images"), getattr(data, f"{split}_labels"),
          batch_size=setup.eval_batch_size,
      )
      metrics[f"{split}_loss"] = evaluation["loss"]
      metrics[f"{split}_accuracy"] = evaluation["accuracy"]
    return metrics

  return run


def make_chunk_program(
    trial_fn: Callable[[dict[str, jax.Array], jax.Array, SweepData], dict[str, jax.Array]],
    per_trial_keys: bool = False,
) -> jax.stages.Wrapped:
  """``jit(vmap_trials(vmap_seeds(trial_fn)))``: metrics of shape ``(chunk, seeds, ...)``.

  The inner vmap maps the seeds' keys with the hyperparameters fixed; the outer one maps the
  hyperparameters with the keys shared (keys of shape ``(seeds,)``), so per-seed randomness
  (initial weights, batches, dropout masks) is computed once per seed, not once per trial.
  With ``per_trial_keys`` the keys have shape ``(chunk, seeds)`` and the outer vmap maps them
  too.
  """
  over_seeds = jax.vmap(trial_fn, in_axes=(None, 0, None))
  return jax.jit(jax.vmap(over_seeds, in_axes=(0, 0 if per_trial_keys else None, None)))


def chunk_slices(num_trials: int, chunk_size: int) -> list[tuple[np.ndarray, int]]:
  """Index arrays of the chunks, each of length ``chunk_size``, and the count of real trials.

  The last chunk is padded by repeating its last trial: valid hyperparameters (no spurious
  divergence) and the same shape as every other chunk (no recompilation).
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
  chunks = []
  for start in range(0, num_trials, chunk_size):
    real = min(chunk_size, num_trials - start)
    indices = np.arange(start, start + chunk_size).clip(max=num_trials - 1)
    chunks.append((indices, real))
  return chunks


@dataclasses.dataclass
class ModeTiming:
  """Seconds one way of running a set of trials took."""

  compile_s: float = 0.0
  compile_cpu_s: float = 0.0
  run_s: float = 0.0
  run_cpu_s: float = 0.0
  runs: int = 0
  runs_timed: int = 0  # fewer than runs where the time is extrapolated (the Python loop)
  traces: int = 0
  run_s_repeats: list[float] = dataclasses.field(default_factory=list)

  def record(self, wall_s: float, cpu_s: float) -> None:
    """Adds one timed repetition; run times are the minimum over repetitions, the usual
    estimate of the undisturbed time on a machine shared with other work (as in ``timeit``)."""
    self.run_s_repeats.append(wall_s)
    self.run_s = min(self.run_s_repeats)
    self.run_cpu_s = cpu_s if len(self.run_s_repeats) == 1 else min(self.run_cpu_s, cpu_s)


def run_vmapped(
    trial_fn: Callable[..., dict[str, jax.Array]],
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    chunk_size: int,
    *,
    repeats: int = 1,
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], ModeTiming]:
  """Trains every trial x seed with one compiled vmapped program, chunk by chunk.

  ``keys`` come from :func:`run_keys`: ``(seeds,)`` shared by the trials or ``(trials, seeds)``.
  With ``repeats > 1`` the whole sweep is run that many times and timed each time (the results
  are identical; the last are returned).

  Returns:
    Metrics as NumPy arrays of shape ``(num_trials, num_seeds, ...)`` and the timing (compile
    time measured apart by ahead-of-time compilation).
  """
  num_trials = len(next(iter(swept.values())))
  chunk_size = min(chunk_size, num_trials)
  per_trial = keys.ndim == 2
  program = make_chunk_program(trial_fn, per_trial_keys=per_trial)
  hparams = {name: np.asarray(values, np.float32) for name, values in swept.items()}
  chunks = chunk_slices(num_trials, chunk_size)
  num_runs = num_trials * keys.shape[-1]
  timing = ModeTiming(runs=num_runs, runs_timed=num_runs)

  def chunk_keys(indices: np.ndarray) -> jax.Array:
    return keys[indices] if per_trial else keys

  tick, tick_cpu = time.perf_counter(), time.process_time()
  first = {name: values[chunks[0][0]] for name, values in hparams.items()}
  compiled = program.lower(first, chunk_keys(chunks[0][0]), data).compile()
  timing.compile_s = time.perf_counter() - tick
  timing.compile_cpu_s = time.process_time() - tick_cpu

  outputs: list[dict[str, np.ndarray]] = []
  for repeat in range(max(1, repeats)):
    outputs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for indices, real in chunks:
      chunk = {name: values[indices] for name, values in hparams.items()}
      metrics = jax.device_get(compiled(chunk, chunk_keys(indices), data))
      outputs.append({name: value[:real] for name, value in metrics.items()})
      if progress is not None and repeat == 0:
        progress.update(real)
    timing.record(time.perf_counter() - wall, time.process_time() - cpu)
  return {name: np.concatenate([out[name] for out in outputs]) for name in outputs[0]}, timing


def run_sequential(
    trial_fn: Callable[..., dict[str, jax.Array]],
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    *,
    repeats: int = 1,
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], ModeTiming]:
  """Trains the same runs one after another: ``jit(trial_fn)`` compiled once, called per run.

  Each call is one compiled program over the whole training (a ``lax.scan`` over epochs of
  ``lax.scan`` over batches), with the hyperparameters as scalar array arguments. ``repeats``
  as in :func:`run_vmapped`.
  """
  num_trials = len(next(iter(swept.values())))
  num_seeds = keys.shape[-1]
  program = jax.jit(trial_fn)
  run_key = (lambda trial, seed: keys[trial, seed]) if keys.ndim == 2 else (
      lambda trial, seed: keys[seed])
  hparams = {name: np.asarray(values, np.float32) for name, values in swept.items()}
  timing = ModeTiming(runs=num_trials * num_seeds, runs_timed=num_trials * num_seeds)

  tick, tick_cpu = time.perf_counter(), time.process_time()
  compiled = program.lower({name: values[0] for name, values in hparams.items()},
                           run_key(0, 0), data).compile()
  timing.compile_s = time.perf_counter() - tick
  timing.compile_cpu_s = time.process_time() - tick_cpu

  results: list[list[dict[str, np.ndarray]]] = []
  for repeat in range(max(1, repeats)):
    results = []
    wall, cpu = time.perf_counter(), time.process_time()
    for trial in range(num_trials):
      trial_hparams = {name: values[trial] for name, values in hparams.items()}
      results.append([
          jax.device_get(compiled(trial_hparams, run_key(trial, seed), data))
          for seed in range(num_seeds)
      ])
      if progress is not None and repeat == 0:
        progress.update(1)
    timing.record(time.perf_counter() - wall, time.process_time() - cpu)
  stacked = {
      name: np.stack([np.stack([run[name] for run in runs]) for runs in results])
      for name in results[0][0]
  }
  return stacked, timing


def run_python_loop(
    setup: TrainingSetup,
    trials: Sequence[Mapping[str, float]],
    keys: Sequence[jax.Array],
    data: SweepData,
) -> tuple[list[dict[str, float]], ModeTiming]:
  """Runs trials the usual way: a Python loop over batches calling a jitted ``train_step``.

  Batches are gathered from host (NumPy) arrays and copied to the device every step, as a
  typical training script does; they are the same batches, keys and dropout masks as in
  :func:`make_trial_fn` (each epoch's permutation and step keys come from the same split of
  the epoch key as in :func:`experiments.classification.train.train_epoch`), so each result is the
  same run.
  The jitted functions take the hyperparameters as arguments and are compiled once, on the
  first trial (timed as compilation); the run time covers every trial in ``trials``, each
  trained from its key in ``keys``.
  """
  graphdef = train.model_graphdef(setup.spec)
  fixed = dict(setup.fixed)
  num_train = data.train_images.shape[0]
  total_steps = setup.steps_per_epoch(num_train) * setup.num_epochs

  def optimizer_for(values: Mapping[str, jax.Array]) -> Any:
    return optimizer_lib.make_optimizer(
        setup.optimizer, {**fixed, **values}, schedule=setup.schedule, total_steps=total_steps
    )

  @jax.jit
  def init(values: dict[str, jax.Array], init_key: jax.Array) -> train.TrainState:
    return train.init_train_state(setup.spec, optimizer_for(values), init_key)

  @jax.jit
  def step(
      values: dict[str, jax.Array], state: train.TrainState, images: jax.Array,
      labels: jax.Array, step_key: jax.Array,
  ) -> tuple[train.TrainState, dict[str, jax.Array]]:
    return train.train_step(graphdef, optimizer_for(values), state, (images, labels), step_key)

  epoch_plan = jax.jit(functools.partial(
      data_order.epoch_plan, num_examples=num_train, batch_size=setup.batch_size
  ))

  evaluate = jax.jit(functools.partial(train.evaluate, graphdef,
                                       batch_size=setup.eval_batch_size))
  host_images, host_labels = np.asarray(data.train_images), np.asarray(data.train_labels)

  def evaluate_all(state: train.TrainState) -> dict[str, dict[str, np.ndarray]]:
    return {split: jax.device_get(evaluate(state, getattr(data, f"{split}_images"),
                                           getattr(data, f"{split}_labels")))
            for split in ("train", "validation", "test")}

  # Compile every function on the first trial's inputs, so that the timed loop is steady state.
  timing = ModeTiming(runs=len(trials), runs_timed=len(trials))
  tick, tick_cpu = time.perf_counter(), time.process_time()
  values = {name: jnp.float32(value) for name, value in trials[0].items()}
  init_key, data_key = data_order.seed_keys(keys[0])
  state = init(values, init_key)
  batches, step_keys = epoch_plan(data_order.epoch_keys(data_key, setup.num_epochs)[0])
  rows = np.asarray(batches[0])
  jax.block_until_ready(step(values, state, host_images[rows], host_labels[rows], step_keys[0]))
  evaluate_all(state)
  timing.compile_s = time.perf_counter() - tick
  timing.compile_cpu_s = time.process_time() - tick_cpu

  results = []
  wall, cpu = time.perf_counter(), time.process_time()
  for hparams, key in zip(trials, keys, strict=True):
    values = {name: jnp.float32(value) for name, value in hparams.items()}
    init_key, data_key = data_order.seed_keys(key)
    epoch_keys = data_order.epoch_keys(data_key, setup.num_epochs)
    state = init(values, init_key)
    epoch_losses = []
    for epoch in range(setup.num_epochs):
      batches, step_keys = epoch_plan(epoch_keys[epoch])
      batches = np.asarray(batches)
      losses = []
      for index in range(batches.shape[0]):
        rows = batches[index]
        state, metrics = step(values, state, host_images[rows], host_labels[rows],
                              step_keys[index])
        losses.append(metrics["loss"])
      epoch_losses.append(float(np.mean(jax.device_get(losses))))
    final = evaluate_all(state)
    results.append({
        "final_epoch_train_loss": epoch_losses[-1],
        "train_loss": float(final["train"]["loss"]),
        "test_accuracy": float(final["test"]["accuracy"]),
    })
  timing.record(time.perf_counter() - wall, time.process_time() - cpu)
  return results, timing


# ----------------------------------------------------------------------------------------------
# The whole sweep.


def run_sweep(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    sequential: bool = False,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
) -> dict[str, Any]:
  """Runs every optimizer's trials of ``config`` vmapped, writes the outputs, returns the summary.

  Args:
    config: a sweep config (``configs/sweeps/sweep_digits.py`` documents the fields).
    workdir: output folder, created if needed.
    sequential: also train every run one after another (same code, jit per run) and a sample
      of ``config.python_loop_runs`` runs per optimizer with a Python loop over a jitted step;
      record their times and how far their results are from the vmapped ones.
    dataset: an already loaded data set (tests pass a small one).
    progress: show a tqdm bar.

  Returns:
    The summary written to ``sweep.json``.
  """
  from tqdm.auto import tqdm

  start = time.perf_counter()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  check_sweep_config(config)
  use_compilation_cache(config.compilation_cache_dir)
  dataset = dataset if dataset is not None else train.load_config_dataset(config)
  data = split_validation(dataset, config.validation_fraction, config.seed)
  if config.batch_size > data.train_images.shape[0]:
    raise ValueError(
        f"batch_size={config.batch_size} exceeds the {data.train_images.shape[0]} training "
        "examples left after the validation split."
    )
  context = SweepContext(
      config=config, spec=train.model_spec(config, dataset), data=data,
      seeds=[config.seed + index for index in range(config.num_seeds)],
      loss_limit=divergence_loss_limit(config.divergence_factor, dataset.num_classes),
      sequential=sequential,
  )
  plans = {name: optimizer_trials(name, entry, config.seed)
           for name, entry in config.optimizers.items()}
  num_runs = sum(len(next(iter(swept.values()))) for swept, _ in plans.values()) * len(
      context.seeds)
  bar = tqdm(total=num_runs * (2 if sequential else 1), desc="sweep runs",
             disable=not progress)
  results = {name: sweep_optimizer(context, name, swept, fixed, bar)
             for name, (swept, fixed) in plans.items()}
  bar.close()

  records = [record for result in results.values() for record in result.records]
  plots = draw_plots(config, records, workdir)
  summary = build_summary(context, results, records, plots)
  summary["wall_time_s"] = time.perf_counter() - start
  with open(workdir / "sweep.json", "w") as handle:
    json.dump(to_jsonable(summary), handle, indent=1, allow_nan=False)
  write_markdown(workdir / "sweep.md", summary)
  return summary


SELECTION_METRIC = "validation_accuracy"


def check_sweep_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` for sizes below 1 or an empty ``optimizers``."""
  if config.num_seeds < 1 or config.num_epochs < 1 or config.batch_size < 1:
    raise ValueError(
        f"num_seeds, num_epochs and batch_size must be >= 1; got {config.num_seeds}, "
        f"{config.num_epochs}, {config.batch_size}."
    )
  if not config.optimizers:
    raise ValueError("config.optimizers must name at least one optimizer to sweep.")


def use_compilation_cache(cache_dir: str) -> None:
  """Turns on JAX's persistent compilation cache in ``cache_dir`` (nothing if empty).

  The programs depend only on shapes, so a later sweep with other values (same model, chunk
  size and seeds) loads them from disk instead of compiling.
  """
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclasses.dataclass(frozen=True)
class SweepContext:
  """What every optimizer's sweep shares: the config, the model, the data splits, the seeds."""

  config: ml_collections.ConfigDict
  spec: train.ModelSpec
  data: SweepData
  seeds: list[int]
  loss_limit: float
  sequential: bool


@dataclasses.dataclass
class OptimizerSweep:
  """One optimizer's trials: records, best trial, timings and, with ``--sequential``, checks."""

  records: list[dict[str, Any]]
  best: dict[str, Any] | None
  timing: dict[str, dict[str, float]]
  agreement: dict[str, float] | None = None
  python_loop_checks: list[dict[str, float]] | None = None


def sweep_optimizer(
    context: SweepContext,
    name: str,
    swept: Mapping[str, np.ndarray],
    fixed: Mapping[str, Any],
    bar: Any,
) -> OptimizerSweep:
  """Trains ``name``'s trials vmapped (and, with ``sequential``, the other ways) and scores them."""
  config = context.config
  setup = TrainingSetup(
      spec=context.spec, optimizer=name, fixed=tuple(sorted(fixed.items())),
      batch_size=config.batch_size, num_epochs=config.num_epochs,
      schedule=config.lr_schedule,
      eval_batch_size=config.eval_batch_size,
  )
  trace_counts: dict[str, int] = {}
  trial_fn = make_trial_fn(setup, trace_counts)
  keys = run_keys(context.seeds, len(next(iter(swept.values()))), config.trial_randomness)
  bar.set_postfix(optimizer=name, mode="vmapped")
  repeats = config.timing_repeats if context.sequential else 1
  metrics, vmapped = run_vmapped(trial_fn, swept, keys, context.data, config.chunk_size,
                                 repeats=repeats, progress=bar)
  vmapped.traces = trace_counts.get(name, 0)
  modes = {"vmapped": vmapped}
  result = OptimizerSweep(records=[], best=None, timing={})
  sequential_metrics: dict[str, np.ndarray] | None = None
  if context.sequential:
    bar.set_postfix(optimizer=name, mode="sequential")
    before = trace_counts.get(name, 0)
    sequential_metrics, modes["sequential"] = run_sequential(
        trial_fn, swept, keys, context.data, repeats=repeats, progress=bar
    )
    modes["sequential"].traces = trace_counts[name] - before
    result.agreement = _agreement(metrics, sequential_metrics, context.loss_limit)
    modes["python_loop"], result.python_loop_checks = _python_loop_sample(
        setup, swept, keys, context.data, metrics, config.python_loop_runs
    )
  result.timing = {mode: dataclasses.asdict(value) for mode, value in modes.items()}
  result.records = trial_records(name, swept, fixed, metrics, context.loss_limit,
                                 search_kind(config.optimizers[name]), sequential_metrics)
  result.best = best_trial(result.records, SELECTION_METRIC)
  return result


def draw_plots(
    config: ml_collections.ConfigDict, records: Sequence[Mapping[str, Any]], workdir: Path
) -> list[str]:
  """The heatmap of ``config.heatmap`` (when its optimizer was swept) and the sensitivity plot."""
  plots = []
  heatmap = config.heatmap
  if heatmap is not None and heatmap.optimizer in config.optimizers:
    title = (f"{heatmap.optimizer}: test accuracy over {heatmap.x} x {heatmap.y} "
             f"({config.name})")
    rows = [r for r in records if r["optimizer"] == heatmap.optimizer]
    if plot_heatmap(workdir / "heatmap.png", rows, heatmap.x, heatmap.y, title):
      plots.append("heatmap.png")
  plot_sensitivity(workdir / "sensitivity.png", records,
                   f"Learning-rate sensitivity ({config.name})")
  plots.append("sensitivity.png")
  return plots


def build_summary(
    context: SweepContext,
    results: Mapping[str, OptimizerSweep],
    records: list[dict[str, Any]],
    plots: list[str],
) -> dict[str, Any]:
  """What ``sweep.json`` holds (without the wall time)."""
  config, data = context.config, context.data
  timing = {name: result.timing for name, result in results.items()}
  summary: dict[str, Any] = {
      "name": config.name,
      "config": to_plain(config),
      "hardware": hardware_lib.summary_line(),
      "seeds": context.seeds,
      "trial_randomness": config.trial_randomness,
      "selection_metric": SELECTION_METRIC,
      "selection_note": (
          "validation split held out from the training set" if config.validation_fraction > 0
          else "validation_fraction=0: the test set was used for selection"
      ),
      "divergence_loss_limit": context.loss_limit,
      "split_sizes": {split: int(getattr(data, f"{split}_labels").shape[0])
                      for split in ("train", "validation", "test")},
      "best": {name: result.best for name, result in results.items()},
      "trials": records,
      "timing": {
          "per_optimizer": timing,
          "python_loop_note": (
              f"Python-loop time measured on {config.python_loop_runs} run(s) per optimizer and "
              "extrapolated (run_s = mean per run x runs)" if context.sequential else None
          ),
      },
      "plots": plots,
  }
  if context.sequential:
    summary["timing"]["speedup"] = _speedups(timing)
    summary["timing"]["total"] = _totals(timing)
    summary["vmapped_vs_sequential_max_abs_diff"] = {
        name: result.agreement for name, result in results.items()}
    summary["python_loop_vs_vmapped"] = {
        name: result.python_loop_checks for name, result in results.items()}
  return summary


def _agreement(
    vmapped: Mapping[str, np.ndarray], sequential: Mapping[str, np.ndarray], loss_limit: float
) -> dict[str, float]:
  """How far the vmapped runs are from the same runs trained one at a time.

  Per metric the largest and the median absolute difference over runs that diverged in
  neither mode, and how many runs' final training losses differ by more than 1e-3 relative:
  summation order differs between a batched and a single matrix product, and over hundreds of
  steps such rounding differences can grow in runs near the edge of stability.
  """
  bad_vmapped = diverged_runs(vmapped, loss_limit)
  bad_sequential = diverged_runs(sequential, loss_limit)
  finite = ~bad_vmapped & ~bad_sequential
  result: dict[str, float] = {}
  for metric in RUN_METRICS:
    diff = np.abs(vmapped[metric] - sequential[metric])[finite]
    result[metric] = float(diff.max()) if diff.size else 0.0
    result[f"{metric}_median"] = float(np.median(diff)) if diff.size else 0.0
  relative = (np.abs(vmapped["train_loss"] - sequential["train_loss"])
              / np.maximum(np.abs(sequential["train_loss"]), 1e-12))[finite]
  result["runs_compared"] = int(finite.sum())
  result["runs_train_loss_rel_diff_over_1e-3"] = int((relative > 1e-3).sum())
  result["diverged_in_one_mode_only"] = int((bad_vmapped != bad_sequential).sum())
  return result


def _python_loop_sample(
    setup: TrainingSetup,
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    vmapped: Mapping[str, np.ndarray],
    sample_runs: int,
) -> tuple[ModeTiming, list[dict[str, float]]]:
  """Times ``sample_runs`` runs (first seed; trials spread over the sweep) with the Python loop.

  The run time is extrapolated to all runs: mean seconds per timed run x number of runs.
  """
  num_trials = len(next(iter(swept.values())))
  num_runs = num_trials * keys.shape[-1]
  sample = np.unique(np.linspace(0, num_trials - 1, max(1, sample_runs)).round().astype(int))
  trials = [{name: float(values[trial]) for name, values in swept.items()} for trial in sample]
  first_seed = [keys[trial, 0] if keys.ndim == 2 else keys[0] for trial in sample]
  results, measured = run_python_loop(setup, trials, first_seed, data)
  checks = [{
      "trial": int(trial),
      "test_accuracy_python_loop": result["test_accuracy"],
      "test_accuracy_vmapped": float(vmapped["test_accuracy"][trial, 0]),
      "final_epoch_train_loss_python_loop": result["final_epoch_train_loss"],
      "final_epoch_train_loss_vmapped": float(vmapped["epoch_train_loss"][trial, 0, -1]),
  } for trial, result in zip(sample, results, strict=True)]
  timing = ModeTiming(
      compile_s=measured.compile_s,
      compile_cpu_s=measured.compile_cpu_s,
      run_s=measured.run_s / len(sample) * num_runs,
      run_cpu_s=measured.run_cpu_s / len(sample) * num_runs,
      runs=num_runs,
      runs_timed=len(sample),
  )
  return timing, checks


def _speedups(timing: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict]:
  result = {}
  for name, modes in {**timing, "all": _totals(timing)}.items():
    vmapped = modes["vmapped"]["run_s"]
    result[name] = {
        f"vs {mode}": modes[mode]["run_s"] / vmapped
        for mode in ("sequential", "python_loop") if mode in modes and vmapped > 0
    }
  return result


def _totals(timing: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict]:
  totals: dict[str, dict[str, float]] = {}
  for modes in timing.values():
    for mode, values in modes.items():
      entry = totals.setdefault(mode, {})
      for key, value in values.items():
        if isinstance(value, int | float):
          entry[key] = entry.get(key, 0) + value
  return totals


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py``."""

  def sweep(config: ml_collections.ConfigDict, workdir: str, sequential: bool) -> None:
    summary = run_sweep(config, workdir, sequential=sequential)
    for name, best in summary["best"].items():
      if best is None:
        print(f"{name}: every trial diverged")
      else:
        print(f"{name}: best {best['hparams']} validation accuracy "
              f"{best['validation_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f}")
    for name, speedup in summary["timing"].get("speedup", {}).items():
      print(f"{name}: vmapped speed-up " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    print(f"wrote {workdir}/sweep.json, sweep.md and {len(summary['plots'])} plots "
          f"in {summary['wall_time_s']:.1f} s")

  cli.run_job(
      sweep, default_config="configs/sweeps/sweep_digits.py", argv=argv,
      switches={"sequential": "Also train the same runs one after another (jit per run) and a "
                              "sample with a Python loop over a jitted step; record the times."},
  )


if __name__ == "__main__":
  main()
