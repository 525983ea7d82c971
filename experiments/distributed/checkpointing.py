"""Exact checkpoint-resume of training with Orbax, with corruption detection and fallback.

:class:`TrainCheckpointer` writes the train state and the data order's position
(:class:`DataPosition`) as one Orbax checkpoint per step, with two checksums per array that
every restore verifies; a damaged newest checkpoint is named, moved aside and the previous one
used. Layout, atomicity and integrity are described in ``docs/distributed.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from experiments.common.errors import UserError

FORMAT_VERSION = 1
STATE_ITEM = "state"
META_ITEM = "meta"
CORRUPTED_DIR = "corrupted"
# Knuth's multiplicative constant: consecutive positions get well-spread odd weights.
_POSITION_MULTIPLIER = 2654435761


class CheckpointCorruptedError(UserError, RuntimeError):
  """A checkpoint directory that cannot be read back or whose arrays fail verification."""


class CheckpointMismatchError(UserError, ValueError):
  """An intact checkpoint written by a run with other settings, which this run cannot continue."""


class CheckpointFallbackWarning(UserWarning):
  """Restoring skipped a corrupted checkpoint and used an older one."""


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where in the data order the next step starts, and what defines that order.

  Attributes:
    step: optimizer steps taken so far.
    epoch: epoch of the next batch (``step // steps_per_epoch``).
    batch_in_epoch: index of the next batch in that epoch's permutation.
    steps_per_epoch: batches per epoch (the remainder of the training set is dropped).
    batch_size: global batch size.
    seed: the seed that draws each epoch's permutation.
  """

  step: int
  epoch: int
  batch_in_epoch: int
  steps_per_epoch: int
  batch_size: int
  seed: int

  @classmethod
  def at(cls, step: int, *, steps_per_epoch: int, batch_size: int, seed: int) -> DataPosition:
    """The position after ``step`` steps of a run with this data order."""
    if steps_per_epoch < 1:
      raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch}.")
    epoch, batch_in_epoch = divmod(int(step), steps_per_epoch)
    return cls(int(step), epoch, batch_in_epoch, steps_per_epoch, int(batch_size), int(seed))

  def check_same_order(self, expected: DataPosition) -> None:
    """Raises ``ValueError`` if a restored position belongs to a different data order."""
    for field in ("batch_size", "seed", "steps_per_epoch"):
      stored, wanted = getattr(self, field), getattr(expected, field)
      if stored != wanted:
        raise CheckpointMismatchError(
            f"the checkpoint was written with {field}={stored}, but this run has "
            f"{field}={wanted}; resuming would train on a different data order. Start a fresh "
            f"workdir or restore the original setting."
        )
    if DataPosition.at(
        self.step, steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
        seed=self.seed,
    ) != self:
      raise ValueError(f"the checkpoint's data position is inconsistent: {self}.")


