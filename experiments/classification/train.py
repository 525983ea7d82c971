"""Training one optimizer of a classification config over its seeds: the run, and its command.

:func:`train_and_evaluate` reads as the method: load the data set, build the model
(:mod:`.model_spec`) and the optimizer (:mod:`experiments.common.optimizers`, tuned values from
a sweep by :mod:`.tuned_hparams`), lay the seeds out and compile an epoch (:mod:`.seed_layout`),
train epoch by epoch with the pure steps of :mod:`.steps`, evaluate the test set after every
epoch (:class:`.results.EpochRecorder`), save the final variables (:mod:`.checkpoint`) and
return a :class:`.results.RunResult`; :mod:`experiments.classification.compare` calls it once
per optimizer. The fields a config holds are :data:`.schema.SCHEMA`.

The pure functions are importable from here too, as the interface of the classification job
(``train.TrainState``, ``train.train_step``, ``train.train_epoch``, ``train.evaluate``, ...):

Several seeds in one program::

    train = jax.jit(jax.vmap(
        functools.partial(train_epoch, graphdef, optimizer, batch_size=64),
        in_axes=(0, None, None, 0)))
    states = jax.vmap(lambda k: init_train_state(spec, optimizer, k))(keys)
    states, metrics = train(states, images, labels, epoch_keys)

Several hyperparameter values in one program (the optimizer is built from traced values)::

    def run(hparams, key):
      optimizer = optimizer_lib.make_optimizer("rmsprop", hparams)
      state = init_train_state(spec, optimizer, key)
      return train_epoch(graphdef, optimizer, state, images, labels, key, batch_size=64)
    jax.jit(jax.vmap(run))({"learning_rate": jnp.logspace(-4, -2, 8)}, keys)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import metrics
from experiments.classification.checkpoint import save_checkpoint
from experiments.classification.data import load_config_dataset
from experiments.classification.model_spec import (
    ModelSpec,
    init_variables,
    model_graphdef,
    model_spec,
)
from experiments.classification.results import EpochRecorder, RunResult
from experiments.classification.schema import SCHEMA, check_config, check_data_fits
from experiments.classification.seed_layout import (
    SeedGroups,
    compile_epoch,
    init_states,
    shared_programs,
)
from experiments.classification.steps import (
    TrainState,
    augment_images,
    eval_step,
    evaluate,
    init_train_state,
    train_epoch,
    train_indexed_step,
    train_step,
)
from experiments.classification.tuned_hparams import load_tuned_hparams, resolve_hparams
from experiments.common import cli
from experiments.common import optimizers as optimizer_lib
from experiments.common.serialization import to_jsonable

# The classification job's interface, defined in the modules above and used by the other jobs.
__all__ = [
    "ModelSpec",
    "RunResult",
    "TrainState",
    "augment_images",
    "check_config",
    "eval_step",
    "evaluate",
    "init_train_state",
    "init_variables",
    "load_config_dataset",
    "load_tuned_hparams",
    "main",
    "model_graphdef",
    "model_spec",
    "resolve_hparams",
    "train_and_evaluate",
    "train_epoch",
    "train_indexed_step",
    "train_step",
]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
    progress: Any = None,
) -> RunResult:
  """Trains ``config.optimizer`` on ``config.dataset`` for ``config.num_seeds`` seeds.

  ``config`` must have passed :func:`.schema.check_config` (its callers check it once, before
  loading the data). Seed ``s`` (``config.seed + i``) fixes the initial weights, the data order
  and the dropout masks (:mod:`experiments.common.data_order`); the same seeds give every
  optimizer the same initial weights and data order. After each epoch the whole test set is
  evaluated. The layout follows ``config.vmap_seeds`` (:class:`.seed_layout.SeedGroups`) and
  ``config.epoch_loop`` (:func:`.seed_layout.compile_epoch`), chosen per hardware.

  Compilation is timed apart (ahead-of-time); ``train_time_s`` is the time of the training
  steps alone, ``eval_time_s`` that of the test evaluations, and ``wall_time_s`` everything
  including compilation. With ``config.save_checkpoint`` the final variables of every seed are
  saved with Orbax to ``workdir/checkpoint``.

  Args:
    config: a config from ``configs/`` (see ``configs/classification/digits.py`` for the fields).
    workdir: folder for this run's outputs.
    dataset: the loaded data set, to share one load between optimizers.
    progress: optional tqdm bar, advanced by one per epoch.

  Returns:
    The :class:`RunResult`.
  """
  start = time.perf_counter()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  # The model, the optimizer and the data.
  dataset = dataset if dataset is not None else load_config_dataset(config)
  spec = model_spec(config, dataset)
  graphdef = model_graphdef(spec)
  hparams = resolve_hparams(config, config.optimizer)
  steps_per_epoch = dataset.train_images.shape[0] // config.batch_size
  optimizer = optimizer_lib.make_optimizer(
      config.optimizer, hparams, schedule=config.lr_schedule,
      total_steps=steps_per_epoch * config.num_epochs,
  )
  train_images, train_labels, test_images, test_labels = (
      jax.device_put(array) for array in (dataset.train_images, dataset.train_labels,
                                          dataset.test_images, dataset.test_labels)
  )

  # One train state per seed group; the init and evaluation programs are shared by every
  # optimizer of a comparison (they do not depend on it; see shared_programs).
  layout = SeedGroups(tuple(config.seed + i for i in range(config.num_seeds)),
                      bool(config.vmap_seeds))
  init_fn, eval_fn = shared_programs(
      spec, layout.vmap_seeds, int(config.eval_batch_size)
  )
  compile_start = time.perf_counter()
  states, epoch_keys = init_states(layout, init_fn, optimizer, config.num_epochs)
  jax.block_until_ready(eval_fn(states[0], test_images, test_labels))
  epoch_fn = compile_epoch(config, layout, graphdef, optimizer, states[0], train_images,
                           train_labels, layout.epoch_key(epoch_keys[0], 0))
  compile_time = time.perf_counter() - compile_start

  # Train every group an epoch at a time, evaluating the test set after each epoch.
  epochs = EpochRecorder()
  for epoch in range(config.num_epochs):
    epochs.start_epoch()
    for index, keys in enumerate(epoch_keys):
      tick = time.perf_counter()
      states[index], train_metrics = epoch_fn(
          states[index], train_images, train_labels, layout.epoch_key(keys, epoch)
      )
      train_metrics = jax.device_get(train_metrics)
      tock = time.perf_counter()
      evaluation = jax.device_get(eval_fn(states[index], test_images, test_labels))
      epochs.eval_time_s += time.perf_counter() - tock
      epochs.train_time_s += tock - tick
      epochs.add_group(train_metrics, evaluation, len(test_labels))
    epochs.end_epoch()
    if progress is not None:
      progress.set_postfix(
          optimizer=config.optimizer, epoch=epoch + 1,
          test_acc=f"{float(np.mean(epochs.history['test_accuracy'][-1])):.4f}",
      )
      progress.update(1)

  if config.save_checkpoint:
    save_checkpoint(workdir / "checkpoint", layout.stacked(states))
  return RunResult(
      optimizer=config.optimizer,
      hparams=hparams,
      seeds=list(layout.seeds),
      steps_per_epoch=steps_per_epoch,
      test_predictions=np.concatenate(epochs.predictions),
      test_labels=np.asarray(dataset.test_labels),
      compile_time_s=compile_time,
      train_time_s=epochs.train_time_s,
      eval_time_s=epochs.eval_time_s,
      wall_time_s=time.perf_counter() - start,
      **epochs.curves(),
  )


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.classification.train --config configs/classification/digits.py``.

  Trains ``config.optimizer`` alone over the config's seeds and writes ``summary.json`` (the
  comparison, :mod:`experiments.classification.compare`, trains every optimizer of
  ``config.optimizers``).
  """
  def train(config: ml_collections.ConfigDict, workdir_name: str) -> None:
    check_config(config)
    workdir = Path(workdir_name)
    dataset = load_config_dataset(config)
    check_data_fits(config, dataset)
    result = train_and_evaluate(config, workdir, dataset=dataset)
    summary = metrics.summarize_run(result, dataset.num_classes, config.target_accuracy)
    (workdir / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    print(f"{config.optimizer} on {config.name}: test accuracy {summary['test_accuracy']:.4f} "
          f"± {summary['test_accuracy_std']:.4f} over {config.num_seeds} seed(s); wrote "
          f"{workdir}/summary.json")

  cli.run_job(train, default_workdir="runs/{name}_{optimizer}", schema=SCHEMA, argv=argv)


if __name__ == "__main__":
  main()



if __name__ == "__main__":
  main()
