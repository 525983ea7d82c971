"""Random search on digits: RMSprop's learning rate, eps, decay and momentum.

Bergstra & Bengio (2012): with a fixed budget, random trials cover each important
hyperparameter with as many distinct values as there are trials, where a grid covers it with
only its side length. RMSprop draws 64 trials: learning rate and eps log-uniform, decay uniform
and momentum uniform (remove the ``momentum`` entry to train without a momentum buffer). The
baselines draw 16 learning rates each, log-uniform over the same range as the grid sweep. Same
model, data and training length as ``configs/sweeps/sweep_digits.py``.

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits_random.py
"""

import ml_collections

from configs.sweeps import sweep_digits


def get_config() -> ml_collections.ConfigDict:
  """The digits random search."""
  config = sweep_digits.get_config()
  config.name = "sweep_digits_random"
  learning_rate = ("log_uniform", 1e-4, 3.0)
  config.optimizers = ml_collections.ConfigDict({
      "sgd": {"num_trials": 16, "random": {"learning_rate": learning_rate}},
      "momentum": {"num_trials": 16, "fixed": {"momentum": 0.9},
                   "random": {"learning_rate": learning_rate}},
      "adam": {"num_trials": 16, "random": {"learning_rate": learning_rate}},
      "rmsprop": {
          "num_trials": 64,
          "random": {
              "learning_rate": ("log_uniform", 1e-5, 0.3),
              "eps": ("log_uniform", 1e-10, 1e-2),
              "decay": ("uniform", 0.5, 0.999),
              "momentum": ("uniform", 0.0, 0.95),
          },
      },
  })
  config.heatmap = ml_collections.ConfigDict(
      {"optimizer": "rmsprop", "x": "learning_rate", "y": "decay"}
  )
  return config
