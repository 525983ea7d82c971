"""Optuna's samplers driving the vmapped program: each round asks a sampler for as many trials as
one compiled call holds, trains them in that call and tells the sampler their validation
accuracy (Optuna's ask-and-tell interface).

The hyperparameters are arguments of the compiled program (traced), so every round reuses the
one compilation; a short last round is padded with its last trial, as a grid's last chunk. The
samplers are TPE (Optuna's default) and scrambled Sobol QMC. The method and measurements are in
``docs/sweeps.md``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from experiments.sweeps.program import ChunkRunner, ModeTiming
from experiments.sweeps.selection import SELECTION_METRIC, diverged_runs


def make_sampler(search: str, seed: int) -> Any:
  """Optuna's sampler for a search kind: ``tpe`` (TPE, Optuna's default, with its constant liar
  for trials asked together) or ``qmc`` (scrambled Sobol points)."""
  import optuna

  if search == "tpe":
    return optuna.samplers.TPESampler(seed=seed)
  if search == "qmc":
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                        warn_asynchronous_seeding=False)
  raise ValueError(f"search must be 'tpe' or 'qmc' for an Optuna sampler; got {search!r}.")


def suggest(trial: Any, space: Mapping[str, tuple[str, float, float]]) -> dict[str, float]:
  """A trial's values for a checked ``(distribution, low, high)`` space, in sorted order."""
  return {name: trial.suggest_float(name, low, high, log=distribution == "log_uniform")
          for name, (distribution, low, high) in sorted(space.items())}


def run_optuna_batches(
    runner: ChunkRunner,
    search: str,
    space: Mapping[str, tuple[str, float, float]],
    num_trials: int,
    trials_per_round: int,
    keys: jax.Array,
    *,
    seed: int,
    loss_limit: float,
    progress: Any = None,
    on_round: Callable[[dict[str, np.ndarray]], None] | None = None,
    study: Any = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], ModeTiming, list[int]]:
  """Asks, trains and tells ``num_trials`` trials, ``trials_per_round`` per compiled call.

  Each trial's value is its validation accuracy (mean over seeds); a trial with a diverged seed
  is told as failed, so the sampler learns to avoid its region without a made-up score.

  Args:
    runner: the compiled chunk program (its mesh rounds a round up to a multiple of devices).
    search: ``tpe`` or ``qmc``.
    space: ``{name: (distribution, low, high)}``, checked.
    num_trials: trials in all.
    trials_per_round: trials asked before the next tell.
    keys: ``(seeds,)`` shared by the trials, or ``(num_trials, seeds)`` per trial.
    seed: the sampler's seed.
    loss_limit: the final training loss above which a run diverged.
    progress: a tqdm bar, updated per trial.
    on_round: called after each round's tell with that round's metrics (``(count, seeds)``).
    study: an Optuna study (direction ``maximize``) to continue; default a new one with the
      ``search`` sampler seeded with ``seed``.

  Returns:
    The hyperparameters of every trial in the order asked (float64 arrays), their metrics
    ``(num_trials, seeds, ...)``, the timing (run time: asking, training and telling; the one
    compilation apart) and each trial's round.
  """
  import optuna

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  if study is None:
    study = optuna.create_study(direction="maximize", sampler=make_sampler(search, seed))
  per_trial = keys.ndim == 2
  width = runner.mesh.width(trials_per_round)
  names = sorted(space)
  asked: dict[str, list[float]] = {name: [] for name in names}
  outputs: list[dict[str, np.ndarray]] = []
  rounds: list[int] = []
  timing = ModeTiming(runs=num_trials * keys.shape[-1], runs_timed=num_trials * keys.shape[-1])
  wall, cpu = time.perf_counter(), time.process_time()
  for round_index in range(math.ceil(num_trials / trials_per_round)):
    count = min(trials_per_round, num_trials - round_index * trials_per_round)
    trials = [study.ask() for _ in range(count)]
    values = [suggest(trial, space) for trial in trials]
    padded = np.arange(width).clip(max=count - 1)
    hparams = {name: np.asarray([values[i][name] for i in padded], np.float32) for name in names}
    first = round_index * trials_per_round
    chunk_keys = keys[first + padded] if per_trial else keys
    metrics = {name: value[:count] for name, value in runner(hparams, chunk_keys).items()}
    diverged = np.asarray(diverged_runs(metrics, loss_limit).any(axis=1))
    for index, trial in enumerate(trials):
      if diverged[index]:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
      else:
        study.tell(trial, float(np.mean(metrics[SELECTION_METRIC][index])))
    for name in names:
      asked[name].extend(values[i][name] for i in range(count))
    outputs.append(metrics)
    rounds.extend([round_index] * count)
    if progress is not None:
      progress.update(count)
    if on_round is not None:
      on_round(metrics)
  # The run time covers asking, training and telling; the one compilation is timed apart.
  timing.compile_s, timing.compile_cpu_s = runner.compile_s, runner.compile_cpu_s
  timing.record(time.perf_counter() - wall - runner.compile_s,
                time.process_time() - cpu - runner.compile_cpu_s)
  swept = {name: np.asarray(values, np.float64) for name, values in asked.items()}
  return swept, {name: np.concatenate([out[name] for out in outputs]) for name in outputs[0]}, \
      timing, rounds
