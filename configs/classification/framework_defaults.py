"""Each optimizer's framework default: the hyperparameters most practitioners would try first.

The comparisons start from these (none was tuned on a test set); a config overrides a value
where its model calls for another (cifar10.py), and a sweep result replaces them through
``tuned_from``.
"""

import ml_collections


def optimizers() -> ml_collections.ConfigDict:
  """The four optimizers of a comparison at their customary defaults."""
  return ml_collections.ConfigDict({
      # Plain SGD: 0.1 is the usual starting rate for SGD on normalised inputs (e.g. the
      # Flax MNIST example uses 0.1 with momentum; without momentum 0.1 is the common choice).
      "sgd": {"learning_rate": 0.1},
      # Heavy-ball momentum 0.9 with 0.01 (Sutskever et al., 2013; PyTorch's MNIST and
      # ResNet recipes).
      "momentum": {"learning_rate": 0.01, "momentum": 0.9},
      # Kingma & Ba (2015), Algorithm 1 defaults: lr 1e-3, b1 0.9, b2 0.999, eps 1e-8.
      "adam": {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
      # Hinton's lecture 6e: decay 0.9; lr 1e-3 is Keras's default and TF's tutorials' value.
      "rmsprop": {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8},
  })
