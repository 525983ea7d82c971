r"""The compiled sweep program: one run as pure pieces, vmapped over seeds and trials, and the
trial axis sharded over a device mesh.

A run (one trial's hyperparameters, one seed) is :func:`make_run_parts`' initialisation,
training of a span of epochs and evaluation, composed into a pure function by
:func:`make_trial_fn`; :func:`make_chunk_program` vmaps it over seeds and trials and, through
``jax.shard_map`` over a :class:`TrialMesh`, gives each device its share of the trials (the data
and keys replicated, only the metrics gathered). :func:`run_vmapped` trains a set of trials
chunk by chunk with that one compiled program. The method is in ``docs/sweeps.md``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from experiments.classification import train
from experiments.common import cli, data_order
from experiments.common import optimizers as optimizer_lib
from experiments.distributed import multihost
from experiments.sweeps.validation_split import SweepData

TRIAL_AXIS = "trials"
TRIAL_RANDOMNESS = ("shared", "per_trial")


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
  """What every run of one optimizer shares (hashable, so jit can treat it as static)."""

  spec: train.ModelSpec
  optimizer: str
  fixed: tuple[tuple[str, Any], ...]
  batch_size: int
  num_epochs: int
  schedule: str = "constant"
  eval_batch_size: int = 1000

  def steps_per_epoch(self, num_train: int) -> int:
    return num_train // self.batch_size


def run_keys(seeds: Sequence[int], num_trials: int, trial_randomness: str) -> jax.Array:
  """The key of every run, ``jax.random.key(seed)``; each run splits it with
  :func:`experiments.common.data_order.seed_keys`.

  ``shared``: shape ``(seeds,)``; every trial of a seed starts from the same weights and sees
  the same batches and dropout masks. ``per_trial``: shape ``(trials, seeds)``, the seed's key
  folded with the trial index, so every run draws its own — the layout of independent jobs,
  kept to measure what sharing saves.
  """
  if trial_randomness not in TRIAL_RANDOMNESS:
    raise ValueError(
        f"trial_randomness must be one of {TRIAL_RANDOMNESS}; got {trial_randomness!r}."
    )
  keys = jnp.stack([jax.random.key(int(seed)) for seed in seeds])
  if trial_randomness == "shared":
    return keys
  trials = jnp.arange(num_trials)
  return jax.vmap(lambda trial: jax.vmap(lambda key: jax.random.fold_in(key, trial))(keys))(
      trials
  )


# ----------------------------------------------------------------------------------------------
# One run as pure pieces.


class RunParts(NamedTuple):
  """A run's pure pieces; every function takes the swept hyperparameters as scalars."""

  init: Callable[[dict[str, jax.Array], jax.Array, SweepData], tuple[train.TrainState, jax.Array]]
  train_epochs: Callable[..., tuple[train.TrainState, jax.Array]]
  evaluate: Callable[[train.TrainState, SweepData], dict[str, jax.Array]]


def make_run_parts(setup: TrainingSetup) -> RunParts:
  """``init(hparams, key, data) -> (state, data_key)``, ``train_epochs(hparams, state, epoch_keys,
  data) -> (state, epoch losses)`` and ``evaluate(state, data) -> metrics``.

  The key splits into initialisation and data keys as everywhere
  (:mod:`experiments.common.data_order`); each epoch is one
  :func:`experiments.classification.train.train_epoch` inside a ``lax.scan`` over the given
  epoch keys, so a run continued from its state with the next epochs' keys is the same run (the
  state holds the step count, which the schedule reads). The metrics are the final loss and
  accuracy on each split in inference mode (:data:`~experiments.sweeps.selection.RUN_METRICS`).
  """
  graphdef = train.model_graphdef(setup.spec)
  fixed = dict(setup.fixed)

  def optimizer(hparams: Mapping[str, jax.Array], num_train: int) -> Any:
    total_steps = setup.steps_per_epoch(num_train) * setup.num_epochs
    return optimizer_lib.make_optimizer(
        setup.optimizer, {**fixed, **hparams}, schedule=setup.schedule, total_steps=total_steps
    )

  def init(
      hparams: dict[str, jax.Array], key: jax.Array, data: SweepData
  ) -> tuple[train.TrainState, jax.Array]:
    init_key, data_key = data_order.seed_keys(key)
    tx = optimizer(hparams, data.train_images.shape[0])
    return train.init_train_state(setup.spec, tx, init_key), data_key

  def train_epochs(
      hparams: dict[str, jax.Array], state: train.TrainState, epoch_keys: jax.Array,
      data: SweepData,
  ) -> tuple[train.TrainState, jax.Array]:
    tx = optimizer(hparams, data.train_images.shape[0])

    def epoch(
        state: train.TrainState, epoch_key: jax.Array
    ) -> tuple[train.TrainState, jax.Array]:
      state, metrics = train.train_epoch(
          graphdef, tx, state, data.train_images, data.train_labels, epoch_key,
          batch_size=setup.batch_size,
      )
      return state, metrics["loss"]

    return jax.lax.scan(epoch, state, epoch_keys)

  def evaluate(state: train.TrainState, data: SweepData) -> dict[str, jax.Array]:
    metrics = {}
    for split in ("train", "validation", "test"):
      evaluation = train.evaluate(
          graphdef, state, getattr(data, f"{split}_images"), getattr(data, f"{split}_labels"),
          batch_size=setup.eval_batch_size,
      )
      metrics[f"{split}_loss"] = evaluation["loss"]
      metrics[f"{split}_accuracy"] = evaluation["accuracy"]
    return metrics

  return RunParts(init, train_epochs, evaluate)


