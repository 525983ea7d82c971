"""What a classification config holds: the fields the job reads, and the checks of their values.

:data:`SCHEMA` lists every field :mod:`experiments.classification.train` and
:mod:`experiments.classification.compare` read (``data_dir`` and ``verify_checksums`` only for
the data sets that have files); :func:`experiments.common.cli.run_job` refuses a config with a
field more or less before any work. :func:`check_config` then checks the values.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from experiments.classification import data as data_lib
from experiments.classification import models
from experiments.classification.tuned_hparams import resolve_hparams
from experiments.common import cli
from experiments.common import optimizers as optimizer_lib
from experiments.common.config_schema import ConfigSchema

EPOCH_LOOPS = ("scan", "python")


def has_files(config: ml_collections.ConfigDict) -> bool:
  """Whether the config's data set is read from files (a cache folder, MD5 checks)."""
  return config.dataset in data_lib.FILE_DATASETS


# Fields the data sets with files read; a digits config holds neither.
DATA_FILE_FIELDS = ("data_dir", "verify_checksums")

# Every field a classification config must hold: the code reads each one and keeps no defaults.
SCHEMA = ConfigSchema(
    job="experiments.classification (train, compare)",
    fields=(
        "name", "dataset", "model", "model_kwargs", "batch_size", "eval_batch_size",
        "num_epochs", "num_seeds", "seed", "lr_schedule", "augment", "target_accuracy",
        "save_checkpoint", "epoch_loop", "scan_unroll", "vmap_seeds", "optimizer", "optimizers",
        "tuned_from",
    ),
    conditional={field: (has_files, "the data set has files (fashion_mnist, cifar10)")
                 for field in DATA_FILE_FIELDS},
    example="configs/classification/fashion_mnist.py",
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`experiments.common.cli.ConfigError` naming the first field that cannot work.

  Called before any data is loaded or any program compiled, so that a typo costs one line,
  not minutes of training the other optimizers first. Checks that the fields of
  :data:`SCHEMA` are present (only that: a sweep passes its trial configs, which hold the
  sweep's fields besides; the command line refuses extra fields), then names (data set, model,
  optimizers, schedule), sizes, and every optimizer's hyperparameters (baselines too), with
  the sweep's values when ``config.tuned_from`` names one.
  """
  def fail(message: str) -> None:
    raise cli.ConfigError(message)

  SCHEMA.check_present(config)
  if config.dataset not in data_lib.DATASETS:
    fail(f"config.dataset={config.dataset!r} is not one of {data_lib.DATASETS}.")
  if config.model not in models.MODELS:
    fail(f"config.model={config.model!r} is not one of {models.MODELS}.")
  for field in ("batch_size", "eval_batch_size", "num_epochs", "num_seeds"):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(f"config.{field} must be a whole number >= 1; got {value!r}.")
  if config.epoch_loop not in EPOCH_LOOPS:
    fail(f"config.epoch_loop must be one of {EPOCH_LOOPS}; got {config.epoch_loop!r}.")
  schedule = config.lr_schedule
  if schedule not in optimizer_lib.SCHEDULES:
    fail(f"config.lr_schedule must be one of {optimizer_lib.SCHEDULES}; got {schedule!r}.")
  if not 0.0 < config.target_accuracy <= 1.0:
    fail(f"config.target_accuracy must be in (0, 1]; got {config.target_accuracy!r}.")
  # An entry is named after its optimizer, or names it in a `kind` key (variants of one
  # optimizer side by side, e.g. RMSprop's state formats).
  unknown = sorted(name for name, entry in config.optimizers.items()
                   if name not in optimizer_lib.OPTIMIZERS and "kind" not in entry)
  if unknown:
    fail(f"config.optimizers has unknown optimizer(s) {unknown}; the known ones are "
         f"{optimizer_lib.OPTIMIZERS} (another name needs a 'kind' key naming one).")
  if not config.optimizers:
    fail(f"config.optimizers is empty; name at least one of {optimizer_lib.OPTIMIZERS}.")
  if config.optimizer not in optimizer_lib.OPTIMIZERS and config.optimizer not in config.optimizers:
    fail(f"config.optimizer={config.optimizer!r} is not one of {optimizer_lib.OPTIMIZERS} nor an "
         f"entry of config.optimizers ({sorted(config.optimizers)}).")
  tuned_from = config.tuned_from
  if tuned_from and not Path(tuned_from).is_file():
    fail(f"config.tuned_from={tuned_from!r}: no such file. It is written by the sweep: run "
         f"`make sweep` (or python -m experiments.sweeps.sweep --config <a sweep config>) first.")
  for name in config.optimizers:
    try:
      optimizer_lib.make_optimizer(name, resolve_hparams(config, name), schedule=schedule,
                                total_steps=1000)
    except (TypeError, ValueError) as error:
      text = str(error)
      fail(text if text.startswith("optimizers.") else f"config.optimizers.{name}: {text}")


def check_data_fits(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> None:
  """Raises :class:`.cli.ConfigError` if a batch is larger than the training set."""
  num_train = dataset.train_images.shape[0]
  if config.batch_size > num_train:
    raise cli.ConfigError(
        f"config.batch_size={config.batch_size} is larger than the {num_train} training "
        f"images of {dataset.name}; use at most {num_train}."
    )
