r"""Vmapped hyperparameter sweeps: grid and random search in one compiled program per optimizer.

A run (one trial's hyperparameters, one seed) is a pure function (:func:`make_trial_fn`),
vmapped over seeds and trials and compiled once per optimizer (:func:`make_chunk_program`);
trials are chosen on a validation split. The method, outputs and measurements are in
``docs/sweeps.md``.

Usage::

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py [--sequential]
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.common import cli, data_order
from experiments.common import hardware as hardware_lib
from experiments.common.serialization import to_jsonable

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (after matplotlib.use: the backend must be chosen first)

DISTRIBUTIONS = ("log_uniform", "uniform")
# Per-run metrics a trial function returns; all scalars except the per-epoch losses.
RUN_METRICS = (
    "train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "test_loss",
    "test_accuracy",
)


# ----------------------------------------------------------------------------------------------
# Search spaces.


def grid_trials(grid: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
  """The Cartesian product of per-hyperparameter value lists, as one float64 array per name.

  The first name varies slowest: ``{"learning_rate": [a, b], "decay": [c, d]}`` gives the
  trials ``(a, c), (a, d), (b, c), (b, d)``.
  """
  if not grid:
    raise ValueError("grid must name at least one hyperparameter.")
  names = list(grid)
  for name in names:
    values = grid[name]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
      raise ValueError(f"grid[{name!r}] must be a non-empty list of numbers; got {values!r}.")
  product = list(itertools.product(*(grid[name] for name in names)))
  return {
      name: np.asarray([trial[index] for trial in product], np.float64)
      for index, name in enumerate(names)
  }


def random_trials(
    space: Mapping[str, Sequence[Any]], num_trials: int, seed: int
) -> dict[str, np.ndarray]:
  """``num_trials`` independent draws from per-hyperparameter distributions.

  Each entry of ``space`` is ``(distribution, low, high)``: ``log_uniform`` draws
  ``exp(U(log low, log high))`` — the scale-free prior for learning rates and eps (Bergstra &
  Bengio, 2012) — and ``uniform`` draws ``U(low, high)``. Names are drawn in sorted order from
  one NumPy generator seeded with ``seed``, so a space and a seed fix the trials.
  """
  if num_trials < 1:
    raise ValueError(f"num_trials must be >= 1; got {num_trials}.")
  if not space:
    raise ValueError("random search space must name at least one hyperparameter.")
  generator = np.random.default_rng(seed)
  trials = {}
  for name in sorted(space):
    entry = space[name]
    if isinstance(entry, str) or len(entry) != 3:
      raise ValueError(f"random[{name!r}] must be (distribution, low, high); got {entry!r}.")
    distribution, low, high = entry[0], float(entry[1]), float(entry[2])
    if distribution not in DISTRIBUTIONS:
      raise ValueError(
          f"random[{name!r}] distribution must be one of {DISTRIBUTIONS}; got {distribution!r}."
      )
    if not low < high:
      raise ValueError(f"random[{name!r}] needs low < high; got low={low}, high={high}.")
    if distribution == "log_uniform":
      if low <= 0:
        raise ValueError(f"random[{name!r}] is log_uniform and needs low > 0; got {low}.")
      trials[name] = np.exp(generator.uniform(np.log(low), np.log(high), num_trials))
    else:
      trials[name] = generator.uniform(low, high, num_trials)
  return trials


def optimizer_trials(
    name: str, entry: Mapping[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The swept hyperparameters (one array per name) and the fixed ones of an optimizer.

  ``entry`` is a config's ``optimizers[name]``: ``fixed`` (values every trial shares, booleans
  included), and either ``grid`` (value lists, see :func:`grid_trials`) or ``random`` with
  ``num_trials`` (see :func:`random_trials`). Every name must be a hyperparameter that
  :func:`experiments.classification.train.make_optimizer` accepts for ``name``; a swept name must be
  numeric.
  """
  if name not in train.OPTIMIZERS:
    raise ValueError(f"optimizers has an unknown optimizer {name!r}; known: {train.OPTIMIZERS}.")
  entry = _plain(entry)
  unknown_keys = set(entry) - {"fixed", "grid", "random", "num_trials"}
  if unknown_keys:
    raise ValueError(f"optimizers[{name!r}] has unknown keys {sorted(unknown_keys)}.")
  if ("grid" in entry) == ("random" in entry):
    raise ValueError(f"optimizers[{name!r}] needs exactly one of 'grid' or 'random'.")
  if "grid" in entry:
    swept = grid_trials(entry["grid"])
  else:
    if "num_trials" not in entry:
      raise ValueError(f"optimizers[{name!r}] uses random search and needs num_trials.")
    # Offset the seed by the optimizer so that two optimizers do not draw the same numbers.
    swept = random_trials(entry["random"], int(entry["num_trials"]),
                          seed + train.OPTIMIZERS.index(name))
  fixed = dict(entry.get("fixed", {}))
  allowed = {"learning_rate", *train.OPTIMIZER_DEFAULTS[name]}
  for source, names in (("grid/random", swept), ("fixed", fixed)):
    unknown = set(names) - allowed
    if unknown:
      raise ValueError(
          f"optimizers[{name!r}] {source} has unknown hyperparameters {sorted(unknown)}; "
          f"allowed: {sorted(allowed)}."
      )
  overlap = set(swept) & set(fixed)
  if overlap:
    raise ValueError(f"optimizers[{name!r}] both sweeps and fixes {sorted(overlap)}.")
  if "learning_rate" not in swept and "learning_rate" not in fixed:
    raise ValueError(f"optimizers[{name!r}] must sweep or fix learning_rate.")
  for hparam, values in swept.items():
    if not np.all(np.isfinite(values)):
      raise ValueError(f"optimizers[{name!r}] {hparam} values must be finite; got {values}.")
  return swept, fixed