def make_trial_fn(
    setup: TrainingSetup, trace_counter: dict[str, int] | None = None
) -> Callable[[dict[str, jax.Array], jax.Array, SweepData], dict[str, jax.Array]]:
  """A whole run as a pure function ``(hparams, key, data) -> metrics``.

  ``hparams`` maps the swept names to scalars (arrays or tracers); the setup's fixed values
  complete them. The metrics are the per-epoch mean training losses (``epoch_train_loss``,
  training mode, before each update) and :func:`make_run_parts`' final evaluation.

  ``trace_counter[setup.optimizer]`` is incremented each time the function is traced, which is
  how the sweep verifies that one compilation served every chunk.
  """
  parts = make_run_parts(setup)

  def run(hparams: dict[str, jax.Array], key: jax.Array, data: SweepData) -> dict[str, jax.Array]:
    if trace_counter is not None:  # Python side effect: runs at trace time only.
      trace_counter[setup.optimizer] = trace_counter.get(setup.optimizer, 0) + 1
    state, data_key = parts.init(hparams, key, data)
    state, epoch_losses = parts.train_epochs(
        hparams, state, data_order.epoch_keys(data_key, setup.num_epochs), data
    )
    return {"epoch_train_loss": epoch_losses, **parts.evaluate(state, data)}

  return run


# ----------------------------------------------------------------------------------------------
# The trial axis over devices.


class TrialMesh:
  """A one-axis mesh (``trials``) over devices, possibly of several processes.

  Every compiled sweep program runs under ``jax.shard_map`` over it: each device trains its
  share of a chunk's trials on a replicated copy of the data and keys, and only the metrics
  (and, for successive halving, the surviving states) leave the devices.
  """

  def __init__(self, devices: Sequence[jax.Device] | None = None):
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
      raise ValueError("a trial mesh needs at least one device.")
    # An Auto axis: XLA places what runs outside shard_map (re-packing survivors' states).
    self.mesh = jax.make_mesh((len(devices),), (TRIAL_AXIS,), (jax.sharding.AxisType.Auto,),
                              devices=devices)

  @property
  def size(self) -> int:
    return int(self.mesh.size)

  def width(self, num_trials: int) -> int:
    """The smallest multiple of the device count that holds ``num_trials``."""
    return math.ceil(num_trials / self.size) * self.size

  def sharding(self, over_trials: bool) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(TRIAL_AXIS) if over_trials else PartitionSpec())

  def put(self, tree: Any, over_trials: bool) -> Any:
    """Global arrays of ``tree``'s leaves, split along their first axis or replicated.

    Every process passes the same values (the sweep is deterministic), and each keeps the
    pieces its devices hold; typed PRNG keys travel as their key data.
    """
    sharding = self.sharding(over_trials)

    def one(leaf: Any) -> jax.Array:
      if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(one(jax.random.key_data(leaf)))
      if (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
          and leaf.sharding == sharding):
        return leaf
      value = np.asarray(jax.device_get(leaf))
      return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, tree)

  def fetch(self, tree: Any) -> Any:
    """NumPy copies of global arrays, gathered over the processes (all must call it)."""
    return multihost.fetch(tree)

  def shard(self, fn: Callable[..., Any], over_trials: Sequence[bool]) -> Callable[..., Any]:
    """``shard_map(fn)``: arguments split along ``trials`` where ``over_trials``, else
    replicated; every output split along ``trials``."""
    specs = tuple(PartitionSpec(TRIAL_AXIS) if split else PartitionSpec()
                  for split in over_trials)
    # No collectives inside: each device's trials are independent. (The varying-axis check
    # would ask every scan carry that starts replicated, such as a seed's initial weights, to
    # be cast to varying first.)
    return jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=PartitionSpec(TRIAL_AXIS),
                         check_vma=False)