def flatten_state(tree: Any) -> dict[str, Any]:
  """``{"path/to/leaf": leaf}`` for every leaf of ``tree`` (keys as ``jax.tree_util.keystr``)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  result = {jax.tree_util.keystr(path, simple=True, separator="/"): leaf for path, leaf in flat}
  if len(result) != len(flat):
    raise ValueError("the state has two leaves with the same path name; cannot flatten it.")
  return result


def unflatten_state(flat: Mapping[str, Any], like: Any) -> Any:
  """The inverse of :func:`flatten_state`: ``flat``'s values in ``like``'s structure."""
  keys = list(flatten_state(like))
  missing = sorted(set(keys) - set(flat))
  extra = sorted(set(flat) - set(keys))
  if missing or extra:
    raise ValueError(
        f"the checkpoint's arrays do not match the train state: missing {missing[:5]}, "
        f"unexpected {extra[:5]}."
    )
  return jax.tree_util.tree_unflatten(jax.tree.structure(like), [flat[key] for key in keys])


def _bits_as_uint32(leaf: jax.Array) -> jax.Array:
  leaf = jnp.asarray(leaf)
  if leaf.dtype == jnp.bool_:
    leaf = leaf.astype(jnp.uint8)
  bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[leaf.dtype.itemsize]
  return jax.lax.bitcast_convert_type(leaf, bits).astype(jnp.uint32).reshape(-1)


@jax.jit
def _checksums(flat: dict[str, jax.Array]) -> dict[str, jax.Array]:
  def sums(leaf: jax.Array) -> jax.Array:
    words = _bits_as_uint32(leaf)
    weights = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(_POSITION_MULTIPLIER)
    weights = weights + jnp.uint32(1)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)])

  return {key: sums(leaf) for key, leaf in flat.items()}


def fingerprint(flat: Mapping[str, jax.Array]) -> dict[str, list[int]]:
  """Two wrapping 32-bit sums of each array's bits: ``sum(w)`` and ``sum(w * (k*i + 1))``.

  ``w`` are the array's elements reinterpreted as unsigned integers and ``i`` their flat
  positions. Computed where the (possibly sharded) arrays live; only the sums reach the host.
  """
  sums = jax.device_get(_checksums(dict(flat)))
  return {key: [int(value) for value in np.asarray(pair)] for key, pair in sums.items()}


def as_checkpoint_path(directory: str | os.PathLike[str]) -> epath.Path:
  """A local path made absolute, or a remote one (``gs://...``) kept as it is."""
  text = os.fspath(directory)
  return epath.Path(text if "://" in text else Path(text).absolute())


class TrainCheckpointer:
  """Saves and restores train states with Orbax; see the module docstring for the guarantees.

  Args:
    directory: where the checkpoints go (created if missing): a path every process sees, local
      (a shared file system) or an object store URL such as ``gs://bucket/run/checkpoints``.
    save_every: save when ``step % save_every == 0``; ``0`` saves only when forced (the end).
    max_to_keep: how many of the newest checkpoints to keep; older ones are deleted after a
      new one is committed, so a corrupted newest checkpoint always has a predecessor.
    async_save: write in a background thread while training continues (the arrays are copied
      to host memory before :meth:`save` returns, so the next step may overwrite them).
  """

  def __init__(
      self,
      directory: str | os.PathLike[str],
      *,
      save_every: int = 0,
      max_to_keep: int = 3,
      async_save: bool = True,
  ):
    if save_every < 0:
      raise ValueError(f"save_every must be >= 0 (0: only at the end); got {save_every}.")
    if max_to_keep < 2:
      # One checkpoint alone leaves nothing to fall back to if it is damaged.
      raise ValueError(f"max_to_keep must be >= 2; got {max_to_keep}.")
    self.directory = as_checkpoint_path(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=(STATE_ITEM, META_ITEM)
    )

  # --------------------------------------------------------------------------------------------
  # Saving.

  def should_save(self, step: int) -> bool:
    """Whether :meth:`save` at ``step`` writes without ``force``."""
    return self.save_every > 0 and step % self.save_every == 0

  def save(
      self,
      state: Any,
      position: DataPosition,
      *,
      force: bool = False,
      extra: Mapping[str, Any] | None = None,
  ) -> bool:
    """Writes a checkpoint of ``state`` at ``position.step`` if due (or ``force``).

    Args:
      state: the train state (any pytree of arrays, sharded or not).
      position: the data position after ``position.step`` steps.
      force: write even when the step is not a multiple of ``save_every`` (end of training).
      extra: JSON-serialisable facts to store with the checkpoint (e.g. the optimizer name).

    Returns:
      Whether a checkpoint was written.
    """
    if not (force or self.should_save(position.step)):
      return False
    if position.step in self._manager.all_steps():
      return False  # Already saved at this step (e.g. the periodic save fell on the last step).
    flat = flatten_state(state)
    meta = {
        "format_version": FORMAT_VERSION,
        "position": dataclasses.asdict(position),
        "fingerprint": fingerprint(flat),
        "extra": dict(extra or {}),
    }
    return bool(self._manager.save(
        position.step,
        args=ocp.args.Composite(
            **{STATE_ITEM: ocp.args.StandardSave(flat), META_ITEM: ocp.args.JsonSave(meta)}
        ),
        force=True,
    ))

  def reached_preemption(self, step: int) -> bool:
    """Whether the job was told it will be preempted and all processes agreed to stop at ``step``.

    JAX's preemption service (started by ``jax.distributed.initialize``) turns a SIGTERM on any
    process into a step every process stops at; without it this is always false. Every process
    must call it at every step.
    """
    return bool(self._manager.reached_preemption(step))

  def wait_until_finished(self) -> None:
    """Blocks until every asynchronous write is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending writes and releases the manager's resources."""
    self._manager.close()

  def __enter__(self) -> TrainCheckpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # --------------------------------------------------------------------------------------------
  # Restoring.

  def all_steps(self) -> list[int]:
    """Steps of the committed checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed checkpoint's step, or ``None``."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_directory(self, step: int) -> epath.Path:
    """The directory of the checkpoint at ``step``."""
    return self.directory / str(step)

  def restore_step(self, step: int, abstract_state: Any) -> tuple[Any, DataPosition, dict]:
    """Reads and verifies the checkpoint at ``step``.

    Args:
      step: a step from :meth:`all_steps`.
      abstract_state: the train state's structure as ``jax.ShapeDtypeStruct`` leaves whose
        ``sharding`` says where each restored array goes (each process reads only its shards).

    Returns:
      ``(state, position, extra)``.

    Raises:
      CheckpointCorruptedError: the checkpoint cannot be read or an array fails its checksums.
      ValueError: the checkpoint is intact but holds a differently structured state.
    """
    where = self.step_directory(step)
    abstract_flat = flatten_state(abstract_state)
    try:
      meta = self._manager.restore(
          step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
      )[META_ITEM]
    except Exception as error:  # Orbax raises many types; all mean "unreadable".
      raise CheckpointCorruptedError(
          f"checkpoint {where} has no readable '{META_ITEM}' record: {_brief(error)}"
      ) from error
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
      raise CheckpointCorruptedError(
          f"checkpoint {where} has no valid '{META_ITEM}' record (format_version "
          f"{FORMAT_VERSION} expected)."
      )
    expected = meta.get("fingerprint", {})
    if set(expected) != set(abstract_flat):
      # Not damage: the checkpoint belongs to another model or optimizer configuration.
      missing = sorted(set(abstract_flat) - set(expected))
      unexpected = sorted(set(expected) - set(abstract_flat))
      raise CheckpointMismatchError(
          f"checkpoint {where} holds the state of a different model or optimizer: the train "
          f"state needs {missing[:5]} which it lacks, and it has {unexpected[:5]} which the "
          f"train state lacks. Pass another --workdir, or --config.resume=False to start over."
      )
    try:
      flat = dict(self._manager.restore(
          step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_flat)})
      )[STATE_ITEM])
    except Exception as error:  # Orbax and TensorStore raise many types; all mean "unreadable".
      raise CheckpointCorruptedError(
          f"checkpoint {where} cannot be read: {_brief(error)}"
      ) from error
    actual = fingerprint(flat)
    damaged = sorted(key for key in flat if actual[key] != list(expected[key]))
    if damaged:
      raise CheckpointCorruptedError(
          f"checkpoint {where}: {len(damaged)} array(s) fail their checksums (the files were "
          f"changed after the checkpoint was written): {', '.join(damaged[:5])}."
      )
    try:
      position = DataPosition(**meta["position"])
    except (KeyError, TypeError) as error:
      raise CheckpointCorruptedError(f"checkpoint {where}: bad data position: {error}") from error
    if position.step != step:
      raise CheckpointCorruptedError(
          f"checkpoint {where} records step {position.step}, not {step}."
      )
    return unflatten_state(flat, abstract_state), position, meta.get("extra", {})

  def restore_latest(
      self, abstract_state: Any, *, fallback: bool = True
  ) -> tuple[Any, DataPosition, dict] | None:
    """The newest checkpoint that reads back and verifies, or ``None`` if there is none.

    A corrupted newest checkpoint raises :class:`CheckpointCorruptedError` when ``fallback``
    is false; the message names it and the newest older checkpoint that verifies. With
    ``fallback`` (the default) the older one is restored instead, the corrupted directories
    are moved to ``corrupted/`` and a :class:`CheckpointFallbackWarning` names them.

    Raises:
      CheckpointCorruptedError: without ``fallback``, on the first bad checkpoint; with it,
        when checkpoints exist but none is usable (each one's reason is listed).
    """
    failures: list[tuple[int, CheckpointCorruptedError]] = []
    for step in reversed(self.all_steps()):
      try:
        result = self.restore_step(step, abstract_state)
      except CheckpointCorruptedError as error:
        failures.append((step, error))
        continue
      if failures and not fallback:
        bad_error = failures[0][1]
        raise CheckpointCorruptedError(
            f"{bad_error}\nThe newest good checkpoint is {self.step_directory(step)} (step "
            f"{step}); delete or move the corrupted one to resume from it, or resume with "
            f"fallback enabled."
        ) from bad_error
      if failures:
        self._quarantine([bad for bad, _ in failures])
        message = "; ".join(str(error) for _, error in failures)
        warnings.warn(
            f"skipped corrupted checkpoint(s) {[bad for bad, _ in failures]} and resumed from "
            f"step {step}; they were moved to {self.directory / CORRUPTED_DIR}. {message}",
            CheckpointFallbackWarning,
            stacklevel=2,
        )
      return result
    if failures:
      listing = "\n".join(f"  step {step}: {error}" for step, error in failures)
      raise CheckpointCorruptedError(
          f"no usable checkpoint in {self.directory}; every one failed:\n{listing}\n"
          f"Start over with --config.resume=False (or another --workdir); the damaged "
          f"checkpoints stay where they are."
      )
    return None

  def restore_or_initialize(
      self,
      abstract_state: Any,
      initialize: Callable[[], Any],
      start: DataPosition,
      *,
      resume: bool = True,
      fallback: bool = True,
      validate: Callable[[DataPosition, dict], None] | None = None,
  ) -> tuple[Any, DataPosition, dict | None]:
    """The newest good checkpoint's ``(state, position, extra)``, or a fresh start.

    As CLU's ``Checkpoint.restore_or_initialize``: with ``resume`` and a usable checkpoint
    (see :meth:`restore_latest`), it is restored, its data order is checked against
    ``start``'s (:meth:`DataPosition.check_same_order`) and ``validate(position, extra)`` may
    refuse it; otherwise ``(initialize(), start, None)``.
    """
    restored = self.restore_latest(abstract_state, fallback=fallback) if resume else None
    if restored is None:
      return initialize(), start, None
    state, position, extra = restored
    position.check_same_order(DataPosition.at(
        position.step, steps_per_epoch=start.steps_per_epoch, batch_size=start.batch_size,
        seed=start.seed,
    ))
    if validate is not None:
      validate(position, extra)
    logging.info("resumed from step %d (epoch %d, batch %d)", position.step, position.epoch,
                 position.batch_in_epoch)
    return state, position, extra

  def _quarantine(self, steps: list[int]) -> None:
    """Moves corrupted step directories aside, so later saves can reuse their step numbers."""
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      target = self.directory / CORRUPTED_DIR
      target.mkdir(exist_ok=True)
      for step in steps:
        source = self.step_directory(step)
        if source.exists():
          destination = target / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
          source.rename(destination)
          logging.warning("moved corrupted checkpoint %s to %s", source, destination)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpointing.quarantine")
    self._manager.reload()


def _brief(error: BaseException, limit: int = 240) -> str:
  """An exception as one short line: Orbax and TensorStore errors carry whole array specs."""
  text = " ".join(str(error).split())
  if len(text) > limit:
    text = text[:limit].rstrip() + " ..."
  return f"{type(error).__name__}: {text}"


def abstract_like(state: Any, shardings: Any) -> Any:
  """``jax.ShapeDtypeStruct`` leaves with ``state``'s shapes and dtypes and ``shardings``."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      state,
      shardings,
  )
