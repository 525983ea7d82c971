"""Grid sweep for the Fashion-MNIST MLP: each optimizer's learning rate, RMSprop's also x decay.

The model and batch of configs/classification/fashion_mnist_mlp.py, trained for 10 epochs on 54,000
training
images, the best trial of each optimizer chosen by accuracy on the 6,000 held-out validation
images (a stratified 10% of the training set; the test set plays no part in the choice).
Half-decade learning-rate grids around each optimizer's usual range; RMSprop also sweeps its
decay. configs/classification/fashion_mnist_mlp_tuned.py trains the tuned comparison.

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_fashion_mlp.py
"""

import ml_collections

from configs.classification import fashion_mnist_mlp
from configs.sweeps import sweep_digits


def get_config() -> ml_collections.ConfigDict:
  """The Fashion-MNIST MLP grid sweep."""
  base = fashion_mnist_mlp.get_config()
  config = ml_collections.ConfigDict()
  config.name = "sweep_fashion_mlp"  # Outputs go to runs/<name>/.
  config.dataset = base.dataset
  config.data_dir = base.data_dir
  config.verify_checksums = base.verify_checksums
  config.model = base.model
  config.model_kwargs = ml_collections.ConfigDict(base.model_kwargs.to_dict())
  config.batch_size = base.batch_size
  config.eval_batch_size = base.eval_batch_size
  # Shorter than the comparison's 15 epochs, to fit the CPU budget.
  config.num_epochs = 10
  config.lr_schedule = base.lr_schedule
  config.num_seeds = 1
  config.seed = 0
  config.trial_randomness = "shared"
  config.validation_fraction = 0.1
  config.divergence_factor = 10.0
  config.chunk_size = 6  # 6, 6, 6 and 18 trials: little padding.
  config.devices = 0  # every device
  config.distributed = ml_collections.ConfigDict({})
  config.python_loop_runs = 1
  config.timing_repeats = 1
  config.compilation_cache_dir = ""

  half_decades = sweep_digits._half_decades  # pylint: disable=protected-access
  config.optimizers = ml_collections.ConfigDict({
      "sgd": {"grid": {"learning_rate": half_decades(-2.0, 0.0)}},  # 0.01 ... 1
      "momentum": {"fixed": {"momentum": 0.9, "nesterov": False},
                   "grid": {"learning_rate": half_decades(-3.0, -0.5)}},  # 1e-3 ... 0.316
      "adam": {"fixed": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
               "grid": {"learning_rate": half_decades(-4.5, -2.0)}},  # 3.2e-5 ... 1e-2
      "rmsprop": {
          "fixed": {"eps": 1e-8},
          "grid": {
              "learning_rate": half_decades(-4.5, -2.5),  # 3.2e-5 ... 3.2e-3
              "decay": [0.9, 0.99, 0.999],
          },
      },
  })
  config.heatmap = ml_collections.ConfigDict(
      {"optimizer": "rmsprop", "x": "learning_rate", "y": "decay"}
  )
  return config
