r"""Vmapped hyperparameter sweeps: every optimizer's trials in one compiled program, the trial axis
sharded over the devices, chosen on a validation split.

:func:`run_sweep` checks a config (every optimizer entry, :mod:`~experiments.sweeps.search_space`),
trains each optimizer's trials by its search — grid or random trials chunk by chunk
(:func:`~experiments.sweeps.program.run_vmapped`), Optuna's TPE or QMC in rounds
(:mod:`~experiments.sweeps.optuna_batches`), or successive halving
(:mod:`~experiments.sweeps.halving`) — scores them (:mod:`~experiments.sweeps.selection`) and
writes ``sweep.json``, ``sweep.md`` and the plots (:mod:`~experiments.sweeps.report`); with
``--sequential`` the timing study (:mod:`~experiments.sweeps.timing_study`) trains the same runs
the other ways. The method, outputs and measurements are in ``docs/sweeps.md``.

Usage::

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py [--sequential]
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.common import cli
from experiments.common import hardware as hardware_lib
from experiments.common.serialization import to_jsonable
from experiments.distributed import multihost
from experiments.sweeps import halving as halving_lib
from experiments.sweeps import schema as sweep_schema
from experiments.sweeps import timing_study
from experiments.sweeps.optuna_batches import run_optuna_batches
from experiments.sweeps.program import (
  ChunkRunner,
  ModeTiming,
  TrainingSetup,
  TrialMesh,
  make_trial_fn,
  run_keys,
  run_vmapped,
  trial_devices,
)
from experiments.sweeps.report import model_text, plot_heatmap, plot_sensitivity, write_markdown
from experiments.sweeps.search_space import MODEL_BASED, SearchPlan, search_plan, to_plain
from experiments.sweeps.selection import (
  SELECTION_METRIC,
  best_trial,
  divergence_loss_limit,
  trial_records,
)
from experiments.sweeps.validation_split import SweepData, split_validation


def run_sweep(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    sequential: bool = False,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
) -> dict[str, Any]:
  """Runs every optimizer's trials of ``config``, writes the outputs, returns the summary.

  Args:
    config: a sweep config (``configs/sweeps/sweep_digits.py`` documents the fields).
    workdir: output folder, created if needed (in a multi-process run, by process 0 only).
    sequential: also train every grid or random run one after another (same code, jit per run)
      and a sample of ``config.python_loop_runs`` runs per optimizer with a Python loop over a
      jitted step; record their times and how far their results are from the vmapped ones.
    dataset: an already loaded data set (tests pass a small one).
    progress: show a tqdm bar.

  Returns:
    The summary written to ``sweep.json``.
  """
  from tqdm.auto import tqdm

  start = time.perf_counter()
  workdir = Path(workdir)
  plans = check_sweep_config(config)
  multihost.initialize(config.get("distributed"))
  devices = trial_devices(config.devices, min(plan.trials_per_round or plan.num_trials
                                              for plan in plans.values()))
  use_compilation_cache(config.compilation_cache_dir)
  dataset = dataset if dataset is not None else train.load_config_dataset(config)
  data = split_validation(dataset, config.validation_fraction, config.seed)
  if config.batch_size > data.train_images.shape[0]:
    raise cli.ConfigError(
        f"batch_size={config.batch_size} exceeds the {data.train_images.shape[0]} training "
        "examples left after the validation split."
    )
  context = SweepContext(
      config=config, spec=train.model_spec(config, dataset), data=data,
      seeds=[config.seed + index for index in range(config.num_seeds)],
      loss_limit=divergence_loss_limit(config.divergence_factor, dataset.num_classes),
      sequential=sequential, mesh=TrialMesh(devices),
  )
  num_runs = sum(plan.num_trials for plan in plans.values()) * len(context.seeds)
  bar = tqdm(total=num_runs * (2 if sequential else 1), desc="sweep runs",
             disable=not progress or not multihost.is_primary())
  results = {name: sweep_optimizer(context, plan, bar) for name, plan in plans.items()}
  bar.close()

  records = [record for result in results.values() for record in result.records]
  summary = build_summary(context, results, records, plots=[])
  if multihost.is_primary():
    workdir.mkdir(parents=True, exist_ok=True)
    summary["plots"] = draw_plots(config, records, workdir)
  summary["wall_time_s"] = time.perf_counter() - start
  if multihost.is_primary():
    with open(workdir / "sweep.json", "w") as handle:
      json.dump(to_jsonable(summary), handle, indent=1, allow_nan=False)
    write_markdown(workdir / "sweep.md", summary)
  return summary


def check_sweep_config(config: ml_collections.ConfigDict) -> dict[str, SearchPlan]:
  """Every optimizer entry checked (:func:`~experiments.sweeps.search_space.search_plan`, the
  halving schedule against ``num_epochs``), before any data is loaded or run trained.

  Raises:
    cli.ConfigError: naming the field, for sizes below 1, an empty ``optimizers``, a bad entry.
  """
  if config.num_seeds < 1 or config.num_epochs < 1 or config.batch_size < 1:
    raise cli.ConfigError(
        f"num_seeds, num_epochs and batch_size must be >= 1; got {config.num_seeds}, "
        f"{config.num_epochs}, {config.batch_size}."
    )
  if not config.optimizers:
    raise cli.ConfigError("config.optimizers must name at least one optimizer to sweep.")
  if config.devices < 0:
    raise cli.ConfigError(f"devices must be 0 (every device) or >= 1; got {config.devices}.")
  plans = {}
  try:
    for name, entry in config.optimizers.items():
      plan = search_plan(name, entry, config.seed)
      if plan.halving is not None:
        halving_lib.check_halving(f"optimizers[{name!r}].halving", plan.halving,
                                  config.num_epochs)
      plans[name] = plan
  except ValueError as error:  # the entries' checks: every one names its field
    raise cli.ConfigError(str(error)) from None
  return plans


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
  """What every optimizer's sweep shares: the config, the model, the data splits, the seeds and
  the device mesh of the trial axis."""

  config: ml_collections.ConfigDict
  spec: train.ModelSpec
  data: SweepData
  seeds: list[int]
  loss_limit: float
  sequential: bool
  mesh: TrialMesh


@dataclasses.dataclass
class OptimizerSweep:
  """One optimizer's trials: records, best trial, timings, trial-epochs trained and, with
  ``--sequential``, checks; ``search`` describes the rounds or the halving schedule."""

  records: list[dict[str, Any]]
  best: dict[str, Any] | None
  timing: dict[str, dict[str, float]]
  trial_epochs: int = 0
  search: dict[str, Any] = dataclasses.field(default_factory=dict)
  agreement: dict[str, float] | None = None
  python_loop_checks: list[dict[str, float]] | None = None


def sweep_optimizer(context: SweepContext, plan: SearchPlan, bar: Any) -> OptimizerSweep:
  """Trains one optimizer's trials by its search and scores them."""
  config, name = context.config, plan.optimizer
  setup = TrainingSetup(
      spec=context.spec, optimizer=name, fixed=tuple(sorted(plan.fixed.items())),
      batch_size=config.batch_size, num_epochs=config.num_epochs,
      schedule=config.lr_schedule,
      eval_batch_size=config.eval_batch_size,
  )
  trace_counts: dict[str, int] = {}
  keys = run_keys(context.seeds, plan.num_trials, config.trial_randomness)
  bar.set_postfix(optimizer=name, mode=plan.search if plan.halving is None else "halving")
  result = OptimizerSweep(records=[], best=None, timing={})
  sequential_metrics: dict[str, np.ndarray] | None = None
  epochs_trained = np.full(plan.num_trials, config.num_epochs)
  if plan.search in MODEL_BASED:
    assert plan.space is not None and plan.trials_per_round is not None
    runner = ChunkRunner(make_trial_fn(setup, trace_counts), context.data,
                         per_trial_keys=keys.ndim == 2, mesh=context.mesh)
    swept, metrics, vmapped, rounds = run_optuna_batches(
        runner, plan.search, plan.space, plan.num_trials, plan.trials_per_round, keys,
        seed=config.seed, loss_limit=context.loss_limit, progress=bar,
    )
    result.search = {"rounds": max(rounds) + 1, "trials_per_round": plan.trials_per_round,
                     "round_width": context.mesh.width(plan.trials_per_round)}
  elif plan.halving is not None:
    assert plan.swept is not None
    swept = plan.swept
    eta, rung_epochs = plan.halving["eta"], plan.halving["rung_epochs"]
    halved = halving_lib.run_halving(
        setup, swept, keys, context.data, eta=eta, rung_epochs=rung_epochs,
        loss_limit=context.loss_limit, mesh=context.mesh, trace_counter=trace_counts,
        progress=bar,
    )
    metrics, vmapped, epochs_trained = halved.metrics, halved.timing, halved.epochs_trained
    result.search = {
        "eta": eta, "rung_epochs": rung_epochs,
        "schedule": [dataclasses.asdict(segment) for segment in halved.schedule],
        "compiled_widths": halved.compiled_widths, "compilations": halved.compilations,
    }
  else:
    assert plan.swept is not None
    swept = plan.swept
    trial_fn = make_trial_fn(setup, trace_counts)
    repeats = config.timing_repeats if context.sequential else 1
    metrics, vmapped = run_vmapped(trial_fn, swept, keys, context.data, config.chunk_size,
                                   repeats=repeats, progress=bar, mesh=context.mesh)
  vmapped.traces = trace_counts.get(name, 0)
  modes: dict[str, ModeTiming] = {"vmapped": vmapped}
  if context.sequential and plan.search not in MODEL_BASED and plan.halving is None:
    others = timing_study.time_other_modes(
        setup, trial_fn, trace_counts, swept, keys, context.data, metrics,
        loss_limit=context.loss_limit, repeats=config.timing_repeats,
        python_loop_runs=config.python_loop_runs, bar=bar,
    )
    modes.update(others.timing)
    sequential_metrics = others.sequential_metrics
    result.agreement, result.python_loop_checks = others.agreement, others.python_loop_checks
  result.timing = {mode: dataclasses.asdict(value) for mode, value in modes.items()}
  search = plan.search if plan.halving is None else f"{plan.search}+halving"
  result.records = trial_records(name, swept, plan.fixed, metrics, context.loss_limit, search,
                                 sequential_metrics)
  for record, epochs in zip(result.records, epochs_trained, strict=True):
    record["epochs_trained"] = int(epochs)
  result.trial_epochs = int(epochs_trained.sum())
  # Only trials trained to the last epoch are candidates: a halving run stops the others early.
  finished = [record for record in result.records if record["epochs_trained"] == config.num_epochs]
  result.best = best_trial(finished, SELECTION_METRIC)
  return result


