"""Hyperparameters: validated when the optimizer is built, cast to the leaf's dtype in ``update``.

Every numeric hyperparameter may be a Python number, a NumPy or JAX array, or a tracer (a jit
argument, a vmapped sweep axis, an ``optax.inject_hyperparams`` state entry). Two rules make the
three forms interchangeable:

* **Validation at build time.** Concrete values are range-checked when the optimizer is built,
  and the error names the argument. Tracers carry no value, so only their shape is checked.
* **One arithmetic for all forms.** Inside ``update`` every hyperparameter is cast to the
  compute dtype of the leaf it acts on, ``promote_types(leaf dtype, float32)``, *before* any
  arithmetic (:func:`as_dtype`): float32 for bfloat16/float16/float32 leaves, float64 for
  float64 leaves. A Python float and the same value as a float32 array (or a float64 array for
  float64 leaves) are then the same number in the same operations, and the results are bitwise
  identical (optax issues #1532 and #583 are the counter-example).
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


def as_dtype(value: Any, dtype: Any) -> jax.Array:
  """The canonical in-program form of a hyperparameter: ``value`` cast to ``dtype``.

  Call it inside ``update`` with the compute dtype of the leaf the value acts on, and do all
  arithmetic on hyperparameters after the cast (``1 - rho`` on the cast ``rho``), never before.
  """
  return jnp.asarray(value, dtype=dtype)


def is_static_zero(value: Any) -> bool:
  """True for a Python (or NumPy) number equal to 0, known when the optimizer is built.

  Such a value may skip work (no parameters needed for a weight decay of 0) but never changes
  the state's structure: arrays and tracers, whose value may be 0 too, must give the same tree.
  """
  if isinstance(value, bool) or is_traced(value) or isinstance(value, jax.Array):
    return False
  return isinstance(value, (int, float, np.number)) and value == 0


def _is_number_like(value: Any) -> bool:
  if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
    return True
  return is_traced(value)