def _plain(value: Any) -> Any:
  """A ConfigDict (or nested mapping) as plain dicts, lists as they are."""
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return dict(value) if isinstance(value, Mapping) else value


# ----------------------------------------------------------------------------------------------
# The data a sweep trains and evaluates on.


class SweepData(NamedTuple):
  """Device arrays of the three splits; passed to the compiled program as arguments."""

  train_images: jax.Array
  train_labels: jax.Array
  validation_images: jax.Array
  validation_labels: jax.Array
  test_images: jax.Array
  test_labels: jax.Array


def stratified_split(
    dataset: data_lib.Dataset, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(train_images, train_labels, validation_images, validation_labels)``: a stratified
  ``validation_fraction`` of the training set held out (scikit-learn, ``random_state=seed``)."""
  from sklearn.model_selection import train_test_split

  train_images, validation_images, train_labels, validation_labels = train_test_split(
      dataset.train_images, dataset.train_labels, test_size=validation_fraction,
      stratify=dataset.train_labels, random_state=seed,
  )
  return train_images, train_labels, validation_images, validation_labels


def split_validation(
    dataset: data_lib.Dataset, validation_fraction: float, seed: int = 0
) -> SweepData:
  """Holds out a stratified ``validation_fraction`` of the training set for model selection.

  With ``validation_fraction == 0`` the test set stands in for the validation set (then the
  choice of the best trial has seen the test set; the sweep's output says so).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction}.")
  if validation_fraction == 0.0:
    train_images, train_labels = dataset.train_images, dataset.train_labels
    validation_images, validation_labels = dataset.test_images, dataset.test_labels
  else:
    train_images, train_labels, validation_images, validation_labels = stratified_split(
        dataset, validation_fraction, seed
    )
  return SweepData(*(jnp.asarray(array) for array in (
      train_images, train_labels, validation_images, validation_labels,
      dataset.test_images, dataset.test_labels,
  )))


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
  metrics are the
  per-epoch mean training losses (``epoch_train_loss``, training mode, before each update) and
  the final loss and accuracy on each split in inference mode (:data:`RUN_METRICS`).

  ``trace_counter[setup.optimizer]`` is incremented each time the function is traced, which is
  how the sweep verifies that one compilation served every chunk.
  """
  graphdef = train.model_graphdef(setup.spec)
  fixed = dict(setup.fixed)

  def run(hparams: dict[str, jax.Array], key: jax.Array, data: SweepData) -> dict[str, jax.Array]:
    if trace_counter is not None:  # Python side effect: runs at trace time only.
      trace_counter[setup.optimizer] = trace_counter.get(setup.optimizer, 0) + 1
    total_steps = setup.steps_per_epoch(data.train_images.shape[0]) * setup.num_epochs
    optimizer = train.make_optimizer(
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
    return train.make_optimizer(
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
# Summaries.


def diverged_runs(
    metrics: Mapping[str, np.ndarray], loss_limit: float = math.inf
) -> np.ndarray:
  """``(trials, seeds)`` booleans: which runs diverged.

  A run diverged when any epoch's training loss or a final loss is NaN or infinite, or when its
  final training loss exceeds ``loss_limit``: a learning rate far too large can also leave a
  ReLU network with finite but enormous logits and a loss in the thousands, which is divergence
  in all but the floating-point sense.
  """
  bad = ~np.isfinite(metrics["epoch_train_loss"]).all(axis=-1)
  for split in ("train", "validation", "test"):
    bad |= ~np.isfinite(metrics[f"{split}_loss"])
  with np.errstate(invalid="ignore"):
    bad |= ~(metrics["train_loss"] <= loss_limit)
  return bad


def _finite_or_none(value: float) -> float | None:
  """JSON has no NaN or infinity: non-finite numbers are written as null."""
  return float(value) if math.isfinite(float(value)) else None


def trial_records(
    name: str,
    swept: Mapping[str, np.ndarray],
    fixed: Mapping[str, Any],
    metrics: Mapping[str, np.ndarray],
    loss_limit: float = math.inf,
    search: str = "grid",
    sequential: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
  """One JSON-ready record per trial: hyperparameters, seed means and per-seed values.

  A trial is marked ``diverged`` when any of its seeds diverged (:func:`diverged_runs`).
  With ``sequential`` (the same runs trained one at a time) its final training loss and test
  accuracy are recorded beside the vmapped ones.
  """
  diverged = diverged_runs(metrics, loss_limit)
  records = []
  for trial in range(len(next(iter(swept.values())))):
    hparams = {**fixed, **{hparam: float(values[trial]) for hparam, values in swept.items()}}
    record: dict[str, Any] = {
        "optimizer": name,
        "search": search,
        "trial": trial,
        "hparams": hparams,
        "diverged": bool(diverged[trial].any()),
        "diverged_seeds": int(diverged[trial].sum()),
    }
    for metric in RUN_METRICS:
      per_seed = metrics[metric][trial]
      with np.errstate(invalid="ignore"):
        record[metric] = _finite_or_none(np.mean(per_seed))
      record[f"{metric}_per_seed"] = [_finite_or_none(value) for value in per_seed]
    if sequential is not None:
      for metric in ("train_loss", "test_accuracy"):
        with np.errstate(invalid="ignore"):
          record[f"sequential_{metric}"] = _finite_or_none(np.mean(sequential[metric][trial]))
    records.append(record)
  return records


def best_trial(records: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
  """The non-diverged trial with the highest mean ``metric`` (ties: lower validation loss).

  Returns the entry written under ``best[optimizer]`` in ``sweep.json`` — the hyperparameters
  under ``hparams``, as :func:`experiments.classification.train.load_tuned_hparams` reads them — or
  ``None``
  when every trial diverged.
  """
  candidates = [r for r in records if not r["diverged"] and r[metric] is not None]
  if not candidates:
    return None
  def score(record: Mapping[str, Any]) -> tuple[float, float]:
    loss = record.get("validation_loss")
    return record[metric], -(loss if loss is not None else math.inf)

  best = max(candidates, key=score)
  return {
      "trial": best["trial"],
      "hparams": dict(best["hparams"]),
      "selected_by": metric,
      **{key: best[key] for key in RUN_METRICS},
  }


def _format(value: Any, digits: int = 4) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return f"{value:.{digits}g}"
  return str(value)


def write_markdown(path: Path, summary: Mapping[str, Any]) -> None:
  """``sweep.md``: best trials, timings and every trial, sorted by validation accuracy."""
  lines = [f"# Sweep `{summary['name']}`", ""]
  lines += [
      f"{summary['config']['dataset']}, {summary['config']['model']} "
      f"{summary['config']['model_kwargs']}, {summary['config']['num_epochs']} epochs of "
      f"batch {summary['config']['batch_size']}, seeds {summary['seeds']}, "
      f"selection by {summary['selection_metric']}. Hardware: {summary['hardware']}.",
      "",
      "## Best trial per optimizer",
      "",
      "| optimizer | hyperparameters | validation acc. | test acc. | train loss |",
      "|---|---|---|---|---|",
  ]
  for name, best in summary["best"].items():
    if best is None:
      lines.append(f"| {name} | every trial diverged | — | — | — |")
      continue
    hparams = ", ".join(f"{k}={_format(v)}" for k, v in best["hparams"].items())
    lines.append(
        f"| {name} | {hparams} | {_format(best['validation_accuracy'])} | "
        f"{_format(best['test_accuracy'])} | {_format(best['train_loss'])} |"
    )
  lines += ["", "## Timing", "",
            "| optimizer | runs | mode | compile s | compile CPU s | run s | run CPU s |",
            "|---|---|---|---|---|---|---|"]
  for name, modes in summary["timing"]["per_optimizer"].items():
    for mode, timing in modes.items():
      lines.append(
          f"| {name} | {timing['runs']} | {mode} | {timing['compile_s']:.2f} | "
          f"{timing['compile_cpu_s']:.2f} | {timing['run_s']:.2f} | {timing['run_cpu_s']:.2f} |"
      )
  speedups = summary["timing"].get("speedup")
  if speedups:
    lines += ["", "Speed-up of the vmapped sweep (run time, compilation excluded):", ""]
    for name, values in speedups.items():
      lines.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in values.items()))
  lines += ["", "## Every trial", "",
            "| optimizer | trial | hyperparameters | diverged | validation acc. | test acc. | "
            "train loss |", "|---|---|---|---|---|---|---|"]
  for record in sorted(summary["trials"], key=lambda r: (r["optimizer"],
                                                         -(r["validation_accuracy"] or 0.0))):
    hparams = ", ".join(f"{k}={_format(v)}" for k, v in record["hparams"].items())
    lines.append(
        f"| {record['optimizer']} | {record['trial']} | {hparams} | {record['diverged']} | "
        f"{_format(record['validation_accuracy'])} | {_format(record['test_accuracy'])} | "
        f"{_format(record['train_loss'])} |"
    )
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


def plot_sensitivity(path: Path, records: Sequence[Mapping[str, Any]], title: str) -> None:
  """Test accuracy against learning rate, one line per optimizer.

  Where an optimizer sweeps more than the learning rate (RMSprop's decay, say), each point is
  the best trial at that learning rate by validation accuracy, so the line shows the
  learning-rate sensitivity with the other hyperparameters tuned. Random searches, whose
  learning rates do not repeat, are drawn as points. Diverged trials are plotted at zero
  accuracy with a cross.
  """
  figure, axes = plt.subplots(figsize=(8.5, 5))
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
    # A grid gives a curve; random learning rates do not repeat, so they are drawn as points.
    style = "o" if rows[0].get("search") == "random" else "o-"
    axes.plot(rates, accuracy, style, color=color, label=name, markersize=4)
    failed = [rate for rate, c in zip(rates, chosen, strict=True) if c is None]
    axes.plot(failed, np.zeros(len(failed)), "x", color=color, markersize=8)
  axes.set_xscale("log")
  axes.set_ylim(0, 1.02)
  axes.set_xlabel("learning rate")
  axes.set_ylabel("test accuracy (mean over seeds)")
  axes.set_title(title)
  axes.grid(True, which="both", alpha=0.3)
  # Beside the axes: inside, it covered the low-accuracy ends of the curves.
  axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


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
  if config.num_seeds < 1 or config.num_epochs < 1 or config.batch_size < 1:
    raise ValueError(
        f"num_seeds, num_epochs and batch_size must be >= 1; got {config.num_seeds}, "
        f"{config.num_epochs}, {config.batch_size}."
    )
  if not config.optimizers:
    raise ValueError("config.optimizers must name at least one optimizer to sweep.")
  cache_dir = config.compilation_cache_dir
  if cache_dir:
    # JAX's persistent cache: the programs depend only on shapes, so a later sweep with other
    # values (same model, chunk size and seeds) loads them from disk instead of compiling.
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  dataset = dataset if dataset is not None else train.load_config_dataset(config)
  data = split_validation(dataset, config.validation_fraction, config.seed)
  if config.batch_size > data.train_images.shape[0]:
    raise ValueError(
        f"batch_size={config.batch_size} exceeds the {data.train_images.shape[0]} training "
        "examples left after the validation split."
    )
  spec = train.model_spec(config, dataset)
  seeds = [config.seed + index for index in range(config.num_seeds)]
  trial_randomness = config.trial_randomness
  selection_metric = "validation_accuracy"
  # A uniform prediction has loss ln(num_classes); far above it the run has blown up.
  loss_limit = config.divergence_factor * math.log(dataset.num_classes)

  plans = {name: optimizer_trials(name, entry, config.seed)
           for name, entry in config.optimizers.items()}
  num_runs = sum(len(next(iter(swept.values()))) for swept, _ in plans.values()) * len(seeds)
  bar = tqdm(total=num_runs * (2 if sequential else 1), desc="sweep runs",
             disable=not progress)

  trace_counts: dict[str, int] = {}
  records: list[dict[str, Any]] = []
  best: dict[str, Any] = {}
  timing: dict[str, dict[str, dict[str, float]]] = {}
  agreement: dict[str, dict[str, float]] = {}
  python_loop_checks: dict[str, list[dict[str, float]]] = {}
  for name, (swept, fixed) in plans.items():
    setup = TrainingSetup(
        spec=spec, optimizer=name, fixed=tuple(sorted(fixed.items())),
        batch_size=config.batch_size, num_epochs=config.num_epochs,
        schedule=config.lr_schedule,
        eval_batch_size=config.eval_batch_size,
    )
    trial_fn = make_trial_fn(setup, trace_counts)
    keys = run_keys(seeds, len(next(iter(swept.values()))), trial_randomness)
    bar.set_postfix(optimizer=name, mode="vmapped")
    repeats = config.timing_repeats if sequential else 1
    metrics, vmapped = run_vmapped(trial_fn, swept, keys, data, config.chunk_size,
                                   repeats=repeats, progress=bar)
    vmapped.traces = trace_counts.get(name, 0)
    modes = {"vmapped": vmapped}
    sequential_metrics: dict[str, np.ndarray] = {}
    if sequential:
      bar.set_postfix(optimizer=name, mode="sequential")
      before = trace_counts.get(name, 0)
      sequential_metrics, modes["sequential"] = run_sequential(
          trial_fn, swept, keys, data, repeats=repeats, progress=bar
      )
      modes["sequential"].traces = trace_counts[name] - before
      agreement[name] = _agreement(metrics, sequential_metrics, loss_limit)
      loop_timing, python_loop_checks[name] = _python_loop_sample(
          setup, swept, keys, data, metrics, config.python_loop_runs
      )
      modes["python_loop"] = loop_timing
    timing[name] = {mode: dataclasses.asdict(value) for mode, value in modes.items()}
    search = "grid" if "grid" in config.optimizers[name] else "random"
    trials = trial_records(name, swept, fixed, metrics, loss_limit, search,
                           sequential_metrics if sequential else None)
    records.extend(trials)
    best[name] = best_trial(trials, selection_metric)
  bar.close()

  plots = []
  heatmap = config.heatmap
  if heatmap is not None and heatmap.optimizer in plans:
    title = (f"{heatmap.optimizer}: test accuracy over {heatmap.x} x {heatmap.y} "
             f"({config.name})")
    rows = [r for r in records if r["optimizer"] == heatmap.optimizer]
    if plot_heatmap(workdir / "heatmap.png", rows, heatmap.x, heatmap.y, title):
      plots.append("heatmap.png")
  plot_sensitivity(workdir / "sensitivity.png", records,
                   f"Learning-rate sensitivity ({config.name})")
  plots.append("sensitivity.png")

  summary: dict[str, Any] = {
      "name": config.name,
      "config": _plain(config),
      "hardware": hardware_lib.summary_line(),
      "seeds": seeds,
      "trial_randomness": trial_randomness,
      "selection_metric": selection_metric,
      "selection_note": (
          "validation split held out from the training set" if config.validation_fraction > 0
          else "validation_fraction=0: the test set was used for selection"
      ),
      "divergence_loss_limit": loss_limit,
      "split_sizes": {split: int(getattr(data, f"{split}_labels").shape[0])
                      for split in ("train", "validation", "test")},
      "best": best,
      "trials": records,
      "timing": {
          "per_optimizer": timing,
          "python_loop_note": (
              f"Python-loop time measured on {config.python_loop_runs} run(s) per optimizer and "
              "extrapolated (run_s = mean per run x runs)" if sequential else None
          ),
      },
      "plots": plots,
  }
  if sequential:
    summary["timing"]["speedup"] = _speedups(timing)
    summary["timing"]["total"] = _totals(timing)
    summary["vmapped_vs_sequential_max_abs_diff"] = agreement
    summary["python_loop_vs_vmapped"] = python_loop_checks
  summary["wall_time_s"] = time.perf_counter() - start
  with open(workdir / "sweep.json", "w") as handle:
    json.dump(to_jsonable(summary), handle, indent=1, allow_nan=False)
  write_markdown(workdir / "sweep.md", summary)
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
