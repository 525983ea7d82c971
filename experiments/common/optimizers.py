"""The compared optimizers, built from a config's hyperparameters: one factory for every job.

``sgd``, ``momentum`` and ``adam`` come from optax, ``rmsprop`` from :func:`rmsprop_jax.rmsprop`.
Unknown names and keys are errors; the baselines' values are range-checked here, since optax
checks none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optax

import rmsprop_jax
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
    },
}


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
    name: one of :data:`OPTIMIZERS`.
    hparams: ``learning_rate`` (required) and any of the optimizer's keys in
      :data:`OPTIMIZER_DEFAULTS`; missing keys take those defaults.
    schedule: ``constant``; ``cosine`` (decay to 0 over ``total_steps``, Loshchilov & Hutter,
      2017); or ``warmup_cosine`` (linear warm-up over ``warmup_fraction`` of the steps, then
      cosine decay).
    total_steps: number of training steps; required by the decaying schedules.
    warmup_fraction: share of ``total_steps`` spent warming up, for ``warmup_cosine``.

  Returns:
    The optax ``GradientTransformation``.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer name must be one of {OPTIMIZERS}; got {name!r}.")
  unknown = set(hparams) - {"learning_rate"} - set(OPTIMIZER_DEFAULTS[name])
  if unknown:
    raise ValueError(
        f"hparams for {name!r} has unknown keys {sorted(unknown)}; allowed: learning_rate, "
        f"{', '.join(OPTIMIZER_DEFAULTS[name]) or '(nothing else)'}."
    )
  if "learning_rate" not in hparams:
    raise ValueError(f"hparams for {name!r} must contain learning_rate.")
  values = {**OPTIMIZER_DEFAULTS[name], **hparams}
  if name != "rmsprop":  # rmsprop_jax.rmsprop checks its own arguments.
    check_baseline_hparams(name, values)
  learning_rate = _schedule(values.pop("learning_rate"), schedule, total_steps, warmup_fraction)
  if name == "sgd":
    return optax.sgd(learning_rate)
  if name == "momentum":
    return optax.sgd(learning_rate, momentum=values["momentum"], nesterov=values["nesterov"])
  if name == "adam":
    return optax.adam(learning_rate, b1=values["b1"], b2=values["b2"], eps=values["eps"])
  return rmsprop_jax.rmsprop(learning_rate, **values)


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
