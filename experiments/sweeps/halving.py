"""Successive halving inside the vmapped program (Jamieson & Talwalkar, 2016; the rule Hyperband
and ASHA build on): all trials train ``rung_epochs`` epochs, the best ``1/eta`` on the
validation split continue from their exact state (parameters, optimizer state, step count; the
data order is the seed's, so the next epoch's batches follow), re-packed into a narrower
compiled call, until the run's last epoch.

A call's width is the number of surviving trials (rounded up to a multiple of the devices), so
compute drops with every rung; one compilation per width (and per segment length) is the cost,
and the count is recorded. The method and measurements are in ``docs/sweeps.md``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from experiments.common import data_order
from experiments.sweeps.program import ModeTiming, TrainingSetup, TrialMesh, make_run_parts
from experiments.sweeps.selection import SELECTION_METRIC, diverged_runs
from experiments.sweeps.validation_split import SweepData

HALVING_KEYS = ("eta", "rung_epochs")


@dataclasses.dataclass(frozen=True)
class Segment:
  """Epochs ``[start, end)`` trained by ``trials`` surviving trials."""

  start: int
  end: int
  trials: int


def check_halving(field: str, halving: Mapping[str, Any], num_epochs: int) -> tuple[int, int]:
  """``(eta, rung_epochs)`` of a config's ``halving`` entry; errors name ``field``."""
  unknown = set(halving) - set(HALVING_KEYS)
  missing = set(HALVING_KEYS) - set(halving)
  if unknown or missing:
    raise ValueError(f"{field} must hold exactly {HALVING_KEYS}; unknown {sorted(unknown)}, "
                     f"missing {sorted(missing)}.")
  eta, rung_epochs = halving["eta"], halving["rung_epochs"]
  if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
    raise ValueError(f"{field}.eta must be an integer >= 2 (keep the best 1/eta); got {eta!r}.")
  if isinstance(rung_epochs, bool) or not isinstance(rung_epochs, int) or rung_epochs < 1:
    raise ValueError(f"{field}.rung_epochs must be an integer >= 1; got {rung_epochs!r}.")
  if rung_epochs >= num_epochs:
    raise ValueError(
        f"{field}.rung_epochs={rung_epochs}: the halving schedule is longer than the run "
        f"(num_epochs={num_epochs}); the first rung must end before the last epoch."
    )
  return eta, rung_epochs


