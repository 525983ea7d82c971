"""Update-step benchmark (benchmarks/update_step.py).

``get_config()`` is the default run (about 5-10 minutes on a 2-core CPU);
``get_config("quick")`` (``--config configs/benchmarks/benchmark.py:quick``) is the
seconds-long configuration the tests use; ``get_config("formats")`` times the state formats
against float32 state on the 16.8M-parameter leaf alone (docs/memory.md).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the benchmark's configuration; ``arg="quick"`` shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.name = "benchmark"
  # Parameter counts per tree shape. "one_leaf" is a single flat float32 vector; "resnet50" is
  # the 161 leaves of ResNet-50 (convolutions, batch-norm scales and biases, classifier) with
  # every channel width scaled so that the total matches the count.
  config.sizes = {
      "one_leaf": (1 << 20, 1 << 22, 1 << 24, 1 << 26),
      "resnet50": (1 << 20, 1 << 22, 1 << 24, 1 << 26),
  }
  # Hyperparameters shared by every implementation (PyTorch's eps-outside convention).
  config.learning_rate = 1e-3
  config.decay = 0.9
  config.eps = 1e-8
  config.momentum = 0.9
  # Paired rounds: every implementation runs once per round, in a rotating order. A case stops
  # after max_rounds or once min_rounds are done and time_budget_s has passed.
  config.warmup_steps = 2
  config.min_rounds = 9
  config.max_rounds = 200
  config.time_budget_s = 10.0
  config.include_torch = True
  # Compile time of a full train step (trace + lower, then XLA compile), repeated.
  # Programs: "cnn_digits" (Flax NNX SmallCNN) and "resnet50_tree" (161 leaves, quadratic loss).
  config.compile_programs = ("cnn_digits", "resnet50_tree")
  config.compile_size = 1 << 20
  config.compile_repeats = 2
  # The implementations whose compile time is measured (names of the cases' columns); empty:
  # every one.
  config.compile_optimizers = ()
  # The sweeps issue's timings: what `make sweep` (experiments/sweeps/sweep.py) writes.
  config.sweep_path = "runs/sweep_digits/sweep.json"
  # State formats of rmsprop_jax.formats, each paired with float32 state (names of
  # benchmarks.update_step.STATE_FORMATS); none in :quick, which the tests run.
  config.state_formats = ("bfloat16 stochastic", "int8 stochastic", "int8 nearest", "factored",
                          "bitsandbytes_int8")
  config.seed = 0
  if arg == "quick":
    config.name = "benchmark_quick"
    # One small case: a 161-leaf case costs ~30 s of compilation; the compile-time program
    # below still exercises the ResNet-50-shaped tree.
    config.sizes = {"one_leaf": (1 << 12,)}
    config.warmup_steps = 1
    config.min_rounds = 3
    config.max_rounds = 3
    config.time_budget_s = 0.0
    config.compile_programs = ("resnet50_tree",)
    config.compile_size = 1 << 12
    config.compile_repeats = 1
    # Ours and the reference: each compilation of the 161-leaf step takes about 2 s here.
    config.compile_optimizers = ("rmsprop_jax", "optax.rmsprop")
    config.state_formats = ()
  elif arg == "formats":
    # docs/memory.md's speed table: the formats against float32 state on the 16.8M leaf only.
    config.name = "benchmark_formats"
    config.sizes = {"one_leaf": (1 << 24,)}
    config.include_torch = False
    config.compile_programs = ()
  elif arg:
    raise ValueError(f"get_config's arg must be None, 'quick' or 'formats', got {arg!r}.")
  return config
