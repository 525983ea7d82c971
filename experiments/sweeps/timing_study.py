"""The timing study of the vmapped sweep: the same runs trained one after another
(:func:`run_sequential`, ``jit`` per run) and with a Python loop over a jitted step
(:func:`run_python_loop`), how far their results are from the vmapped ones, and the speed-ups.

:func:`time_other_modes` is what ``python -m experiments.sweeps.sweep --sequential`` adds to an
optimizer's sweep; the measurements are in ``docs/sweeps.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.classification import train
from experiments.common import data_order
from experiments.common import optimizers as optimizer_lib
from experiments.sweeps.program import ModeTiming, TrainingSetup
from experiments.sweeps.selection import RUN_METRICS, diverged_runs
from experiments.sweeps.validation_split import SweepData


@dataclasses.dataclass
class OtherModes:
  """The sequential and Python-loop timings of one optimizer's trials and their agreement."""

  timing: dict[str, ModeTiming]
  sequential_metrics: dict[str, np.ndarray]
  agreement: dict[str, float]
  python_loop_checks: list[dict[str, float]]


def time_other_modes(
    setup: TrainingSetup,
    trial_fn: Callable[..., dict[str, jax.Array]],
    trace_counts: dict[str, int],
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    vmapped: Mapping[str, np.ndarray],
    *,
    loss_limit: float,
    repeats: int,
    python_loop_runs: int,
    bar: Any = None,
) -> OtherModes:
  """Trains ``swept`` again one run at a time and a sample with the Python loop; compares."""
  if bar is not None:
    bar.set_postfix(optimizer=setup.optimizer, mode="sequential")
  before = trace_counts.get(setup.optimizer, 0)
  sequential_metrics, sequential = run_sequential(
      trial_fn, swept, keys, data, repeats=repeats, progress=bar
  )
  sequential.traces = trace_counts[setup.optimizer] - before
  python_loop, checks = python_loop_sample(setup, swept, keys, data, vmapped, python_loop_runs)
  return OtherModes(
      timing={"sequential": sequential, "python_loop": python_loop},
      sequential_metrics=sequential_metrics,
      agreement=agreement(vmapped, sequential_metrics, loss_limit),
      python_loop_checks=checks,
  )


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
  as in :func:`~experiments.sweeps.program.run_vmapped`.
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
  :func:`~experiments.sweeps.program.make_trial_fn` (each epoch's permutation and step keys come
  from the same split of the epoch key as in
  :func:`experiments.classification.train.train_epoch`), so each result is the same run. The
  jitted functions take the hyperparameters as arguments and are compiled once, on the
  first trial (timed as compilation); the run time covers every trial in ``trials``, each
  trained from its key in ``keys``.

  Not :class:`experiments.distributed.train.TrainLoop`, though both loop over batches calling
  the same :func:`.steps.train_step` on the same :mod:`~experiments.common.data_order`: this
  loop is the timing study's baseline, so it must be the plain script a user would write
  (host batches copied each step, many trials through one compiled step, no mesh); TrainLoop
  trains one run on a device mesh, puts each global batch on its shards and checkpoints and
  resumes mid-epoch, which would add to the time measured here what a sweep does not do.
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



def agreement(
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


def python_loop_sample(
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


def speedups(timing: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict]:
  result = {}
  for name, modes in {**timing, "all": totals(timing)}.items():
    vmapped = modes["vmapped"]["run_s"]
    result[name] = {
        f"vs {mode}": modes[mode]["run_s"] / vmapped
        for mode in ("sequential", "python_loop") if mode in modes and vmapped > 0
    }
  return result


def totals(timing: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict]:
  totals: dict[str, dict[str, float]] = {}
  for modes in timing.values():
    for mode, values in modes.items():
      entry = totals.setdefault(mode, {})
      for key, value in values.items():
        if isinstance(value, int | float):
          entry[key] = entry.get(key, 0) + value
  return totals
