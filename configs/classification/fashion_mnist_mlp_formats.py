"""RMSprop's state formats on real Fashion-MNIST: the MLP of fashion_mnist_mlp.py, 3 seeds.

Same data, model (256-256 MLP, dropout 0.1), batch, 15 epochs, constant schedule and seeds as
configs/classification/fashion_mnist_mlp.py, and RMSprop at its framework default there (lr
1e-3, decay 0.9, eps 1e-8); only the state format of ``nu`` changes (rmsprop_jax.formats, by
the names of experiments.common.optimizers.ACCUMULATOR_FORMATS): float32 (the reference),
bfloat16 with stochastic rounding, bfloat16 rounded to nearest (the old ``jnp.bfloat16``,
a control), block-wise int8 with stochastic rounding, factored (row/column statistics) and
bitsandbytes' 8-bit scheme. Results: docs/memory/fashion_formats.md.

  python -m experiments.classification.compare --config \\
    configs/classification/fashion_mnist_mlp_formats.py
  # only some formats beside the float32 reference, e.g. after a change of int8:
  python -m experiments.classification.compare --config \\
    configs/classification/fashion_mnist_mlp_formats.py:float32,int8
"""

import ml_collections

from configs.classification import fashion_mnist_mlp

# Entry name -> accumulator_format (experiments.common.optimizers.ACCUMULATOR_FORMATS).
FORMATS = {
    "rmsprop_float32": "float32",
    "rmsprop_bfloat16": "bfloat16",
    "rmsprop_bfloat16_nearest": "bfloat16_nearest",
    "rmsprop_int8": "int8",
    "rmsprop_factored": "factored",
    "rmsprop_bitsandbytes_int8": "bitsandbytes_int8",
}

VARIANTS = ("float32,int8",)  # the rerun of int8 in docs/memory/fashion_formats.md


def with_formats(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """``config`` with RMSprop at its framework default in each state format of ``arg``.

  Args:
    config: a comparison config whose ``optimizers.rmsprop`` is the framework default.
    arg: optional comma-separated formats to run (``...formats.py:float32,int8``, to rerun the
      formats a change touched beside the reference); all of ``FORMATS`` by default.
  """
  rmsprop = dict(config.optimizers.rmsprop)
  chosen = FORMATS
  if arg:
    wanted = arg.split(",")
    known = list(FORMATS.values())
    unknown = [name for name in wanted if name not in known]
    if unknown or "float32" not in wanted:
      raise ValueError(f"get_config's arg names formats of {known}, float32 among them (the "
                       f"reference); got {arg!r}.")
    chosen = {name: fmt for name, fmt in FORMATS.items() if fmt in wanted}
  config.optimizers = ml_collections.ConfigDict({
      name: {"kind": "rmsprop", **rmsprop, "accumulator_format": state_format}
      for name, state_format in chosen.items()
  })
  config.optimizer = "rmsprop_float32"
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The Fashion-MNIST MLP with RMSprop in each state format (``arg``: see :func:`with_formats`)."""
  config = fashion_mnist_mlp.get_config()
  config.name = "fashion_mnist_mlp_formats"
  return with_formats(config, arg)
