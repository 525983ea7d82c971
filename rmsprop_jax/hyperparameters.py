"""Hyperparameters: validated when the optimizer is built, canonical float32 inside ``update``.

Every numeric hyperparameter may be a Python number, a NumPy or JAX array, or a tracer (a jit
argument, a vmapped sweep axis, an ``optax.inject_hyperparams`` state entry). Two rules make the
three forms interchangeable:

* **Validation at build time.** Concrete values are range-checked when the optimizer is built,
  and the error names the argument. Tracers carry no value, so only their shape is checked.
* **One arithmetic for all forms.** Inside ``update`` every hyperparameter becomes a float32
  scalar *before* any arithmetic. A concrete value additionally passes through
  ``jax.lax.optimization_barrier`` so that XLA cannot constant-fold or algebraically rewrite
  expressions around it (``x / c`` into ``x * (1 / c)``, say). The compiled arithmetic is
  then the same whether the value arrived as a Python float or as a float32 jit argument, and
  the results are bitwise identical (optax issues #1532 and #583 are the counter-example).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# A hyperparameter as users pass it: a Python number, an array or a tracer.
Scalar = float | int | jax.Array | np.ndarray | np.number
# A learning rate may also be an optax schedule: step count -> value.
ScalarOrSchedule = Scalar | Callable[[jax.Array], Any]


def is_traced(value: Any) -> bool:
  """Whether ``value`` is an abstract value whose number is unknown at build time."""
  return isinstance(value, jax.core.Tracer)


def check_scalar(
    name: str,
    value: Any,
    *,
    minimum: float,
    maximum: float = math.inf,
    include_maximum: bool = True,
    allow_infinite: bool = False,
) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is a valid scalar.

  The valid range is ``minimum <= value <= maximum`` (``< maximum`` when
  ``include_maximum`` is false). NaN is never valid. Tracers are checked for shape only.
  """
  if isinstance(value, bool) or not _is_number_like(value):
    raise TypeError(
        f"{name} must be a real number or a scalar array, got {type(value).__name__}: "
        f"{value!r}."
    )
  shape = np.shape(value)
  if shape != ():
    raise ValueError(
        f"{name} must be a scalar, got an array of shape {shape}. To sweep over "
        f"{name}, jax.vmap over a function that builds the optimizer instead."
    )
  if is_traced(value):
    return
  array = np.asarray(value)
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise TypeError(f"{name} must be real-valued, got dtype {array.dtype}.")
  number = float(array)
  upper = "]" if include_maximum else ")"
  valid_range = f"[{minimum:g}, {maximum:g}{upper}"
  in_range = minimum <= number and (number <= maximum if include_maximum else number < maximum)
  if math.isnan(number) or not in_range or (math.isinf(number) and not allow_infinite):
    raise ValueError(f"{name} must be a finite number in {valid_range}, got {number!r}.")


def check_learning_rate(name: str, value: Any) -> None:
  """Checks a learning rate: a schedule (checked when called) or a number >= 0."""
  if callable(value):
    return
  check_scalar(name, value, minimum=0.0)


def as_float32(value: Any) -> jax.Array:
  """The canonical in-program form of a hyperparameter; call it inside ``update``.

  See the module docstring for why concrete values go through an optimization barrier.
  """
  array = jnp.asarray(value, dtype=jnp.float32)
  if is_traced(value):
    return array
  return jax.lax.optimization_barrier(array)


def _is_number_like(value: Any) -> bool:
  if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
    return True
  return is_traced(value)
