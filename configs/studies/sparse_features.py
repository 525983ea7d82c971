"""Sparse-gradient study (experiments/studies/sparse_features.py).

``get_config()`` is the default run; ``get_config("quick")``
(``--config configs/studies/sparse_features.py:quick``) is the seconds-long configuration the tests
use.
"""

import ml_collections


def optimizer_configs(quick: bool = False) -> ml_collections.ConfigDict:
  """SGD, momentum, Adam and RMSprop variants; learning rates from the pilot in docs/studies.md."""
  optimizers = ml_collections.ConfigDict()
  # Learning rates: the grid value with the highest test accuracy after 1000 steps in a one-seed
  # pilot (seed 100, not one of the study's seeds); docs/studies.md lists the pilot's numbers.
  # SGD, grid {1, 3, 10, 30} (30 diverged): a row's gradient is divided by the bag size and the
  # batch, so plain SGD needs large steps.
  optimizers.sgd = {"kind": "sgd", "learning_rate": 3.0}
  # Momentum 0.9, grid {0.3, 1, 3}.
  optimizers.momentum = {"kind": "momentum", "learning_rate": 3.0, "momentum": 0.9}
  # Adam with Kingma & Ba's (2015) moments, grid {3e-3, 1e-2, 3e-2}.
  optimizers.adam = {"kind": "adam", "learning_rate": 1e-2, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
  # RMSprop with Hinton's decay 0.9, grid {1e-3, 3e-3, 1e-2, 3e-2, 1e-1}.
  optimizers.rmsprop = {"kind": "rmsprop", "learning_rate": 3e-2, "decay": 0.9, "eps": 1e-8}
  if quick:
    return optimizers
  # The same learning rate with longer averaging horizons: how decay treats rarely updated rows.
  optimizers.rmsprop_099 = dict(optimizers.rmsprop.to_dict(), decay=0.99)
  optimizers.rmsprop_0999 = dict(optimizers.rmsprop.to_dict(), decay=0.999)
  # Centered RMSprop (Graves, 2013) at decay 0.9, to compare with "rmsprop".
  optimizers.rmsprop_centered = dict(optimizers.rmsprop.to_dict(), centered=True)
  # Bias correction matters most for a long horizon, so it is compared at decay 0.999 (with
  # "rmsprop_0999"). It divides by 1 - decay^t with t the *global* step, not the row's visits.
  optimizers.rmsprop_0999_debiased = dict(optimizers.rmsprop_0999.to_dict(),
                                          bias_correction=True)
  return optimizers


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the study's configuration; ``arg="quick"`` shrinks it for tests."""
  if arg not in (None, "", "quick"):
    raise ValueError(f"get_config's arg must be None or 'quick', got {arg!r}.")
  config = ml_collections.ConfigDict()
  config.name = "sparse_features"
  config.num_features = 20_000
  config.zipf_exponent = 1.1
  config.bag_size = 8
  config.embedding_dim = 16
  # Ids [0, 100) are the head, [100, 2000) the torso, [2000, 20000) the tail.
  config.bucket_edges = (100, 2000)
  config.batch_size = 64
  config.num_steps = 3000
  config.eval_every = 100
  config.eval_size = 4096
  config.eval_seed = 12345
  config.num_seeds = 3
  config.seed = 0
  # Rare-row measurement: gradient every G steps, steady state over num_periods * max(G) steps.
  config.movement_gaps = (1, 3, 10, 30, 100, 300, 1000)
  config.movement_periods = 5
  config.optimizers = optimizer_configs()
  if arg == "quick":
    config.name = "sparse_features_quick"
    config.num_features = 500
    config.bucket_edges = (10, 100)
    config.batch_size = 16
    config.num_steps = 20
    config.eval_every = 10
    config.eval_size = 128
    config.num_seeds = 2
    config.movement_gaps = (1, 10)
    config.movement_periods = 3
    config.optimizers = optimizer_configs(quick=True)
  return config
