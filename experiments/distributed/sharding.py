"""Device meshes and shardings for data-parallel and parameter-sharded (FSDP/ZeRO) training.

A two-axis mesh (``data``, ``model``) from ``config.mesh``: batches split over ``data``,
parameters over ``model`` (the largest dimension the axis divides; small ones replicated), and
every optimizer-state leaf that mirrors a parameter sharded exactly like it
(:func:`optax.tree_utils.tree_map_params`). The layouts and their costs are in
``docs/distributed.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)
# Splitting a parameter of a few hundred elements saves nothing and costs a collective per use.
DEFAULT_MIN_SHARD_SIZE = 1024


def mesh_shape(mesh_config: Mapping[str, Any] | None, num_devices: int) -> tuple[int, int]:
  """``(data, model)`` axis sizes for ``num_devices`` devices from a mesh config.

  Args:
    mesh_config: mapping with optional ``data`` (``-1``: all remaining devices) and ``model``
      (default 1) sizes; ``None`` means pure data parallelism.
    num_devices: the number of devices the mesh must cover exactly.

  Returns:
    The two axis sizes, whose product is ``num_devices``.
  """
  mesh_config = dict(mesh_config or {})
  unknown = set(mesh_config) - {DATA_AXIS, MODEL_AXIS, "min_shard_size"}
  if unknown:
    raise ValueError(
        f"config.mesh has unknown fields {sorted(unknown)}; allowed: data, model, min_shard_size."
    )
  model = int(mesh_config.get(MODEL_AXIS, 1))
  data = int(mesh_config.get(DATA_AXIS, -1))
  if model < 1:
    raise ValueError(f"config.mesh.model must be >= 1; got {model}.")
  if num_devices % model:
    raise ValueError(
        f"config.mesh.model={model} does not divide the number of devices ({num_devices})."
    )
  if data == -1:
    data = num_devices // model
  if data < 1 or data * model != num_devices:
    raise ValueError(
        f"config.mesh.data * config.mesh.model must equal the number of devices "
        f"({num_devices}); got data={data}, model={model}."
    )
  return data, model


def make_mesh(
    mesh_config: Mapping[str, Any] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """The ``(data, model)`` device mesh a config asks for.

  ``jax.make_mesh`` orders the devices so that the ``model`` axis (the last, most
  communication-heavy one) connects the closest devices: on a multi-host system it stays within
  a host and the ``data`` axis crosses hosts. Both axes are ``AxisType.Auto``: shardings are
  fixed at the step's inputs and outputs and XLA propagates them through the model.

  Args:
    mesh_config: see :func:`mesh_shape`.
    devices: the devices to use; default all devices of all processes (``jax.devices()``).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  # Auto axes: XLA's partitioner propagates the shardings of inputs and outputs through the
  # unmodified model code (explicit axes would need sharding annotations inside the model).
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy of an array on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension split over ``data``, copies along ``model``."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def parameter_partition_spec(
    shape: Sequence[int], model_size: int, min_shard_size: int = DEFAULT_MIN_SHARD_SIZE
) -> PartitionSpec:
  """Where a parameter of ``shape`` is split over the ``model`` axis.

  The largest dimension that ``model_size`` divides is split (the last of equals, which for a
  dense kernel ``(in, out)`` splits the output features); a parameter with fewer than
  ``min_shard_size`` elements, or with no dimension the axis divides, is replicated.
  """
  if model_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_shard_size:
    return PartitionSpec()
  candidates = [axis for axis, size in enumerate(shape) if size % model_size == 0]
  if not candidates:
    return PartitionSpec()
  split = max(candidates, key=lambda axis: (shape[axis], axis))
  return PartitionSpec(*(MODEL_AXIS if axis == split else None for axis in range(len(shape))))


def parameter_shardings(
    params: Any, mesh: Mesh, min_shard_size: int = DEFAULT_MIN_SHARD_SIZE
) -> Any:
  """A ``NamedSharding`` per parameter leaf (a pytree shaped like ``params``).

  ``params`` may hold arrays or ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``), so the
  shardings can be chosen before any weight is allocated.
  """
  model_size = mesh.shape[MODEL_AXIS]
  return jax.tree.map(
      lambda leaf: NamedSharding(
          mesh, parameter_partition_spec(leaf.shape, model_size, min_shard_size)
      ),
      params,
  )


def optimizer_state_shardings(
    optimizer: optax.GradientTransformation, opt_state: Any, param_shardings: Any, mesh: Mesh
) -> Any:
  """Shardings of an optimizer state whose parameter-shaped leaves follow ``param_shardings``.

  Every subtree of ``opt_state`` that the optimizer built from the parameters (moving averages,
  momentum buffers) gets the parameters' shardings leaf by leaf; every other leaf (counters,
  injected hyperparameters) is replicated.

  Args:
    optimizer: the transformation that produced ``opt_state``.
    opt_state: the state, or its ``jax.eval_shape``.
    param_shardings: from :func:`parameter_shardings`.
    mesh: the mesh for the replicated leaves.
  """
  everywhere = replicated(mesh)
  return optax.tree_utils.tree_map_params(
      optimizer,
      lambda _, sharding: sharding,
      opt_state,
      param_shardings,
      transform_non_params=lambda _: everywhere,
  )


def train_state_shardings(
    optimizer: optax.GradientTransformation,
    abstract_state: Any,
    mesh: Mesh,
    min_shard_size: int = DEFAULT_MIN_SHARD_SIZE,
) -> Any:
  """Shardings of a :class:`experiments.classification.train.TrainState`.

  Parameters are split by :func:`parameter_partition_spec`, the optimizer state follows them,
  and the batch-norm statistics and the step counter are replicated (they are small, and every
  device updates them identically from the all-reduced batch statistics).

  Args:
    optimizer: the optimizer whose state ``abstract_state.opt_state`` is.
    abstract_state: the state or its ``jax.eval_shape`` (no memory is needed).
    mesh: the device mesh.
    min_shard_size: see :func:`parameter_partition_spec`.
  """
  params = parameter_shardings(abstract_state.params, mesh, min_shard_size)
  everywhere = replicated(mesh)
  return type(abstract_state)(
      params=params,
      model_state=jax.tree.map(lambda _: everywhere, abstract_state.model_state),
      opt_state=optimizer_state_shardings(optimizer, abstract_state.opt_state, params, mesh),
      step=everywhere,
  )


def host_to_global(value: Any, sharding: Any) -> Any:
  """Global arrays from host values that every process holds in full.

  Each process copies only the slices its own devices need (``jax.make_array_from_callback``),
  so the same call works on one process and on many; ``sharding`` is one sharding for every
  leaf or a pytree of shardings shaped like ``value``.
  """
  def place(leaf: Any, leaf_sharding: jax.sharding.Sharding) -> jax.Array:
    array = np.asarray(leaf)
    return jax.make_array_from_callback(array.shape, leaf_sharding, lambda index: array[index])

  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda leaf: place(leaf, sharding), value)
  return jax.tree.map(place, value, sharding)


def describe(shardings: Any) -> dict[str, str]:
  """``{path: partition spec}`` of a sharding pytree, for logs and reports."""
  flat, _ = jax.tree_util.tree_flatten_with_path(shardings)
  return {
      jax.tree_util.keystr(path, simple=True, separator="/"): str(sharding.spec)
      for path, sharding in flat
  }
