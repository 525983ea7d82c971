"""Non-stationary regression study (experiments/studies/nonstationary.py).

``get_config()`` is the default run; ``get_config("quick")``
(``--config configs/nonstationary.py:quick``) is the seconds-long configuration the tests use.
"""

import ml_collections


def optimizer_configs() -> ml_collections.ConfigDict:
  """One entry per optimizer; learning rates from the pilot sweep described in docs/studies.md."""
  optimizers = ml_collections.ConfigDict()
  # SGD and momentum: the largest rates of the pilot grid ({1e-3, 3e-3, 1e-2, 3e-2}) that did
  # not diverge on any seed; the inputs span two decades of scale, so one global step size
  # must suit the largest coordinate.
  optimizers.sgd = {"kind": "sgd", "learning_rate": 3e-3}
  optimizers.momentum = {"kind": "momentum", "learning_rate": 3e-4, "momentum": 0.9}
  # Adam with its default moments (Kingma & Ba, 2015); learning rate from the pilot
  # ({1e-3, 3e-3, 1e-2}).
  optimizers.adam = {"kind": "adam", "learning_rate": 3e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
  # RMSprop: one learning rate (the pilot's best for decay 0.9) for all three decays, so that
  # only the averaging horizon 1/(1 - decay) changes: 10, 100 and 1000 steps. Names carry the
  # decay without its dot (ConfigDict keys cannot contain dots).
  for name, decay in (("rmsprop_090", 0.9), ("rmsprop_099", 0.99), ("rmsprop_0999", 0.999)):
    optimizers[name] = {"kind": "rmsprop", "learning_rate": 1e-3, "decay": decay, "eps": 1e-8}
  return optimizers


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the study's configuration; ``arg="quick"`` shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.name = "nonstationary"
  config.input_dim = 10
  config.input_scale_range = 10.0  # input standard deviations span [0.1, 10]
  config.teacher_hidden_size = 8
  config.student_hidden_size = 32
  config.output_scale_range = 4.0  # teacher output scale log-uniform in [1/4, 4] per segment
  config.noise_std = 0.1
  config.drift = 0.01  # per-step AR(1) drift of the teacher weights between jumps
  config.segment_length = 500  # K: steps between jumps
  config.num_segments = 10
  config.batch_size = 8
  config.window = 50  # steps averaged for post-change / settled error and recovery
  config.recovery_threshold = 0.2  # normalized error regarded as "tracking again"
  config.num_seeds = 5
  config.seed = 0
  config.optimizers = optimizer_configs()
  if arg == "quick":
    config.name = "nonstationary_quick"
    config.segment_length = 20
    config.num_segments = 3
    config.window = 5
    config.num_seeds = 2
    # One optimizer of each kind keeps the test to four compilations.
    del config.optimizers["rmsprop_099"]
    del config.optimizers["rmsprop_0999"]
  elif arg:
    raise ValueError(f"get_config's arg must be None or 'quick', got {arg!r}.")
  return config
