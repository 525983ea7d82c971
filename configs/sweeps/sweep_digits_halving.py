"""Successive halving on digits: the 64-trial RMSprop grid, the best half kept every 4 epochs.

The grid of ``configs/sweeps/sweep_digits.py`` (8 learning rates x 8 decays, 20 epochs, 2
seeds). After epochs 4, 8, 12 and 16 the trials are ranked by validation accuracy and the best
``1/eta`` continue from their exact state in a narrower compiled call: 64, 32, 16, 8 and 4
trials, 496 trial-epochs instead of the grid's 1,280.

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits_halving.py
"""

import ml_collections

from configs.sweeps import sweep_digits


def get_config() -> ml_collections.ConfigDict:
  """The digits halving sweep."""
  config = sweep_digits.get_config()
  config.name = "sweep_digits_halving"
  rmsprop = sweep_digits.get_config().optimizers.rmsprop.to_dict()
  rmsprop["halving"] = {"eta": 2, "rung_epochs": 4}
  config.optimizers = ml_collections.ConfigDict({"rmsprop": rmsprop})
  return config
