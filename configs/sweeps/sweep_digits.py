"""Grid sweep on digits: RMSprop's learning rate x decay, and the learning rates of the baselines.

The digits MLP (one hidden layer of 64 units, dropout 0.1) trained for 20 epochs of batch 64
(17 steps per epoch on the 1,149 training images left after holding out 288 for validation).
RMSprop sweeps 8 learning rates x 8 decays = 64 trials (x 2 seeds), the target size of the
speed measurement; SGD, SGD with momentum and Adam sweep 10 learning rates each over the same
half-decade grid, so every optimizer gets the same tuning effort on the learning rate. The best
trial of each optimizer (by validation accuracy) is what ``configs/classification/digits_tuned.py``
trains.

  python -m experiments.sweeps.sweep --config configs/sweeps/sweep_digits.py [--sequential]
"""

import ml_collections
import numpy as np


def _half_decades(low_exponent: float, high_exponent: float) -> list[float]:
  """10**e for e from low to high in steps of 0.5, rounded to 4 significant digits."""
  exponents = np.arange(low_exponent, high_exponent + 0.25, 0.5)
  return [float(f"{10.0 ** e:.4g}") for e in exponents]


def get_config() -> ml_collections.ConfigDict:
  """The digits grid sweep."""
  config = ml_collections.ConfigDict()
  config.name = "sweep_digits"  # Outputs go to runs/<name>/.
  config.dataset = "digits"
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict({"hidden_sizes": (64,), "dropout_rate": 0.1})
  config.batch_size = 64
  config.eval_batch_size = 1000
  config.num_epochs = 20
  config.lr_schedule = "constant"
  # Two seeds per trial: the choice of the best trial averages out some seed noise.
  config.num_seeds = 2
  config.seed = 0
  # "shared": the trials of a seed share its initial weights, batches and dropout masks (paired
  # comparison; one batch gather and one input layer product for all trials). "per_trial":
  # every run draws its own, as independent jobs would (slower: see docs/sweeps.md).
  config.trial_randomness = "shared"
  # Share of the training set held out to choose the best trial; the test set is never used
  # for the choice.
  config.validation_fraction = 0.2
  # A run diverged when a loss is NaN/inf or its final training loss exceeds this many times
  # ln(num_classes), the loss of a uniform prediction.
  config.divergence_factor = 10.0
  # Trials per compiled vmapped call; memory grows linearly with it. The last chunk is padded.
  config.chunk_size = 64
  # Devices the trial axis is sharded over: 0 = every device (of every process); each trains
  # its share of a chunk, rounded up to a multiple of the devices.
  config.devices = 0
  # Multi-process runs (jax.distributed; fields as the distributed job's, docs/distributed.md);
  # empty: one process, unless the JAX_COORDINATOR_ADDRESS/... environment says otherwise.
  config.distributed = ml_collections.ConfigDict({})
  # With --sequential: runs per optimizer timed with the Python loop (then extrapolated).
  config.python_loop_runs = 2
  # With --sequential: the vmapped and sequential sweeps are each run (and timed) this many
  # times; the minimum is reported, since other work on the machine only ever adds time.
  config.timing_repeats = 3
  # Folder for JAX's persistent compilation cache ("" = off). Compiling dominates a small
  # sweep's wall time; with a cache, repeating a sweep with other values skips it.
  config.compilation_cache_dir = ""

  learning_rates = _half_decades(-4.0, 0.5)  # 1e-4 ... 3.162
  config.optimizers = ml_collections.ConfigDict({
      "sgd": {"grid": {"learning_rate": learning_rates}},
      "momentum": {"fixed": {"momentum": 0.9, "nesterov": False},
                   "grid": {"learning_rate": learning_rates}},
      "adam": {"fixed": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
               "grid": {"learning_rate": learning_rates}},
      "rmsprop": {
          "fixed": {"eps": 1e-8},
          "grid": {
              "learning_rate": _half_decades(-4.0, -0.5),  # 1e-4 ... 0.3162: 8 values
              "decay": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999],
          },
      },
  })
  # Heatmap of test accuracy: optimizer and the two swept hyperparameters on its axes.
  config.heatmap = ml_collections.ConfigDict(
      {"optimizer": "rmsprop", "x": "learning_rate", "y": "decay"}
  )
  return config
