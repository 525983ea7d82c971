"""How a run's seeds are laid out and its epochs compiled: one vmapped program or seed by seed,
a scanned epoch or one compiled step per batch."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from experiments.classification.model_spec import ModelSpec, init_variables, model_graphdef
from experiments.classification.steps import (
    TrainState,
    evaluate,
    train_epoch,
    train_indexed_step,
)
from experiments.common import data_order


@dataclasses.dataclass(frozen=True)
class SeedGroups:
  """How a run's seeds are laid out: all in one vmapped program, or one after another.

  With ``vmap_seeds`` there is one group holding every seed and each function is vmapped over
  it (fills an accelerator); otherwise each seed is a group of its own and runs the unvmapped
  function (on a CPU a vmapped convolution over seeds becomes a grouped convolution, measured
  4.6x slower than one seed instead of 3x). Results agree either way up to float rounding.
  """

  seeds: tuple[int, ...]
  vmap_seeds: bool

  @property
  def groups(self) -> list[tuple[int, ...]]:
    """The seed groups, in the order they are trained."""
    return [self.seeds] if self.vmap_seeds else [(seed,) for seed in self.seeds]

  def over_seeds(self, fn: Any, in_axes: Any) -> Any:
    """``fn`` as it runs on one group: vmapped over the seed axis, or unchanged."""
    return jax.vmap(fn, in_axes=in_axes) if self.vmap_seeds else fn

  def keys(self, group: Sequence[int], num_epochs: int) -> tuple[jax.Array, jax.Array]:
    """The group's initialisation keys and its epoch keys ``(seeds?, num_epochs)``."""
    keys = [data_order.seed_keys(seed) for seed in group]
    init_keys = jnp.stack([init_key for init_key, _ in keys])
    epoch_keys = jnp.stack([data_order.epoch_keys(data_key, num_epochs) for _, data_key in keys])
    return (init_keys, epoch_keys) if self.vmap_seeds else (init_keys[0], epoch_keys[0])

  def epoch_key(self, epoch_keys: jax.Array, epoch: int) -> jax.Array:
    """Epoch ``epoch``'s key(s) from :meth:`keys`' second output."""
    return epoch_keys[:, epoch] if self.vmap_seeds else epoch_keys[epoch]

  def stacked(self, states: Sequence[TrainState]) -> TrainState:
    """The groups' states as one state with a leading seed axis."""
    if self.vmap_seeds:
      return states[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def compile_epoch(
    config: ml_collections.ConfigDict,
    layout: SeedGroups,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    first_key: jax.Array,
) -> Any:
  """The compiled ``(state, images, labels, epoch_key) -> (state, mean metrics)`` of a group.

  ``config.epoch_loop`` chooses the layout: ``"scan"`` compiles the whole epoch as one
  ``lax.scan`` (:func:`train_epoch`); ``"python"`` calls one compiled step per batch
  (:func:`train_indexed_step`). Either way the data set stays on the device and batches are
  gathered by index inside the compiled code. Compiled ahead of time on the first group's
  ``state`` and ``first_key``.
  """
  augment = bool(config.augment)
  if config.epoch_loop == "scan":
    scanned = functools.partial(
        train_epoch, graphdef, optimizer, batch_size=config.batch_size, augment=augment,
        unroll=config.scan_unroll,
    )
    return jax.jit(layout.over_seeds(scanned, (0, None, None, 0)), donate_argnums=0).lower(
        state, images, labels, first_key
    ).compile()

  plan = functools.partial(
      data_order.epoch_plan, num_examples=images.shape[0], batch_size=config.batch_size
  )
  plan_fn = jax.jit(layout.over_seeds(plan, 0)).lower(first_key).compile()
  batches, step_keys = plan_fn(first_key)
  step = functools.partial(train_indexed_step, graphdef, optimizer, augment=augment)
  step_fn = jax.jit(
      layout.over_seeds(step, (0, None, None, 0, 0, None)), donate_argnums=0
  ).lower(state, images, labels, batches, step_keys, jnp.zeros((), jnp.int32)).compile()
  step_indices = [jnp.asarray(index, jnp.int32) for index in range(batches.shape[-2])]

  def epoch_fn(
      state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    batches, step_keys = plan_fn(key)
    step_metrics = []
    for index in step_indices:
      state, metrics = step_fn(state, images, labels, batches, step_keys, index)
      step_metrics.append(metrics)
    return state, jax.tree.map(lambda *values: jnp.mean(jnp.stack(values), axis=0),
                               *step_metrics)

  return epoch_fn


def init_states(
    layout: SeedGroups, init_fn: Any, optimizer: optax.GradientTransformation, num_epochs: int
) -> tuple[list[TrainState], list[jax.Array]]:
  """Each seed group's fresh :class:`TrainState` and its epoch keys (:mod:`.data_order`)."""
  states, epoch_keys = [], []
  for group in layout.groups:
    init_keys, keys = layout.keys(group, num_epochs)
    params, model_state = init_fn(init_keys)
    opt_state = layout.over_seeds(optimizer.init, 0)(params)
    step = jnp.zeros((len(group),) if layout.vmap_seeds else (), jnp.int32)
    states.append(TrainState(params, model_state, opt_state, step))
    epoch_keys.append(keys)
  return states, epoch_keys


@functools.cache
def shared_programs(spec: ModelSpec, vmap_seeds: bool, eval_batch_size: int) -> tuple[Any, Any]:
  """Jitted ``key -> (params, model_state)`` and ``(state, images, labels) -> evaluation``."""
  graphdef = model_graphdef(spec)
  over_seeds = SeedGroups((), vmap_seeds).over_seeds
  init_fn = jax.jit(over_seeds(functools.partial(init_variables, spec), 0))
  eval_fn = jax.jit(over_seeds(
      functools.partial(evaluate, graphdef, batch_size=eval_batch_size), (0, None, None)
  ))
  return init_fn, eval_fn
