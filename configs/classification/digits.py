"""Digits: the default comparison, small enough for a 2-core CPU in about a minute.

scikit-learn's 8x8 digits (1,437 training and 360 test images after the fixed stratified
split), the small CNN, batch 64 (22 steps per epoch), 3 seeds per optimizer.
"""

import ml_collections

from configs.classification import framework_defaults


def get_config() -> ml_collections.ConfigDict:
  """The digits comparison."""
  config = ml_collections.ConfigDict()
  config.name = "digits"  # Outputs go to runs/<name>/.
  config.dataset = "digits"
  # No data_dir or verify_checksums: digits ships with scikit-learn (no files to find or check).

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
  # Each optimizer's framework default; tuned_from swaps in a sweep's picks.
  config.optimizers = framework_defaults.optimizers()
  config.tuned_from = ""
  return config