def halving_schedule(
    num_trials: int, num_epochs: int, eta: int, rung_epochs: int
) -> list[Segment]:
  """The segments of a halving run: every ``rung_epochs`` epochs the survivors drop to
  ``max(1, survivors // eta)``; once one is left it trains to the end in one segment."""
  segments, alive, start = [], num_trials, 0
  while start < num_epochs:
    end = num_epochs if alive == 1 else min(start + rung_epochs, num_epochs)
    segments.append(Segment(start, end, alive))
    start = end
    alive = max(1, alive // eta)
  return segments


@dataclasses.dataclass
class HalvingResult:
  """A halving run: per-trial metrics at its last trained epoch, and what it cost."""

  metrics: dict[str, np.ndarray]  # (trials, seeds); epoch_train_loss (trials, seeds, 1)
  epochs_trained: np.ndarray  # (trials,)
  epoch_losses: list[np.ndarray]  # per trial, (seeds, epochs_trained)
  schedule: list[Segment]
  compiled_widths: list[int]  # distinct call widths, in order of first use
  compilations: int  # compiled programs: one per (width, segment length)
  timing: ModeTiming


class _Programs:
  """The segment programs of one setup (the first also initialises), compiled once per shape."""

  def __init__(self, setup: TrainingSetup, mesh: TrialMesh, per_trial_keys: bool,
               trace_counter: dict[str, int] | None):
    parts = make_run_parts(setup)

    def segment(hparams: dict[str, jax.Array], state: Any, epoch_keys: jax.Array,
                data: SweepData) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
      if trace_counter is not None:  # Python side effect: runs at trace time only.
        trace_counter[setup.optimizer] = trace_counter.get(setup.optimizer, 0) + 1
      state, losses = parts.train_epochs(hparams, state, epoch_keys, data)
      return state, losses, parts.evaluate(state, data)

    def start(hparams: dict[str, jax.Array], key: jax.Array, epoch_keys: jax.Array,
              data: SweepData) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
      return segment(hparams, parts.init(hparams, key, data)[0], epoch_keys, data)

    key_axis = 0 if per_trial_keys else None
    # The first segment initialises the states in the same program (one compilation fewer).
    start_trials = jax.vmap(jax.vmap(start, in_axes=(None, 0, 0, None)),
                            in_axes=(0, key_axis, key_axis, None))
    segment_trials = jax.vmap(jax.vmap(segment, in_axes=(None, 0, 0, None)),
                              in_axes=(0, 0, key_axis, None))
    self.start = jax.jit(mesh.shard(start_trials, (True, per_trial_keys, per_trial_keys, False)))
    self.segment = jax.jit(mesh.shard(segment_trials, (True, True, per_trial_keys, False)))
    self.gather = jax.jit(lambda tree, rows: jax.tree.map(lambda leaf: leaf[rows], tree),
                          out_shardings=mesh.sharding(True))
    self.compiled: dict[tuple[Any, ...], Any] = {}
    self.compile_s = self.compile_cpu_s = 0.0

  def call(self, name: str, *args: Any) -> Any:
    shape_key = (name, *(tuple(leaf.shape) for leaf in jax.tree.leaves(args[:-1])))
    if shape_key not in self.compiled:
      tick, tick_cpu = time.perf_counter(), time.process_time()
      self.compiled[shape_key] = getattr(self, name).lower(*args).compile()
      self.compile_s += time.perf_counter() - tick
      self.compile_cpu_s += time.process_time() - tick_cpu
    return self.compiled[shape_key](*args)


def run_halving(
    setup: TrainingSetup,
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    *,
    eta: int,
    rung_epochs: int,
    loss_limit: float,
    mesh: TrialMesh | None = None,
    trace_counter: dict[str, int] | None = None,
    progress: Any = None,
) -> HalvingResult:
  """Trains ``swept``'s trials by successive halving; see the module docstring.

  At each rung the trials are ranked by validation accuracy (mean over seeds; a trial with a
  diverged seed ranks last; ties: lower validation loss, then trial order) and the best
  ``survivors // eta`` carry their states into the next segment. ``keys`` are
  :func:`~experiments.sweeps.program.run_keys`' (shared ``(seeds,)`` or ``(trials, seeds)``).
  """
  mesh = mesh if mesh is not None else TrialMesh(jax.devices()[:1])
  num_trials = len(next(iter(swept.values())))
  per_trial = keys.ndim == 2
  schedule = halving_schedule(num_trials, setup.num_epochs, eta, rung_epochs)
  programs = _Programs(setup, mesh, per_trial, trace_counter)
  hparams = {name: np.asarray(values, np.float32) for name, values in swept.items()}
  flat_keys = keys.reshape(-1)
  epoch_keys = jax.vmap(
      lambda key: data_order.epoch_keys(data_order.seed_keys(key)[1], setup.num_epochs)
  )(flat_keys).reshape(*keys.shape, setup.num_epochs)
  global_data = mesh.put(data, over_trials=False)

  num_seeds = keys.shape[-1]
  last: dict[str, np.ndarray] = {}
  epoch_losses: list[list[np.ndarray]] = [[] for _ in range(num_trials)]
  epochs_trained = np.zeros(num_trials, np.int64)
  widths: list[int] = []
  alive = np.arange(num_trials)  # the surviving trials
  state, rows_of_alive = None, np.arange(num_trials)  # and their rows in the last call's state
  wall, cpu = time.perf_counter(), time.process_time()
  for segment in schedule:
    count, width = len(alive), mesh.width(len(alive))
    padding = np.arange(width).clip(max=count - 1)  # the last survivor repeated, then dropped
    trials = alive[padding]
    if width not in widths:
      widths.append(width)
    chunk = mesh.put({name: values[trials] for name, values in hparams.items()}, True)
    span = mesh.put(
        (epoch_keys[trials] if per_trial else epoch_keys)[..., segment.start:segment.end],
        per_trial,
    )
    if state is None:
      run_key = mesh.put(keys[trials] if per_trial else keys, per_trial)
      state, losses, metrics = programs.call("start", chunk, run_key, span, global_data)
    else:  # re-pack the survivors' states into the narrower call
      state = programs.gather(state, mesh.put(rows_of_alive[padding], over_trials=False))
      state, losses, metrics = programs.call("segment", chunk, state, span, global_data)
    losses, metrics = mesh.fetch((losses, metrics))
    metrics = {name: value[:count] for name, value in metrics.items()}
    for row, trial in enumerate(alive):
      epoch_losses[trial].append(losses[row])
      epochs_trained[trial] = segment.end
    for name, value in metrics.items():
      last.setdefault(name, np.full((num_trials, num_seeds), np.nan, value.dtype))
      last[name][alive] = value
    if progress is not None:
      progress.update(count * num_seeds * (segment.end - segment.start) / setup.num_epochs)
    if segment is schedule[-1]:
      break
    ranked = rank_trials(
        metrics, [np.concatenate(epoch_losses[trial], axis=-1) for trial in alive], loss_limit
    )
    rows_of_alive = np.sort(ranked[:max(1, count // eta)])  # in trial order
    alive = alive[rows_of_alive]
  timing = ModeTiming(runs=num_trials * num_seeds, runs_timed=num_trials * num_seeds)
  timing.compile_s, timing.compile_cpu_s = programs.compile_s, programs.compile_cpu_s
  timing.record(time.perf_counter() - wall - programs.compile_s,
                time.process_time() - cpu - programs.compile_cpu_s)
  timing.traces = trace_counter.get(setup.optimizer, 0) if trace_counter is not None else 0
  losses_per_trial = [np.concatenate(parts, axis=-1) for parts in epoch_losses]
  finite = np.stack([np.isfinite(parts).all(axis=-1) for parts in losses_per_trial])
  final_losses = np.stack([parts[:, -1] for parts in losses_per_trial])
  last["epoch_train_loss"] = np.where(finite, final_losses, np.nan)[..., None]
  return HalvingResult(
      metrics=last, epochs_trained=epochs_trained, epoch_losses=losses_per_trial,
      schedule=schedule, compiled_widths=widths, compilations=len(programs.compiled),
      timing=timing,
  )


def rank_trials(
    metrics: Mapping[str, np.ndarray], epoch_losses: Sequence[np.ndarray], loss_limit: float
) -> np.ndarray:
  """Row indices of a rung's trials, best first (see :func:`run_halving`)."""
  finite_losses = np.stack([np.where(np.isfinite(losses).all(-1), losses[:, -1], np.nan)
                            for losses in epoch_losses])
  diverged = diverged_runs({**metrics, "epoch_train_loss": finite_losses[..., None]},
                           loss_limit).any(axis=1)
  score = np.where(diverged, -np.inf, np.mean(metrics[SELECTION_METRIC], axis=1))
  loss = np.where(diverged, np.inf, np.mean(metrics["validation_loss"], axis=1))
  # lexsort sorts by the last key first: score (descending), then loss, then row.
  rows = np.arange(len(score))
  return np.lexsort((rows, loss, -score))
