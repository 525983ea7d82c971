"""Fashion-MNIST: the small CNN for 28x28x1 images, 15 epochs, 3 seeds per optimizer.

Needs the four official IDX files: Debian's dataset-fashion-mnist package, files in data_dir, or
downloaded on first use (see experiments/classification/data.py). Laid out for an accelerator: every
seed in
one vmapped program and each epoch one lax.scan. On a CPU pass --config.vmap_seeds=False
--config.epoch_loop=python (see configs/classification/digits.py), or use the CPU-sized
configs/classification/fashion_mnist_mlp.py and configs/classification/fashion_mnist_cnn_cpu.py.
"""

import ml_collections

from configs.classification import framework_defaults


def get_config() -> ml_collections.ConfigDict:
  """The Fashion-MNIST comparison."""
  config = ml_collections.ConfigDict()
  config.name = "fashion_mnist"
  config.dataset = "fashion_mnist"
  # Folder with (or for) the IDX files; "" means $RMSPROP_JAX_DATA_DIR or ~/.cache/rmsprop_jax,
  # then Debian's /usr/share/datasets/fashion-mnist/.
  config.data_dir = ""
  # Check the MD5 of every file's decompressed content (False only for files you made yourself).
  config.verify_checksums = True

  # Two stages of two 3x3 conv + batch norm (28 -> 14 -> 7), dense 256, dropout 0.25: the
  # usual size of a Fashion-MNIST CNN that reaches 91-93% (Xiao et al., 2017, benchmark table).
  config.model = "cnn"
  config.model_kwargs = ml_collections.ConfigDict(
      {"channels": (32, 64), "hidden_size": 256, "dropout_rate": 0.25}
  )

  config.batch_size = 128  # 468 steps per epoch.
  config.eval_batch_size = 1000
  config.num_epochs = 15  # The budget: >= 91% test accuracy within 15 epochs.
  config.num_seeds = 3
  config.seed = 0
  # Cosine decay to 0 over the run (Loshchilov & Hutter, 2017): the same shape for every
  # optimizer, so only the preconditioning differs.
  config.lr_schedule = "cosine"
  config.augment = False
  config.target_accuracy = 0.90
  config.save_checkpoint = True
  config.epoch_loop = "scan"
  config.scan_unroll = 1
  config.vmap_seeds = True

  config.optimizer = "rmsprop"
  config.optimizers = framework_defaults.optimizers()
  config.tuned_from = ""
  return config