def trial_devices(requested: int, num_trials: int) -> list[jax.Device]:
  """The devices a sweep shards its trials over: every device of every process (``requested``
  0) or the first ``requested``; refused (naming ``devices``) when there are more devices than
  ``num_trials``, the fewest trials one of the sweep's compiled calls holds."""
  available = jax.devices()
  if requested < 0 or requested > len(available):
    raise cli.ConfigError(
        f"devices={requested}: must be 0 (all) or between 1 and the {len(available)} device(s) "
        "present."
    )
  devices = available if requested == 0 else available[:requested]
  if len(devices) > num_trials:
    raise cli.ConfigError(
        f"devices: {len(devices)} device(s) but a compiled call of this sweep holds only "
        f"{num_trials} trial(s); every device needs one (set devices <= {num_trials})."
    )
  return devices


# ----------------------------------------------------------------------------------------------
# The vmapped program over chunks of trials.


def make_chunk_program(
    trial_fn: Callable[[dict[str, jax.Array], jax.Array, SweepData], dict[str, jax.Array]],
    per_trial_keys: bool = False,
    mesh: TrialMesh | None = None,
) -> jax.stages.Wrapped:
  """``jit(shard_map(vmap_trials(vmap_seeds(trial_fn))))``: metrics ``(chunk, seeds, ...)``.

  The inner vmap maps the seeds' keys with the hyperparameters fixed; the outer one maps the
  hyperparameters with the keys shared (keys of shape ``(seeds,)``), so per-seed randomness
  (initial weights, batches, dropout masks) is computed once per seed, not once per trial.
  With ``per_trial_keys`` the keys have shape ``(chunk, seeds)`` and the outer vmap maps them
  too. With a ``mesh`` each device runs the vmapped program on its slice of the chunk (the
  chunk must be a multiple of ``mesh.size``); without one, it is the plain vmapped program.
  """
  over_seeds = jax.vmap(trial_fn, in_axes=(None, 0, None))
  over_trials = jax.vmap(over_seeds, in_axes=(0, 0 if per_trial_keys else None, None))
  if mesh is None:
    return jax.jit(over_trials)
  return jax.jit(mesh.shard(over_trials, (True, per_trial_keys, False)))


