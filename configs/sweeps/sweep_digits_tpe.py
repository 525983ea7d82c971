"""Model-based search on digits: Optuna's TPE asks 16 RMSprop trials per vmapped call, 4 rounds.

The space is the random search's for RMSprop's learning rate and decay
(``configs/sweeps/sweep_digits_random.py``: ``(distribution, low, high)``); each round asks TPE
for ``trials_per_round`` trials, trains them in the one compiled program (the hyperparameters
are its arguments: no recompilation between rounds) and tells TPE their validation accuracy.
Replace ``"tpe"`` by ``"qmc"`` for scrambled Sobol points instead. Same model, data and training
length as ``configs/sweeps/sweep_digits.py``.

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits_tpe.py
"""

import ml_collections

from configs.sweeps import sweep_digits


def get_config() -> ml_collections.ConfigDict:
  """The digits TPE search."""
  config = sweep_digits.get_config()
  config.name = "sweep_digits_tpe"
  config.optimizers = ml_collections.ConfigDict({
      "rmsprop": {
          "fixed": {"eps": 1e-8},
          "num_trials": 64,
          "trials_per_round": 16,
          "tpe": {
              "learning_rate": ("log_uniform", 1e-5, 0.3),
              "decay": ("uniform", 0.5, 0.999),
          },
      },
  })
  return config
