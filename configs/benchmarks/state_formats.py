"""State-format study (benchmarks/state_formats.py): tracking of float32 state, and memory.

``get_config()`` is the run of docs/memory.md (about 10 minutes on a loaded 2-core CPU);
``get_config("quick")`` (``--config configs/benchmarks/state_formats.py:quick``) is the
seconds-long configuration the tests use.
"""

import ml_collections

# The formats the study measures (names of benchmarks.state_formats.FORMATS).
ALL_FORMATS = (
    "float32", "bfloat16 nearest", "bfloat16 stochastic", "int8 nearest", "int8 stochastic",
    "factored", "bitsandbytes_int8",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the study's configuration; ``arg="quick"`` shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.name = "state_formats"
  config.parts = ("tracking", "memory")
  config.formats = ALL_FORMATS
  # Tracking: a (rows, columns) stream g_t = s * (1 + noise * z_t), z_t standard normal. "iid":
  # s log-uniform per entry over scale_decades; "rank1": s = r_i c_j, r and c log-uniform over
  # half the decades each (the structure a factored second moment can represent).
  config.shape = (512, 256)  # 131,072 entries
  config.scale_decades = 2.0
  config.noise = 0.1
  config.num_steps = 4000
  config.decays = (0.9, 0.99, 0.999)
  config.eps = 1e-8
  config.streams = ("iid", "rank1")
  # The live references on the same stream: bitsandbytes.optim.RMSprop8bit and, as the
  # harness's control, torch.optim.RMSprop (float32); skipped when not installed.
  config.include_torch = True
  # Memory: bytes per parameter of the state and the compiled train step's memory. "cnn_2c2d":
  # DeepOBS's 2c2d on 28x28x1 (batch cnn_batch_size, the experiments' train step);
  # "transformer": a GPT-2-shaped tree (quadratic loss), compiled without running;
  # "transformer_update": the optimizer's step alone on that tree, gradients an argument.
  config.memory_programs = ("cnn_2c2d", "transformer", "transformer_update")
  config.cnn_batch_size = 128
  config.transformer = ml_collections.ConfigDict(
      {"layers": 12, "width": 768, "mlp": 3072, "vocab": 32768, "positions": 1024})
  config.seed = 0
  if arg == "quick":
    config.name = "state_formats_quick"
    config.shape = (16, 512)
    config.num_steps = 60
    config.decays = (0.9, 0.999)
    config.streams = ("iid",)
    config.formats = ("float32", "bfloat16 stochastic", "int8 stochastic", "bitsandbytes_int8")
    config.memory_programs = ("transformer", "transformer_update")
    config.transformer = ml_collections.ConfigDict(
        {"layers": 1, "width": 64, "mlp": 256, "vocab": 512, "positions": 64})
  elif arg:
    raise ValueError(f"get_config's arg must be None or 'quick', got {arg!r}.")
  return config
