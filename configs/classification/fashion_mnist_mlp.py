"""Fashion-MNIST on a CPU: an MLP of 256-256, 15 epochs, 3 seeds, the four optimizers.

The real data (60,000 training and 10,000 test images, from Debian's ``dataset-fashion-mnist``
or the official downloads, see experiments/classification/data.py) with a model small enough that
the whole
comparison runs in minutes on two CPU cores. Each optimizer gets its framework's customary
default here (sources in configs/classification/digits.py);
configs/classification/fashion_mnist_mlp_tuned.py trains the
same comparison with learning rates tuned by configs/sweeps/sweep_fashion_mlp.py.

  python -m experiments.classification.compare --config configs/classification/fashion_mnist_mlp.py
"""

import ml_collections

from configs.classification import framework_defaults


def get_config() -> ml_collections.ConfigDict:
  """The CPU-sized Fashion-MNIST MLP comparison."""
  config = ml_collections.ConfigDict()
  config.name = "fashion_mnist_mlp"  # Outputs go to runs/<name>/.
  config.dataset = "fashion_mnist"
  # Folder with the IDX files; "" means $RMSPROP_JAX_DATA_DIR or ~/.cache/rmsprop_jax, then
  # Debian's /usr/share/datasets/fashion-mnist/.
  config.data_dir = ""
  config.verify_checksums = True  # MD5 of each file's decompressed content.

  # flatten(784) -> 256 -> 256 -> 10, ReLU, dropout 0.1 after each hidden layer.
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict(
      {"hidden_sizes": (256, 256), "dropout_rate": 0.1}
  )

  config.batch_size = 128  # 468 steps per epoch.
  config.eval_batch_size = 2000
  config.num_epochs = 15
  config.num_seeds = 3
  config.seed = 0
  # Constant learning rates, as in the Crowded Valley benchmark's protocol.
  config.lr_schedule = "constant"
  config.augment = False
  # Convergence speed: steps until the test accuracy (checked at each epoch's end) first
  # reaches this; every optimizer passes it within a few epochs.
  config.target_accuracy = 0.86
  config.save_checkpoint = False
  # An MLP has no convolutions: one lax.scan per epoch and the seeds vmapped is the fast
  # layout on a CPU too.
  config.epoch_loop = "scan"
  config.scan_unroll = 1
  config.vmap_seeds = True

  config.optimizer = "rmsprop"
  config.optimizers = framework_defaults.optimizers()
  config.tuned_from = ""
  return config
