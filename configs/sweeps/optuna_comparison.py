"""Sweeps side by side with Optuna alone: one RMSprop search space, one validation split, five ways.

(a) Optuna's TPE one trial after another with its median pruner (each trial one compiled epoch
per call, the hyperparameters as arguments), (b) the vmapped grid, (c) vmapped random trials,
(d) TPE asking a round of trials per vmapped call, (e) successive halving of the grid inside the
vmapped program. The space is RMSprop's learning rate (log-uniform) x decay (uniform) over the
ranges of ``configs/sweeps/sweep_digits_random.py``; the grid covers it with ``grid_side`` x
``grid_side`` points (log-spaced learning rates, evenly spaced decays).

Variants: ``digits`` (the digits MLP of ``configs/sweeps/sweep_digits.py``, 64 trials of 20
epochs), ``fashion_mlp`` (the Fashion-MNIST MLP of ``configs/sweeps/sweep_fashion_mlp.py``, 16
trials of 4 epochs: what fits beside the other CPU work here) and ``quick`` (a check that every
method runs: 4 trials of 2 epochs on digits).

  python -m experiments.sweeps.optuna_comparison --config configs/sweeps/optuna_comparison.py:digits
"""

import ml_collections

from configs.sweeps import sweep_digits, sweep_fashion_mlp

VARIANTS = ("digits", "fashion_mlp", "quick")


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
  """The comparison on one data set (``variant``: one of :data:`VARIANTS`)."""
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}.")
  base = sweep_fashion_mlp.get_config() if variant == "fashion_mlp" else sweep_digits.get_config()
  config = ml_collections.ConfigDict()
  config.name = f"optuna_comparison_{variant}"  # Outputs go to runs/<name>/.
  for field in ("dataset", "data_dir", "verify_checksums", "model", "batch_size",
                "eval_batch_size", "lr_schedule", "validation_fraction", "divergence_factor",
                "seed"):
    if field in base:  # data_dir and verify_checksums: only the data sets with files have them
      config[field] = base[field]
  config.model_kwargs = ml_collections.ConfigDict(base.model_kwargs.to_dict())
  config.num_epochs = {"digits": 20, "fashion_mlp": 4, "quick": 2}[variant]
  config.num_trials = {"digits": 64, "fashion_mlp": 16, "quick": 4}[variant]
  config.grid_side = {"digits": 8, "fashion_mlp": 4, "quick": 2}[variant]  # grid_side**2 trials
  # The space of every method: as the random config's RMSprop learning rate and decay.
  config.space = ml_collections.ConfigDict({
      "learning_rate": ("log_uniform", 1e-5, 0.3),
      "decay": ("uniform", 0.5, 0.999),
  })
  config.fixed = ml_collections.ConfigDict({"eps": 1e-8})
  # Trials per compiled call of (b) and (c), and per asked round of (d): a quarter of the trials.
  config.trials_per_call = config.num_trials // 4 if variant != "quick" else 2
  # (e): keep the best 1/eta every rung_epochs epochs.
  config.halving = ml_collections.ConfigDict(
      {"eta": 2, "rung_epochs": {"digits": 4, "fashion_mlp": 1, "quick": 1}[variant]}
  )
  # (a): Optuna's MedianPruner, checked after every epoch on the validation accuracy.
  config.pruner = ml_collections.ConfigDict({"n_startup_trials": 5, "n_warmup_steps": 1})
  config.methods = ("optuna_tpe", "grid", "random", "tpe_batches", "halving")
  config.devices = 0  # every device
  return config
