"""CIFAR-10: the VGG-style CNN with batch norm, augmentation, 30 epochs, 3 seeds per optimizer.

Needs the official python tarball (downloaded on first use, see experiments/classification/data.py).
Laid
out for an accelerator (every seed in one vmapped program, each epoch one lax.scan); a CPU
takes hours for this config.
"""

import ml_collections

from configs.classification import framework_defaults


def get_config() -> ml_collections.ConfigDict:
  """The CIFAR-10 comparison."""
  config = ml_collections.ConfigDict()
  config.name = "cifar10"
  config.dataset = "cifar10"
  # Folder with (or for) the tarball; "" means $RMSPROP_JAX_DATA_DIR or ~/.cache/rmsprop_jax.
  config.data_dir = ""
  # Compare every file with its published MD5 (False only for files you made yourself).
  config.verify_checksums = True

  # Three VGG stages (64, 128, 256 channels) with batch norm and growing dropout, global
  # average pooling (Simonyan & Zisserman, 2015; Ioffe & Szegedy, 2015).
  config.model = "cifar_cnn"
  config.model_kwargs = ml_collections.ConfigDict(
      {"channels": (64, 128, 256), "dropout_rates": (0.1, 0.2, 0.3)}
  )

  config.batch_size = 128  # 390 steps per epoch.
  config.eval_batch_size = 1000
  config.num_epochs = 30  # The budget: >= 80% test accuracy within 30 epochs.
  config.num_seeds = 3
  config.seed = 0
  # Random 4-pixel translations and horizontal flips (He et al., 2016), on the device.
  config.augment = True
  # Linear warm-up over the first 5% of steps, then cosine decay: the warm-up keeps the first
  # steps of the adaptive methods, whose second-moment estimate starts at zero, from overshooting.
  config.lr_schedule = "warmup_cosine"
  config.target_accuracy = 0.80
  config.save_checkpoint = True
  config.epoch_loop = "scan"
  config.scan_unroll = 1
  config.vmap_seeds = True

  config.optimizer = "rmsprop"
  config.optimizers = framework_defaults.optimizers()
  # 0.05 with momentum 0.9 on a batch-normalised CNN: the ResNet recipe's 0.1 (He et al., 2016)
  # halved for the smaller batch and no weight decay.
  config.optimizers.momentum.learning_rate = 0.05
  config.tuned_from = ""
  return config
