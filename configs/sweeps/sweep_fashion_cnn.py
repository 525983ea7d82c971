"""Learning-rate sweep for the CPU Fashion-MNIST CNN (half-width 2c2d), on a validation split.

configs/classification/fashion_mnist_cnn_cpu.py's model, batch and CPU layout, trained for 1 epoch
(421 steps,
one seed) on 54,000 training images per trial and scored on the 6,000 held-out ones (a
stratified 10% of the training set, the split of configs/sweeps/sweep_fashion_mlp.py). Three
half-decade learning rates per optimizer around its framework default; RMSprop also 2 decays: 15
trials, one after another (experiments/sweeps/trial_loop.py: convolutions run slowly inside
XLA:CPU's
vmapped scans). configs/classification/fashion_mnist_cnn_cpu_tuned.py trains the comparison with the
best
trials.

  python -m experiments.sweeps.trial_loop --config configs/sweeps/sweep_fashion_cnn.py
"""

import ml_collections

from configs.classification import fashion_mnist_cnn_cpu


def get_config() -> ml_collections.ConfigDict:
  """The CNN sweep."""
  config = fashion_mnist_cnn_cpu.get_config()
  config.name = "sweep_fashion_cnn"  # Outputs go to runs/<name>/.
  # One epoch: what fits the CPU budget beside the comparisons (about 45 s per trial here). It
  # favours fast starters, i.e. larger learning rates, over a 4-epoch comparison's optimum.
  config.num_epochs = 1
  config.num_seeds = 1
  config.seed = 0
  # Each trial sets its optimizer (and no tuned_from): the comparison's fields are not read.
  del config["optimizer"], config["tuned_from"]
  config.validation_fraction = 0.1
  # A run diverged when its loss is not finite or its final training loss exceeds this many
  # times ln(num_classes).
  config.divergence_factor = 10.0
  config.optimizers = ml_collections.ConfigDict({
      "sgd": {"grid": {"learning_rate": [0.03162, 0.1, 0.3162]}},
      "momentum": {"fixed": {"momentum": 0.9, "nesterov": False},
                   "grid": {"learning_rate": [0.003162, 0.01, 0.03162]}},
      "adam": {"fixed": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
               "grid": {"learning_rate": [0.0003162, 0.001, 0.003162]}},
      "rmsprop": {"fixed": {"eps": 1e-8},
                  "grid": {"learning_rate": [0.0001, 0.0003162, 0.001],
                           "decay": [0.9, 0.99]}},
  })
  return config
