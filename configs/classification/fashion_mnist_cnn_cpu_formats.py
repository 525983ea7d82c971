"""RMSprop's state formats on real Fashion-MNIST with the half-width 2c2d CNN, 3 seeds.

The network, data, batch, 4 epochs and seeds of configs/classification/fashion_mnist_cnn_cpu.py,
and RMSprop at its framework default there (lr 1e-3, decay 0.9, eps 1e-8); only the state
format of ``nu`` changes, as in configs/classification/fashion_mnist_mlp_formats.py (the same
formats, and the same optional subset). Results: docs/memory/fashion_formats.md.

  python -m experiments.classification.compare --config \\
    configs/classification/fashion_mnist_cnn_cpu_formats.py:float32,int8
"""

import ml_collections

from configs.classification import fashion_mnist_cnn_cpu, fashion_mnist_mlp_formats

VARIANTS = ("float32,int8",)  # the run of docs/memory/fashion_formats.md


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The half-width Fashion-MNIST CNN with RMSprop in each state format."""
  config = fashion_mnist_cnn_cpu.get_config()
  config.name = "fashion_mnist_cnn_cpu_formats"
  return fashion_mnist_mlp_formats.with_formats(config, arg)
