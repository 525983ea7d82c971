"""What a sweep config holds: the fields each sweep job reads, one schema per driver.

* :data:`SWEEP` — :mod:`experiments.sweeps.sweep` (the vmapped grid, random, Optuna-round and
  halving sweeps of ``configs/sweeps/sweep_digits*.py`` and ``sweep_fashion_mlp.py``). The
  timing fields (``python_loop_runs``, ``timing_repeats``) are read with ``--sequential``; a
  config holds them always, since a switch, not the config, decides.
* :data:`TRIAL_LOOP` — :mod:`experiments.sweeps.trial_loop` (``sweep_fashion_cnn.py``): a
  classification config whose trials ``train.train_and_evaluate`` runs, without ``optimizer``
  and ``tuned_from`` (each trial sets them), with the sweep's ``optimizers`` entries and its
  validation and divergence fields.
* :data:`OPTUNA_COMPARISON` — :mod:`experiments.sweeps.optuna_comparison`.

``data_dir`` and ``verify_checksums`` are read only for the data sets with files, as in the
classification schema. The entries of ``optimizers``, ``space``, ``fixed``, ``halving``,
``pruner``, ``heatmap`` and ``distributed`` are checked by the code that reads them
(:mod:`~experiments.sweeps.search_space`, :mod:`~experiments.sweeps.halving`,
:mod:`experiments.distributed.multihost`). :func:`experiments.common.cli.run_job` refuses a
config with a field more or less before any work, in one ``error:`` line naming the field.
"""

from __future__ import annotations

from experiments.classification import schema as classification_schema
from experiments.common.config_schema import ConfigSchema

# The data set, model and batches of a vmapped trial (program.TrainingSetup, model_spec).
_TRAINING_FIELDS = ("name", "dataset", "model", "model_kwargs", "batch_size", "eval_batch_size",
                    "num_epochs", "lr_schedule")

SWEEP = ConfigSchema(
    job="experiments.sweeps.sweep",
    fields=(
        *_TRAINING_FIELDS, "num_seeds", "seed", "trial_randomness", "validation_fraction",
        "divergence_factor", "chunk_size", "devices", "distributed", "python_loop_runs",
        "timing_repeats", "compilation_cache_dir", "optimizers", "heatmap",
    ),
    conditional=classification_schema.SCHEMA.conditional,
    example="configs/sweeps/sweep_digits.py",
)

# Set per trial by trial_loop, so a sweep config does not hold them.
TRIAL_SET_FIELDS = ("optimizer", "tuned_from")

TRIAL_LOOP = ConfigSchema(
    job="experiments.sweeps.trial_loop",
    fields=(
        *(field for field in classification_schema.SCHEMA.fields
          if field not in TRIAL_SET_FIELDS),
        "validation_fraction", "divergence_factor",
    ),
    conditional=classification_schema.SCHEMA.conditional,
    example="configs/sweeps/sweep_fashion_cnn.py",
)

OPTUNA_COMPARISON = ConfigSchema(
    job="experiments.sweeps.optuna_comparison",
    fields=(
        *_TRAINING_FIELDS, "validation_fraction", "divergence_factor", "seed", "num_trials",
        "grid_side", "space", "fixed", "trials_per_call", "halving", "pruner", "methods",
        "devices",
    ),
    conditional=classification_schema.SCHEMA.conditional,
    example="configs/sweeps/optuna_comparison.py",
)

# The driver module -> the schema of the configs it reads.
SCHEMAS = {
    "experiments.sweeps.sweep": SWEEP,
    "experiments.sweeps.trial_loop": TRIAL_LOOP,
    "experiments.sweeps.optuna_comparison": OPTUNA_COMPARISON,
}
