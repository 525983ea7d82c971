"""Digits comparison of the four optimizers, each with its learning rate tuned by a sweep.

The model, data and training length of ``configs/sweeps/sweep_digits.py`` (the digits MLP, 20 epochs
of batch 64), three seeds per optimizer, and each optimizer's hyperparameters taken from the
best trial of that sweep (``best`` in ``runs/sweep_digits/sweep.json``, chosen on a validation
split, never on the test set). Run the sweep first::

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py
  python -m experiments.classification.compare --config configs/classification/digits_tuned.py

The comparison trains on the whole training set (1,437 images; the sweep trained on 1,149 and
validated on 288) and reports the test set. For the same comparison with every optimizer's
customary default, clear ``tuned_from``::

  python -m experiments.classification.compare --config configs/classification/digits_tuned.py
  --config.tuned_from= \\
      --config.name=digits_mlp_defaults
"""

import ml_collections

from configs.classification import digits
from configs.sweeps import sweep_digits


def get_config() -> ml_collections.ConfigDict:
  """The tuned digits comparison."""
  config = digits.get_config()
  sweep = sweep_digits.get_config()
  config.name = "digits_tuned"
  config.model = sweep.model
  config.model_kwargs = ml_collections.ConfigDict(sweep.model_kwargs.to_dict())
  config.batch_size = sweep.batch_size
  config.num_epochs = sweep.num_epochs
  config.lr_schedule = sweep.lr_schedule
  # An MLP has no convolutions: one scan per epoch and the seeds vmapped is the fast layout.
  config.epoch_loop = "scan"
  config.vmap_seeds = True
  config.save_checkpoint = False
  config.tuned_from = f"runs/{sweep.name}/sweep.json"
  return config
