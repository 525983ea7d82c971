"""The CPU Fashion-MNIST CNN comparison, learning rates from configs/sweeps/sweep_fashion_cnn.py.

configs/classification/fashion_mnist_cnn_cpu.py (half-width 2c2d, 4 epochs, 3 seeds) with
``tuned_from`` set to
the best trials of the CNN sweep (chosen on a validation split, never on the test set)::

  python -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py
  python -m experiments.classification.compare --config
  configs/classification/fashion_mnist_cnn_cpu_tuned.py
"""

import ml_collections

from configs.classification import fashion_mnist_cnn_cpu
from configs.sweeps import sweep_fashion_cnn


def get_config() -> ml_collections.ConfigDict:
  """The tuned CPU CNN comparison."""
  config = fashion_mnist_cnn_cpu.get_config()
  config.name = "fashion_mnist_cnn_cpu_tuned"
  config.tuned_from = f"runs/{sweep_fashion_cnn.get_config().name}/sweep.json"
  return config
