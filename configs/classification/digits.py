"""Digits: the default comparison, small enough for a 2-core CPU in about a minute.

scikit-learn's 8x8 digits (1,437 training and 360 test images after the fixed stratified
split), the small CNN, batch 64 (22 steps per epoch), 3 seeds per optimizer.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The digits comparison."""
  config = ml_collections.ConfigDict()
  config.name = "digits"  # Outputs go to runs/<name>/.
  config.dataset = "digits"
  config.data_dir = ""  # Unused for digits (bundled with scikit-learn).
  config.verify_checksums = True  # Unused for digits: no files to check.

  config.model = "cnn"
  config.model_kwargs = ml_collections.ConfigDict(
      {"channels": (16, 32), "hidden_size": 64, "dropout_rate": 0.2}
  )

  config.batch_size = 64
  config.eval_batch_size = 1000
  config.num_epochs = 20
  config.num_seeds = 3
  config.seed = 0
  config.lr_schedule = "constant"
  config.augment = False
  # Layout for a CPU (see train_and_evaluate): one compiled step per batch called from Python,
  # seeds one after another. XLA:CPU runs convolutions inside a scan's loop body several times
  # slower, and vmapping convolutions over seeds turns them into slower grouped convolutions.
  config.epoch_loop = "python"
  config.scan_unroll = 1  # Used by epoch_loop="scan" only.
  config.vmap_seeds = False
  # Convergence speed: training steps until the test accuracy first reaches this value
  # (checked at every epoch's end). Every optimizer ends near 0.99 here; 0.98 is high enough to
  # separate them and low enough that most seeds reach it within 20 epochs.
  config.target_accuracy = 0.98
  config.save_checkpoint = True

  # The optimizer train.py trains when run alone; compare.py runs every one in `optimizers`.
  config.optimizer = "rmsprop"
  # Per-optimizer hyperparameters. Each optimizer gets its framework's customary default, the
  # value most practitioners would try first; none was tuned on the test set. A sweep result
  # overrides them: set tuned_from to the path of a sweep.json (see
  # experiments/classification/train.py).
  config.optimizers = ml_collections.ConfigDict({
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
  config.tuned_from = ""
  return config