def draw_plots(
    config: ml_collections.ConfigDict, records: Sequence[Mapping[str, Any]], workdir: Path
) -> list[str]:
  """The heatmap of ``config.heatmap`` (when its optimizer was swept) and the sensitivity plot."""
  plots = []
  heatmap = config.heatmap
  if heatmap is not None and heatmap.optimizer in config.optimizers:
    title = (f"{heatmap.optimizer}: test accuracy over {heatmap.x} x {heatmap.y} "
             f"({config.name}, {model_text(config)})")
    rows = [r for r in records if r["optimizer"] == heatmap.optimizer]
    if plot_heatmap(workdir / "heatmap.png", rows, heatmap.x, heatmap.y, title):
      plots.append("heatmap.png")
  plot_sensitivity(workdir / "sensitivity.png", records,
                   f"Learning-rate sensitivity: {config.name}\n{model_text(config)}")
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
      "devices": context.mesh.size,
      "processes": jax.process_count(),
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
      "trial_epochs": {name: result.trial_epochs for name, result in results.items()},
      "search": {name: result.search for name, result in results.items() if result.search},
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
    summary["timing"]["speedup"] = timing_study.speedups(timing)
    summary["timing"]["total"] = timing_study.totals(timing)
    summary["vmapped_vs_sequential_max_abs_diff"] = {
        name: result.agreement for name, result in results.items()}
    summary["python_loop_vs_vmapped"] = {
        name: result.python_loop_checks for name, result in results.items()}
  return summary


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py``."""

  def sweep(config: ml_collections.ConfigDict, workdir: str, sequential: bool) -> None:
    summary = run_sweep(config, workdir, sequential=sequential)
    print(f"{config.name}, model {model_text(config)}: best trial per optimizer by "
          f"{summary['selection_metric']}")
    for name, best in summary["best"].items():
      epochs = summary["trial_epochs"][name]
      if best is None:
        print(f"{name}: every trial diverged ({epochs} trial-epochs)")
      else:
        print(f"{name}: best {best['hparams']} validation accuracy "
              f"{best['validation_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f} "
              f"({epochs} trial-epochs)")
    for name, speedup in summary["timing"].get("speedup", {}).items():
      print(f"{name}: vmapped speed-up " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    if multihost.is_primary():
      print(f"wrote {workdir}/sweep.json, sweep.md and {len(summary['plots'])} plots "
            f"in {summary['wall_time_s']:.1f} s on {summary['devices']} device(s)")

  cli.run_job(
      sweep, default_config="configs/sweeps/sweep_digits.py", schema=sweep_schema.SWEEP,
      argv=argv,
      switches={"sequential": "Also train the same runs one after another (jit per run) and a "
                              "sample with a Python loop over a jitted step; record the times."},
  )


if __name__ == "__main__":
  main()
