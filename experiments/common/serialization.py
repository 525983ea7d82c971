"""Plain JSON from the values runs produce: NumPy/JAX arrays, NumPy scalars, ConfigDicts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np


def to_jsonable(value: Any) -> Any:
  """Converts arrays, NumPy scalars, NaN and ConfigDicts into plain JSON values.

  JSON has no NaN or infinity, so non-finite numbers become ``null``; tuples become lists.
  """
  if isinstance(value, ml_collections.ConfigDict):
    return to_jsonable(value.to_dict())
  if isinstance(value, Mapping):
    return {str(key): to_jsonable(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(item) for item in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, (np.floating, float)):
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number
  if isinstance(value, np.integer):
    return int(value)
  return value
