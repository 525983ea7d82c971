"""The Fashion-MNIST MLP comparison with each optimizer's hyperparameters from the sweep.

configs/classification/fashion_mnist_mlp.py with ``tuned_from`` set to the best trials of
configs/sweeps/sweep_fashion_mlp.py (chosen on a validation split, never on the test set). The
comparison trains on all 60,000 training images and reports the 10,000 test images::

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_fashion_mlp.py
  python -m experiments.classification.compare --config
  configs/classification/fashion_mnist_mlp_tuned.py
"""

import ml_collections

from configs.classification import fashion_mnist_mlp
from configs.sweeps import sweep_fashion_mlp


def get_config() -> ml_collections.ConfigDict:
  """The tuned Fashion-MNIST MLP comparison."""
  config = fashion_mnist_mlp.get_config()
  config.name = "fashion_mnist_mlp_tuned"
  config.tuned_from = f"runs/{sweep_fashion_mlp.get_config().name}/sweep.json"
  return config
