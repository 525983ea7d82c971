"""The compared optimizers, built from a config's hyperparameters: one factory for every job.

``sgd``, ``momentum`` and ``adam`` come from optax, ``rmsprop`` from :func:`rmsprop_jax.rmsprop`.
Unknown names and keys are errors; the baselines' values are range-checked here, since optax
checks none. An entry of a config's ``optimizers`` is named after the optimizer it builds, or
carries a ``kind`` naming it, so that one comparison can hold several variants of one optimizer
(``"rmsprop_int8": {"kind": "rmsprop", "accumulator_format": "int8", ...}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import optax

import rmsprop_jax
from rmsprop_jax import formats
from rmsprop_jax import hyperparameters as rmsprop_hyperparameters

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
# How tables, legends and titles name each optimizer.
OPTIMIZER_LABELS = {
    "sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam", "rmsprop": "RMSprop",
}
SCHEDULES = ("constant", "cosine", "warmup_cosine")

# Hyperparameters each optimizer accepts, with the default used when a config leaves one out.
# ``learning_rate`` has no default: every config must state it.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9, "nesterov": False},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "rmsprop": {
        "decay": 0.9,
        "eps": 1e-8,
        "eps_in_sqrt": False,
        "initial_scale": 0.0,
        "centered": False,
        "momentum": None,
        "nesterov": False,
        "bias_correction": False,
        "weight_decay": 0.0,
        # The state format of nu (and of mu / the momentum buffer): a name of
        # ACCUMULATOR_FORMATS, or None for the library's default (the parameters' compute
        # dtype: float32 for float32 parameters).
        "accumulator_format": None,
    },
}

# RMSprop's state formats by the name a config gives (rmsprop_jax.formats); each is built with
# its defaults: blocks of 256 and leaves under 4,096 entries kept float32 for the 8-bit ones,
# Adafactor's min_dim_size=128 for the factored one.
ACCUMULATOR_FORMATS: dict[str, Callable[[], formats.Format]] = {
    "float32": lambda: formats.dtype(jnp.float32),
    "bfloat16": lambda: formats.bfloat16("stochastic"),
    "bfloat16_nearest": lambda: formats.bfloat16("nearest"),
    "int8": lambda: formats.int8(rounding="stochastic"),
    "factored": formats.factored,
    "bitsandbytes_int8": formats.bitsandbytes_int8,
}


def optimizer_kind(name: str, hparams: Mapping[str, Any]) -> str:
  """The optimizer (one of :data:`OPTIMIZERS`) the config entry ``name`` builds.

  Its ``kind`` key when it has one, else ``name`` itself.

  Raises:
    ValueError: for a ``kind`` not in :data:`OPTIMIZERS`, or a name that is none and has no
      ``kind``.
  """
  if "kind" in hparams:
    kind = hparams["kind"]
    if kind not in OPTIMIZERS:
      raise ValueError(f"optimizers.{name}.kind must be one of {OPTIMIZERS}; got {kind!r}.")
    return kind
  if name not in OPTIMIZERS:
    raise ValueError(
        f"optimizer name must be one of {OPTIMIZERS} (or the entry must name one in its "
        f"'kind' key); got {name!r}."
    )
  return name


def accumulator_format(name: str, value: Any) -> formats.Format | None:
  """The :mod:`rmsprop_jax.formats` format a config names (``None``: the library default).

  Raises:
    ValueError: for a name not in :data:`ACCUMULATOR_FORMATS`, naming
      ``optimizers.<name>.accumulator_format``.
  """
  if value is None:
    return None
  if not isinstance(value, str) or value not in ACCUMULATOR_FORMATS:
    raise ValueError(
        f"optimizers.{name}.accumulator_format must be one of {tuple(ACCUMULATOR_FORMATS)} "
        f"or None; got {value!r}."
    )
  return ACCUMULATOR_FORMATS[value]()


def make_optimizer(
    name: str,
    hparams: Mapping[str, Any],
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    warmup_fraction: float = 0.05,
) -> optax.GradientTransformation:
  """Builds one of the compared optimizers from its hyperparameters.

  ``sgd`` is ``optax.sgd``; ``momentum`` is ``optax.sgd`` with heavy-ball (or Nesterov)
  momentum; ``adam`` is ``optax.adam``; ``rmsprop`` is :func:`rmsprop_jax.rmsprop`. Numeric
  hyperparameters may be arrays or tracers (vmapped sweeps); booleans must be Python values.

  Args:
    name: one of :data:`OPTIMIZERS`, or any name when ``hparams`` has a ``kind`` (see
      :func:`optimizer_kind`); errors name it.
    hparams: ``learning_rate`` (required), optionally ``kind``, and any of the optimizer's
      keys in :data:`OPTIMIZER_DEFAULTS`; missing keys take those defaults. RMSprop's
      ``accumulator_format`` is a name of :data:`ACCUMULATOR_FORMATS` (a string, as configs
      hold it), passed to :func:`rmsprop_jax.rmsprop` as ``accumulator_dtype``.
    schedule: ``constant``; ``cosine`` (decay to 0 over ``total_steps``, Loshchilov & Hutter,
      2017); or ``warmup_cosine`` (linear warm-up over ``warmup_fraction`` of the steps, then
      cosine decay).
    total_steps: number of training steps; required by the decaying schedules.
    warmup_fraction: share of ``total_steps`` spent warming up, for ``warmup_cosine``.

  Returns:
    The optax ``GradientTransformation``.
  """
  kind = optimizer_kind(name, hparams)
  hparams = {key: value for key, value in hparams.items() if key != "kind"}
  unknown = set(hparams) - {"learning_rate"} - set(OPTIMIZER_DEFAULTS[kind])
  if unknown:
    raise ValueError(
        f"hparams for {name!r} has unknown keys {sorted(unknown)}; allowed: learning_rate, "
        f"{', '.join(OPTIMIZER_DEFAULTS[kind]) or '(nothing else)'}."
    )
  if "learning_rate" not in hparams:
    raise ValueError(f"hparams for {name!r} must contain learning_rate.")
  values = {**OPTIMIZER_DEFAULTS[kind], **hparams}
  if kind != "rmsprop":  # rmsprop_jax.rmsprop checks its own arguments.
    check_baseline_hparams(kind, values)
  learning_rate = _schedule(values.pop("learning_rate"), schedule, total_steps, warmup_fraction)
  if kind == "sgd":
    return optax.sgd(learning_rate)
  if kind == "momentum":
    return optax.sgd(learning_rate, momentum=values["momentum"], nesterov=values["nesterov"])
  if kind == "adam":
    return optax.adam(learning_rate, b1=values["b1"], b2=values["b2"], eps=values["eps"])
  state_format = accumulator_format(name, values.pop("accumulator_format"))
  return rmsprop_jax.rmsprop(learning_rate, accumulator_dtype=state_format, **values)


# Valid ranges of the baselines' hyperparameters: (minimum, maximum, maximum included).
_BASELINE_RANGES = {
    "learning_rate": (0.0, math.inf, True),
    "momentum": (0.0, 1.0, False),
    "b1": (0.0, 1.0, False),
    "b2": (0.0, 1.0, False),
    "eps": (0.0, math.inf, True),
}


def check_baseline_hparams(name: str, values: Mapping[str, Any]) -> None:
  """Raises ``ValueError`` naming ``optimizers.<name>.<key>`` for an out-of-range value.

  optax validates none of these, so ``learning_rate=-1`` would train to a NaN loss silently.
  Tracers (vmapped sweeps) are checked for shape only.
  """
  for key, value in values.items():
    if key == "nesterov":
      if not isinstance(value, bool):
        raise TypeError(f"optimizers.{name}.nesterov must be True or False; got {value!r}.")
      continue
    minimum, maximum, include_maximum = _BASELINE_RANGES[key]
    rmsprop_hyperparameters.check_scalar(
        f"optimizers.{name}.{key}", value, minimum=minimum, maximum=maximum,
        include_maximum=include_maximum,
    )


def _schedule(
    learning_rate: Any, schedule: str, total_steps: int | None, warmup_fraction: float
) -> Any:
  if schedule == "constant":
    return learning_rate
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
  if total_steps is None or total_steps < 1:
    raise ValueError(f"schedule={schedule!r} needs total_steps >= 1; got {total_steps}.")
  if schedule == "cosine":
    return optax.cosine_decay_schedule(learning_rate, total_steps)
  warmup_steps = max(1, int(warmup_fraction * total_steps))
  return optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1)
  )