def chunk_slices(num_trials: int, chunk_size: int) -> list[tuple[np.ndarray, int]]:
  """Index arrays of the chunks, each of length ``chunk_size``, and the count of real trials.

  The last chunk is padded by repeating its last trial: valid hyperparameters (no spurious
  divergence) and the same shape as every other chunk (no recompilation).
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
  chunks = []
  for start in range(0, num_trials, chunk_size):
    real = min(chunk_size, num_trials - start)
    indices = np.arange(start, start + chunk_size).clip(max=num_trials - 1)
    chunks.append((indices, real))
  return chunks


@dataclasses.dataclass
class ModeTiming:
  """Seconds one way of running a set of trials took."""

  compile_s: float = 0.0
  compile_cpu_s: float = 0.0
  run_s: float = 0.0
  run_cpu_s: float = 0.0
  runs: int = 0
  runs_timed: int = 0  # fewer than runs where the time is extrapolated (the Python loop)
  traces: int = 0
  run_s_repeats: list[float] = dataclasses.field(default_factory=list)

  def record(self, wall_s: float, cpu_s: float) -> None:
    """Adds one timed repetition; run times are the minimum over repetitions, the usual
    estimate of the undisturbed time on a machine shared with other work (as in ``timeit``)."""
    self.run_s_repeats.append(wall_s)
    self.run_s = min(self.run_s_repeats)
    self.run_cpu_s = cpu_s if len(self.run_s_repeats) == 1 else min(self.run_cpu_s, cpu_s)


class ChunkRunner:
  """One compiled chunk program on a mesh: ``runner(hparams, keys) -> metrics`` (NumPy).

  Compiled ahead of time on the first call's shapes (timed apart); every later call with the
  same width reuses it. ``hparams`` are float32 arrays of length ``width``; ``keys`` are the
  chunk's keys (``(seeds,)`` shared, or ``(width, seeds)``).
  """

  def __init__(
      self,
      trial_fn: Callable[..., dict[str, jax.Array]],
      data: SweepData,
      *,
      per_trial_keys: bool,
      mesh: TrialMesh | None = None,
  ):
    self.mesh = mesh if mesh is not None else TrialMesh(jax.devices()[:1])
    self.per_trial_keys = per_trial_keys
    self.program = make_chunk_program(trial_fn, per_trial_keys, self.mesh)
    self.data = self.mesh.put(data, over_trials=False)
    self.compiled: Any = None
    self.compile_s = self.compile_cpu_s = 0.0

  def _args(self, hparams: Mapping[str, np.ndarray], keys: jax.Array) -> tuple[Any, ...]:
    return (self.mesh.put(dict(hparams), over_trials=True),
            self.mesh.put(keys, over_trials=self.per_trial_keys), self.data)

  def compile(self, hparams: Mapping[str, np.ndarray], keys: jax.Array) -> None:
    """Compiles for these shapes (once), timing it."""
    if self.compiled is None:
      tick, tick_cpu = time.perf_counter(), time.process_time()
      self.compiled = self.program.lower(*self._args(hparams, keys)).compile()
      self.compile_s = time.perf_counter() - tick
      self.compile_cpu_s = time.process_time() - tick_cpu

  def __call__(self, hparams: Mapping[str, np.ndarray], keys: jax.Array) -> dict[str, np.ndarray]:
    self.compile(hparams, keys)
    return self.mesh.fetch(self.compiled(*self._args(hparams, keys)))


def run_vmapped(
    trial_fn: Callable[..., dict[str, jax.Array]],
    swept: Mapping[str, np.ndarray],
    keys: jax.Array,
    data: SweepData,
    chunk_size: int,
    *,
    repeats: int = 1,
    progress: Any = None,
    mesh: TrialMesh | None = None,
) -> tuple[dict[str, np.ndarray], ModeTiming]:
  """Trains every trial x seed with one compiled vmapped program, chunk by chunk.

  ``keys`` come from :func:`run_keys`: ``(seeds,)`` shared by the trials or ``(trials, seeds)``.
  With a ``mesh`` (default: one device) a chunk is rounded up to a multiple of its devices and
  each device trains its share. With ``repeats > 1`` the whole sweep is run that many times and
  timed each time (the results are identical; the last are returned).

  Returns:
    Metrics as NumPy arrays of shape ``(num_trials, num_seeds, ...)`` and the timing (compile
    time measured apart by ahead-of-time compilation).
  """
  num_trials = len(next(iter(swept.values())))
  per_trial = keys.ndim == 2
  runner = ChunkRunner(trial_fn, data, per_trial_keys=per_trial, mesh=mesh)
  chunk_size = runner.mesh.width(min(chunk_size, num_trials))
  hparams = {name: np.asarray(values, np.float32) for name, values in swept.items()}
  chunks = chunk_slices(num_trials, chunk_size)
  num_runs = num_trials * keys.shape[-1]
  timing = ModeTiming(runs=num_runs, runs_timed=num_runs)

  def chunk(indices: np.ndarray) -> tuple[dict[str, np.ndarray], jax.Array]:
    return ({name: values[indices] for name, values in hparams.items()},
            keys[indices] if per_trial else keys)

  runner.compile(*chunk(chunks[0][0]))  # timed apart from the runs
  timing.compile_s, timing.compile_cpu_s = runner.compile_s, runner.compile_cpu_s

  outputs: list[dict[str, np.ndarray]] = []
  for repeat in range(max(1, repeats)):
    outputs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for indices, real in chunks:
      metrics = runner(*chunk(indices))
      outputs.append({name: value[:real] for name, value in metrics.items()})
      if progress is not None and repeat == 0:
        progress.update(real)
    timing.record(time.perf_counter() - wall, time.process_time() - cpu)
  return {name: np.concatenate([out[name] for out in outputs]) for name in outputs[0]}, timing
