"""Fashion-MNIST CNN on a CPU: DeepOBS's 2c2d at half width, 4 epochs, 3 seeds.

The network of DeepOBS's ``fmnist_2c2d`` problem (the Crowded Valley benchmark's
Fashion-MNIST results): conv 5x5 -> ReLU -> max-pool 2x2, twice, then dense -> ReLU ->
dense 10, batch 128, constant learning rates. At DeepOBS's width (32/64 channels, dense 1024)
an epoch took 190 s on the 2 shared cores here, so this config halves the convolutions'
channels (16/32) and uses dense 256 (63 s per epoch measured), and trains 4 epochs: the budget
of about an hour for 4 optimizers x 3 seeds. Framework-default learning rates (as in
configs/classification/fashion_mnist.py); pass --config.tuned_from=<sweep.json> to use tuned ones.
For
DeepOBS's exact network on an accelerator: --config.model_kwargs.channels='(32, 64)'
--config.model_kwargs.hidden_size=1024.

  python -m experiments.classification.compare --config
  configs/classification/fashion_mnist_cnn_cpu.py
"""

import ml_collections

from configs.classification import framework_defaults


def get_config() -> ml_collections.ConfigDict:
  """The CPU-sized Fashion-MNIST CNN comparison."""
  config = ml_collections.ConfigDict()
  config.name = "fashion_mnist_cnn_cpu"  # Outputs go to runs/<name>/.
  config.dataset = "fashion_mnist"
  config.data_dir = ""  # See configs/classification/fashion_mnist_mlp.py.
  config.verify_checksums = True

  config.model = "2c2d"
  config.model_kwargs = ml_collections.ConfigDict({"channels": (16, 32), "hidden_size": 256})

  config.batch_size = 128  # 468 steps per epoch, DeepOBS's batch size.
  config.eval_batch_size = 1000
  config.num_epochs = 4
  config.num_seeds = 3
  config.seed = 0
  config.lr_schedule = "constant"
  config.augment = False
  config.target_accuracy = 0.88
  config.save_checkpoint = False
  # CPU layout (see configs/classification/digits.py): one compiled step per batch, seeds one after
  # another.
  config.epoch_loop = "python"
  config.scan_unroll = 1
  config.vmap_seeds = False

  config.optimizer = "rmsprop"
  config.optimizers = framework_defaults.optimizers()
  config.tuned_from = ""
  return config
