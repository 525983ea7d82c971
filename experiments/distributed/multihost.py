"""Multi-process (multi-host) start-up through ``jax.distributed.initialize``.

Settings come from ``config.distributed`` and, where unset there, from ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` and ``JAX_LOCAL_DEVICE_IDS``; ``auto_detect`` leaves
the rest to JAX's cluster detection. With one process nothing is started. The table of fields
and a two-process walk-through are in ``docs/distributed.md``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"
CPU_COLLECTIVES = ("gloo", "mpi", "none")
_FIELDS = (
    "coordinator_address", "num_processes", "process_id", "local_device_ids", "auto_detect",
    "initialization_timeout", "cpu_collectives",
)


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  """Resolved arguments of ``jax.distributed.initialize`` (``None``: left to auto-detection)."""

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  local_device_ids: tuple[int, ...] | None
  auto_detect: bool
  initialization_timeout: int
  cpu_collectives: str


def _int_setting(name: str, config_value: Any, env_name: str, environ: Mapping[str, str]) -> Any:
  if config_value is not None and config_value != -1:
    value, source = config_value, f"config.distributed.{name}"
  elif environ.get(env_name, "") != "":
    value, source = environ[env_name], f"${env_name}"
  else:
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{source} must be an integer; got {value!r}.") from None


def resolve_settings(
    distributed_config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> DistributedSettings | None:
  """The multi-process settings of a run, or ``None`` for a single-process run.

  Args:
    distributed_config: ``config.distributed`` (fields in the module docstring; missing fields,
      ``""``, ``-1`` and ``None`` mean "not set here").
    environ: the environment to read (default ``os.environ``).

  Raises:
    ValueError: a field has the wrong type or range, or some but not all of coordinator
      address, number of processes and process id are set without ``auto_detect``.
  """
  environ = os.environ if environ is None else environ
  settings = dict(distributed_config or {})
  unknown = set(settings) - set(_FIELDS)
  if unknown:
    raise ValueError(
        f"config.distributed has unknown fields {sorted(unknown)}; allowed: {', '.join(_FIELDS)}."
    )
  coordinator = settings.get("coordinator_address") or environ.get(ENV_COORDINATOR) or None
  num_processes = _int_setting(
      "num_processes", settings.get("num_processes"), ENV_NUM_PROCESSES, environ
  )
  process_id = _int_setting("process_id", settings.get("process_id"), ENV_PROCESS_ID, environ)
  device_ids = settings.get("local_device_ids")
  if device_ids in (None, "", ()) and environ.get(ENV_LOCAL_DEVICE_IDS):
    device_ids = environ[ENV_LOCAL_DEVICE_IDS]
  if isinstance(device_ids, str):
    try:
      device_ids = [int(part) for part in device_ids.split(",") if part.strip()]
    except ValueError:
      raise ValueError(
          f"local_device_ids must be comma-separated integers; got {device_ids!r}."
      ) from None
  local_device_ids = tuple(int(index) for index in device_ids) if device_ids else None
  auto_detect = bool(settings.get("auto_detect", False))
  timeout = int(settings.get("initialization_timeout", 300) or 300)
  cpu_collectives = settings.get("cpu_collectives", "gloo") or "gloo"
  if cpu_collectives not in CPU_COLLECTIVES:
    raise ValueError(
        f"config.distributed.cpu_collectives must be one of {CPU_COLLECTIVES}; "
        f"got {cpu_collectives!r}."
    )
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1; got {num_processes}.")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(
        f"process_id must be in [0, num_processes={num_processes}); got {process_id}."
    )
  explicit = {
      "coordinator_address": coordinator, "num_processes": num_processes,
      "process_id": process_id,
  }
  if num_processes == 1 or (not auto_detect and all(v is None for v in explicit.values())):
    return None
  missing = [name for name, value in explicit.items() if value is None]
  if missing and not auto_detect:
    raise ValueError(
        f"a multi-process run needs coordinator_address, num_processes and process_id; "
        f"{', '.join(missing)} not set (config.distributed or ${ENV_COORDINATOR}, "
        f"${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID}); set auto_detect=True on Slurm, Open MPI or "
        f"TPU pods."
    )
  return DistributedSettings(
      coordinator, num_processes, process_id, local_device_ids, auto_detect, timeout,
      cpu_collectives,
  )


def initialize(distributed_config: Mapping[str, Any] | None = None) -> bool:
  """Joins the multi-process job the config or environment describes, if any.

  Must run before any JAX computation (the device list is fixed by the first one). Calling it
  again after a successful start does nothing.

  Returns:
    Whether this is a multi-process run (``jax.process_count() > 1`` afterwards).
  """
  settings = resolve_settings(distributed_config)
  if settings is None:
    return False
  if is_initialized():
    return jax.process_count() > 1
  # The CPU backend needs to know before it starts how processes exchange collective data.
  jax.config.update("jax_cpu_collectives_implementation", settings.cpu_collectives)
  jax.distributed.initialize(
      coordinator_address=settings.coordinator_address,
      num_processes=settings.num_processes,
      process_id=settings.process_id,
      local_device_ids=list(settings.local_device_ids) if settings.local_device_ids else None,
      initialization_timeout=settings.initialization_timeout,
  )
  return jax.process_count() > 1


def is_initialized() -> bool:
  """Whether ``jax.distributed.initialize`` has run in this process."""
  return jax.distributed.is_initialized()


def is_primary() -> bool:
  """Whether this process writes the run's reports (process 0)."""
  return jax.process_index() == 0


def fetch(tree: Any) -> Any:
  """NumPy copies of (possibly sharded, multi-process) global arrays, on every process.

  Replicated arrays are read locally; shards that other processes hold are gathered over the
  collectives (every process must then call this together). In a single process this is
  ``jax.device_get``.
  """
  def one(leaf: Any) -> np.ndarray:
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return np.asarray(jax.device_get(leaf))
    if leaf.is_fully_replicated:
      # Every process already holds the whole value: no communication needed.
      return np.asarray(leaf.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

  return jax.tree.map(one, tree)
