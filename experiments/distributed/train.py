"""Sharded, multi-process, resumable training of one model with one optimizer.

The training of :mod:`experiments.classification.train` (same model, optimizer factory, train step
and data
order, :mod:`experiments.common.data_order`) on a device mesh
(:mod:`experiments.distributed.sharding`), optionally
across processes (:mod:`experiments.distributed.multihost`), checkpointed every
``config.checkpoint_every`` steps (:mod:`experiments.distributed.checkpointing`) with everything a
resumed
run needs to end, history included, exactly as an uninterrupted one. See ``docs/distributed.md``.

Usage::

  python -m experiments.distributed.train --config configs/distributed/digits_distributed.py \\
      --workdir runs/digits_distributed
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.classification import data as data_lib
from experiments.classification import model_spec, steps, tuned_hparams
from experiments.common import cli, data_order, serialization
from experiments.common import hardware as hardware_lib
from experiments.common import optimizers as optimizer_lib
from experiments.common.hlo import count_collectives
from experiments.common.tables import markdown_table
from experiments.distributed import checkpointing, sharding
from experiments.distributed import multihost as distributed_lib
from experiments.distributed import schema as distributed_schema


@dataclasses.dataclass
class DistributedRunResult:
  """What :func:`train_and_evaluate` did.

  Attributes:
    state: the final train state (global, sharded arrays).
    start_step: the step training started from (0, or the restored checkpoint's step).
    final_step: the step training stopped at.
    total_steps: the steps of the full run (``num_epochs * steps_per_epoch``).
    history: one record per evaluated epoch end: step, epoch, train and test loss/accuracy.
    mesh_shape: ``{"data": ..., "model": ...}``.
    num_processes: ``jax.process_count()``.
    state_partition: ``{path: partition spec}`` of every state leaf.
    step_collectives: collectives in the compiled training step (:func:`count_collectives`).
    compile_time_s: ahead-of-time compilation of the training step.
    train_time_s: time inside the training steps (including host-to-device batch copies).
    checkpoint_time_s: time spent in checkpoint saves (the synchronous part of async saves).
  """

  state: steps.TrainState
  start_step: int
  final_step: int
  total_steps: int
  history: list[dict[str, float]]
  mesh_shape: dict[str, int]
  num_processes: int
  state_partition: dict[str, str]
  step_collectives: dict[str, int]
  compile_time_s: float
  train_time_s: float
  checkpoint_time_s: float


def make_step_fn(
    graphdef: Any,
    optimizer: Any,
    state_shardings: Any,
    mesh: jax.sharding.Mesh,
) -> Any:
  """The jit-compiled sharded training step ``(state, batch, step_keys, index) -> (state, m)``.

  ``step_keys[index]`` is the step's dropout key (the epoch's keys are passed whole, so one
  replicated array serves the epoch). The input state's buffers are donated.
  """
  def step(
      state: steps.TrainState, batch: Any, step_keys: jax.Array, index: jax.Array
  ) -> tuple[steps.TrainState, dict[str, jax.Array]]:
    return steps.train_step(graphdef, optimizer, state, batch, step_keys[index])

  everywhere = sharding.replicated(mesh)
  examples = sharding.batch_sharding(mesh)
  return jax.jit(
      step,
      in_shardings=(state_shardings, (examples, examples), everywhere, everywhere),
      out_shardings=(state_shardings, everywhere),
      donate_argnums=0,
  )


@dataclasses.dataclass
class RunProgress:
  """What a run has recorded besides its train state; checkpointed so a resume loses nothing.

  Attributes:
    history: one record per finished epoch (see :class:`DistributedRunResult`).
    epoch_steps: the metrics of each step of the unfinished epoch (host values), whose means
      become the epoch's train loss and accuracy.
  """

  history: list[dict[str, float]] = dataclasses.field(default_factory=list)
  epoch_steps: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)

  def add_steps(self, metrics: list[dict[str, np.ndarray]]) -> None:
    """Records the host values of steps' metrics, in step order."""
    self.epoch_steps.extend(metrics)

  def end_epoch(self, *, step: int, epoch: int, evaluation: dict[str, Any]) -> None:
    """Appends the epoch's record: means of its steps' metrics and the test evaluation."""
    means = jax.tree.map(lambda *values: np.mean(values), *self.epoch_steps)
    self.epoch_steps = []
    self.history.append({
        "step": step, "epoch": epoch,
        "train_loss": float(means["loss"]), "train_accuracy": float(means["accuracy"]),
        "test_loss": float(evaluation["loss"]),
        "test_accuracy": float(evaluation["accuracy"]),
    })

  def to_json(self) -> dict[str, Any]:
    """Plain JSON; each step metric keeps its dtype so the restored means are bitwise equal."""
    names = sorted(self.epoch_steps[0]) if self.epoch_steps else []
    return {
        "history": list(self.history),
        "epoch_steps": {
            name: {
                "dtype": str(np.asarray(self.epoch_steps[0][name]).dtype),
                # float() of a float32 or float16 value is exact, and so is its JSON text.
                "values": [float(step[name]) for step in self.epoch_steps],
            }
            for name in names
        },
    }

  @classmethod
  def from_json(cls, record: dict[str, Any] | None) -> RunProgress:
    """The inverse of :meth:`to_json`; ``None`` (a checkpoint without it) is empty progress."""
    if record is None:
      return cls()
    columns = {
        name: [np.asarray(value, dtype=column["dtype"]) for value in column["values"]]
        for name, column in record["epoch_steps"].items()
    }
    if len({len(values) for values in columns.values()}) > 1:
      raise checkpointing.CheckpointCorruptedError("the checkpoint's step metrics are ragged.")
    steps = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return cls(history=[dict(entry) for entry in record["history"]], epoch_steps=steps)


def describe_run(config: ml_collections.ConfigDict, hparams: dict[str, Any]) -> dict[str, Any]:
  """The settings a checkpoint must agree with to be resumed (JSON, stored with it).

  ``num_epochs`` is among them because it fixes every epoch's data order (the epoch keys are
  splits of the seed's data key into ``num_epochs`` parts).
  """
  facts = {
      "optimizer": config.optimizer,
      "model": config.model,
      "model_kwargs": config.model_kwargs,
      "dataset": config.dataset,
      "num_epochs": config.num_epochs,
      "lr_schedule": config.lr_schedule,
      "hparams": hparams,
  }
  return json.loads(json.dumps(serialization.to_jsonable(facts)))


def check_resumable(
    directory: Any,
    position: checkpointing.DataPosition,
    facts: dict[str, Any],
    *,
    run_facts: dict[str, Any],
    total_steps: int,
) -> None:
  """Raises :class:`checkpointing.CheckpointMismatchError` if this run cannot continue that one.

  ``facts`` are the checkpoint's (:func:`describe_run` of the run that wrote it), ``run_facts``
  this run's. The message is one line naming the setting, both values and the ways out.
  """
  ways_out = (
      "rerun with the checkpoint's settings, pass another --workdir, or --config.resume=False "
      "to start over"
  )
  for key, value in run_facts.items():
    if key not in facts:  # Written before this fact was recorded.
      continue
    stored = facts[key]
    if key == "hparams" and isinstance(stored, dict) and isinstance(value, dict):
      for name in sorted(set(stored) | set(value)):
        if stored.get(name) != value.get(name):
          raise checkpointing.CheckpointMismatchError(
              f"the checkpoint in {directory} was written with {name}={stored.get(name)!r}, "
              f"but config.optimizers.{run_facts['optimizer']}.{name}={value.get(name)!r}; "
              f"{ways_out}."
          )
    elif stored != value:
      raise checkpointing.CheckpointMismatchError(
          f"the checkpoint in {directory} was written with {key}={stored!r}, but "
          f"config.{key}={value!r}; {ways_out}."
      )
  if position.step > total_steps:
    raise checkpointing.CheckpointMismatchError(
        f"the checkpoint in {directory} is at step {position.step}, past this run's "
        f"{total_steps} steps; {ways_out}."
    )


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """The model, optimizer and mesh of a run, and the train state's layout on the mesh.

  Attributes:
    spec: the model spec (:func:`.model_spec.model_spec`).
    graphdef: the model's graph definition.
    hparams: the optimizer's resolved hyperparameters.
    optimizer: the optax optimizer (its schedule spans ``total_steps``).
    mesh: the ``(data, model)`` device mesh.
    abstract_state: shapes and dtypes of the train state.
    state_shardings: the sharding of every train state leaf.
    init_fn: makes the initial train state from the seed (a function of nothing).
    steps_per_epoch: batches per epoch (the remainder of the training set is dropped).
    total_steps: the steps of the full run (``num_epochs * steps_per_epoch``).
    last_step: the step this invocation stops at (``config.stop_after_steps``, 0: the end).
  """

  spec: Any
  graphdef: Any
  hparams: dict[str, Any]
  optimizer: Any
  mesh: jax.sharding.Mesh
  abstract_state: Any
  state_shardings: Any
  init_fn: Callable[[], steps.TrainState]
  steps_per_epoch: int
  total_steps: int
  last_step: int


class CompiledStep(NamedTuple):
  """The ahead-of-time compiled training step (:func:`make_step_fn`) and what compiling showed."""

  fn: Any
  compile_time_s: float
  collectives: dict[str, int]


def check_run_config(
    config: ml_collections.ConfigDict, num_examples: int, mesh: jax.sharding.Mesh
) -> None:
  """Raises ``ValueError`` naming the first setting this run cannot train with."""
  if config.num_epochs < 1:
    raise ValueError(f"config.num_epochs must be >= 1; got {config.num_epochs}.")
  stop_after = int(config.stop_after_steps)
  if stop_after < 0:
    raise ValueError(f"config.stop_after_steps must be >= 0 (0: no early stop); got {stop_after}.")
  if not 1 <= config.batch_size <= num_examples:
    raise ValueError(f"config.batch_size must be in [1, {num_examples}]; got {config.batch_size}.")
  if config.batch_size % mesh.shape[sharding.DATA_AXIS]:
    raise ValueError(
        f"config.batch_size={config.batch_size} must be a multiple of the mesh's data axis "
        f"({mesh.shape[sharding.DATA_AXIS]} devices)."
    )


def setup_run(
    config: ml_collections.ConfigDict, dataset: data_lib.Dataset, mesh: jax.sharding.Mesh
) -> RunSetup:
  """Model, optimizer and sharded state layout of a checked config (:func:`check_run_config`)."""
  spec = model_spec.model_spec(config, dataset)
  graphdef = model_spec.model_graphdef(spec)
  hparams = tuned_hparams.resolve_hparams(config, config.optimizer)
  steps_per_epoch = dataset.train_images.shape[0] // config.batch_size
  total_steps = steps_per_epoch * config.num_epochs
  stop_after = int(config.stop_after_steps)
  optimizer = optimizer_lib.make_optimizer(
      config.optimizer, hparams, schedule=config.lr_schedule, total_steps=total_steps
  )

  # The keys are derived inside the compiled functions from the seed (data_order.seed_keys
  # inside traced code only), so that every process computes them identically and no
  # process-local array enters a multi-process program.
  def init_fn() -> steps.TrainState:
    return steps.init_train_state(spec, optimizer, data_order.seed_keys(config.seed)[0])

  abstract_state = jax.eval_shape(init_fn)
  state_shardings = sharding.train_state_shardings(
      optimizer, abstract_state, mesh, int(config.mesh.min_shard_size)
  )
  return RunSetup(
      spec=spec, graphdef=graphdef, hparams=hparams, optimizer=optimizer, mesh=mesh,
      abstract_state=abstract_state, state_shardings=state_shardings, init_fn=init_fn,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      last_step=total_steps if stop_after == 0 else min(total_steps, stop_after),
  )


def data_position(
    config: ml_collections.ConfigDict, setup: RunSetup, step: int
) -> checkpointing.DataPosition:
  """The data position after ``step`` steps of this run."""
  return checkpointing.DataPosition.at(
      step, steps_per_epoch=setup.steps_per_epoch, batch_size=config.batch_size, seed=config.seed
  )


def make_checkpointer(
    config: ml_collections.ConfigDict, run_dir: Any
) -> checkpointing.TrainCheckpointer:
  """The run's checkpointer, writing to ``run_dir/checkpoints``."""
  return checkpointing.TrainCheckpointer(
      run_dir / "checkpoints",
      save_every=int(config.checkpoint_every),
      max_to_keep=int(config.max_checkpoints_to_keep),
      async_save=bool(config.async_checkpointing),
  )


def restore_or_initialize(
    config: ml_collections.ConfigDict,
    setup: RunSetup,
    checkpointer: checkpointing.TrainCheckpointer,
    run_facts: dict[str, Any],
) -> tuple[steps.TrainState, checkpointing.DataPosition, dict[str, Any] | None]:
  """The newest usable checkpoint that agrees with this run, or the initial state at step 0.

  Returns ``(state, position, extra)``; ``extra`` is ``None`` when nothing was restored.
  """
  return checkpointer.restore_or_initialize(
      checkpointing.abstract_like(setup.abstract_state, setup.state_shardings),
      initialize=jax.jit(setup.init_fn, out_shardings=setup.state_shardings),
      start=data_position(config, setup, 0),
      resume=bool(config.resume),
      fallback=bool(config.checkpoint_fallback),
      validate=functools.partial(
          check_resumable, checkpointer.directory, run_facts=run_facts,
          total_steps=setup.total_steps,
      ),
  )


def compile_step(
    config: ml_collections.ConfigDict,
    dataset: data_lib.Dataset,
    setup: RunSetup,
    state: steps.TrainState,
) -> CompiledStep:
  """Lowers and compiles the sharded training step for ``state``'s layout; times the compile."""
  step_fn = make_step_fn(setup.graphdef, setup.optimizer, setup.state_shardings, setup.mesh)
  everywhere = sharding.replicated(setup.mesh)
  examples = sharding.batch_sharding(setup.mesh)
  batch_shape = (config.batch_size, *dataset.train_images.shape[1:])
  compile_start = time.perf_counter()
  compiled = step_fn.lower(
      state,
      (jax.ShapeDtypeStruct(batch_shape, dataset.train_images.dtype, sharding=examples),
       jax.ShapeDtypeStruct((config.batch_size,), dataset.train_labels.dtype, sharding=examples)),
      jax.eval_shape(lambda: jax.random.split(data_order.seed_keys(config.seed)[1],
                                              setup.steps_per_epoch)),
      jax.ShapeDtypeStruct((), jnp.int32, sharding=everywhere),
  ).compile()
  compile_time = time.perf_counter() - compile_start
  return CompiledStep(compiled, compile_time, count_collectives(compiled.as_text()))


class TrainLoop:
  """The body of the step loop: a step, an epoch's end, a checkpoint save.

  Carries what the loop needs between steps besides the train state: the epoch's batch order
  and step keys, the metrics of the epoch's steps, the run's :class:`RunProgress` and timings.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      dataset: data_lib.Dataset,
      setup: RunSetup,
      compiled: CompiledStep,
      checkpointer: checkpointing.TrainCheckpointer,
      run_facts: dict[str, Any],
      progress: RunProgress,
  ) -> None:
    self.dataset = dataset
    self.setup = setup
    self.step_fn = compiled.fn
    self.checkpointer = checkpointer
    self.run_facts = run_facts
    self.progress = progress
    self.everywhere = sharding.replicated(setup.mesh)
    self.examples = sharding.batch_sharding(setup.mesh)
    num_examples = dataset.train_images.shape[0]

    @functools.partial(jax.jit, out_shardings=(self.everywhere, self.everywhere))
    def epoch_plan(epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
      data_key = data_order.seed_keys(config.seed)[1]
      epoch_key = data_order.epoch_keys(data_key, config.num_epochs)[epoch]
      return data_order.epoch_plan(epoch_key, num_examples, config.batch_size)

    self.epoch_plan = epoch_plan
    self.test_images = sharding.host_to_global(dataset.test_images, self.everywhere)
    self.test_labels = sharding.host_to_global(dataset.test_labels, self.everywhere)
    self.eval_fn = jax.jit(
        functools.partial(steps.evaluate, setup.graphdef, batch_size=config.eval_batch_size),
        out_shardings=self.everywhere,
    )
    self.train_time_s = 0.0
    self.checkpoint_time_s = 0.0
    # Metrics of the current epoch's steps: those run before a resume come from the checkpoint
    # (host values), the rest are device arrays fetched when the epoch ends or a checkpoint is due.
    self.epoch_metrics: list[dict[str, jax.Array]] = []
    self.batches_host: np.ndarray | None = None
    self.step_keys: jax.Array | None = None

  def run_step(self, state: steps.TrainState, step: int) -> steps.TrainState:
    """Step ``step`` (counted from 0) on its batch; the new state after it.

    The time from the batch's copy to the device to the step's end counts as training time.
    """
    epoch, index = divmod(step, self.setup.steps_per_epoch)
    if self.batches_host is None or index == 0:
      batches, self.step_keys = self.epoch_plan(
          sharding.host_to_global(np.int32(epoch), self.everywhere)
      )
      self.batches_host = distributed_lib.fetch(batches)
    indices = self.batches_host[index]
    tick = time.perf_counter()
    batch = sharding.host_to_global(
        (self.dataset.train_images[indices], self.dataset.train_labels[indices]), self.examples
    )
    state, metrics = self.step_fn(
        state, batch, self.step_keys, sharding.host_to_global(np.int32(index), self.everywhere)
    )
    self.epoch_metrics.append(metrics)
    if (step + 1) % self.setup.steps_per_epoch == 0 or step + 1 == self.setup.last_step:
      # Dispatch is asynchronous: wait for the epoch's steps so the time counts their work.
      jax.block_until_ready(state)
    self.train_time_s += time.perf_counter() - tick
    return state

  def end_epoch(self, state: steps.TrainState, step: int) -> None:
    """At an epoch's end (after ``step`` steps): evaluates and records the epoch."""
    evaluation = distributed_lib.fetch(self.eval_fn(state, self.test_images, self.test_labels))
    self.fetch_step_metrics()
    self.progress.end_epoch(
        step=step, epoch=step // self.setup.steps_per_epoch, evaluation=evaluation
    )

  def maybe_save(self, state: steps.TrainState, position: checkpointing.DataPosition) -> bool:
    """Saves if a checkpoint is due, at the last step or on a preemption notice (timed).

    Returns whether a preemption notice was received (the run must then stop).
    """
    step = position.step
    tick = time.perf_counter()
    preempted = self.checkpointer.reached_preemption(step)
    force = step == self.setup.last_step or preempted
    if force or self.checkpointer.should_save(step):
      self.fetch_step_metrics()
      self.save(state, position, force=force)
    self.checkpoint_time_s += time.perf_counter() - tick
    return preempted

  def fetch_step_metrics(self) -> None:
    """Moves the host values of the epoch's step metrics so far into the progress."""
    self.progress.add_steps(distributed_lib.fetch(self.epoch_metrics))
    self.epoch_metrics = []

  def save(
      self, state: steps.TrainState, position: checkpointing.DataPosition, *, force: bool
  ) -> None:
    """Saves a checkpoint of ``state`` at ``position`` with the run's facts and progress."""
    self.checkpointer.save(
        state, position, force=force, extra={**self.run_facts, "progress": self.progress.to_json()}
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> DistributedRunResult:
  """Trains ``config.optimizer`` on a device mesh, resuming from and writing checkpoints.

  Args:
    config: a config such as ``configs/distributed/digits_distributed.py``.
    workdir: output folder, local or ``gs://...``; checkpoints go to ``workdir/checkpoints``
      (it must be one folder that every process sees).
    dataset: the loaded data set (default: ``config.dataset``).
    devices: devices of the mesh (default: all devices of all processes).

  Returns:
    The :class:`DistributedRunResult`; process 0 also writes ``summary.json`` and
    ``summary.md`` into ``workdir``.
  """
  distributed_lib.initialize(config.distributed)
  run_dir = checkpointing.as_checkpoint_path(workdir)
  run_dir.mkdir(parents=True, exist_ok=True)
  dataset = dataset if dataset is not None else data_lib.load_config_dataset(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  check_run_config(config, dataset.train_images.shape[0], mesh)
  setup = setup_run(config, dataset, mesh)

  checkpointer = make_checkpointer(config, run_dir)
  run_facts = describe_run(config, setup.hparams)
  state, position, restored = restore_or_initialize(config, setup, checkpointer, run_facts)
  progress = RunProgress.from_json((restored or {}).get("progress"))
  compiled = compile_step(config, dataset, setup, state)
  loop = TrainLoop(config, dataset, setup, compiled, checkpointer, run_facts, progress)

  start_step = step = position.step
  while step < setup.last_step:
    state = loop.run_step(state, step)
    step += 1
    position = data_position(config, setup, step)
    if step % setup.steps_per_epoch == 0:
      loop.end_epoch(state, step)
    if loop.maybe_save(state, position):
      logging.warning("preemption notice: saved step %d and stopped; rerun to resume", step)
      break
  if step == start_step and restored is None:
    loop.save(state, position, force=True)  # Nothing ran nor was restored: save the start.
  checkpointer.close()

  result = DistributedRunResult(
      state=state, start_step=start_step, final_step=step, total_steps=setup.total_steps,
      history=progress.history, mesh_shape=dict(mesh.shape), num_processes=jax.process_count(),
      state_partition=sharding.describe(setup.state_shardings),
      step_collectives=compiled.collectives, compile_time_s=compiled.compile_time_s,
      train_time_s=loop.train_time_s, checkpoint_time_s=loop.checkpoint_time_s,
  )
  if distributed_lib.is_primary():
    write_summary(run_dir, config, result)
  return result


def write_summary(
    workdir: Any, config: ml_collections.ConfigDict, result: DistributedRunResult
) -> None:
  """``summary.json`` (everything but the state) and ``summary.md`` (a table per epoch)."""
  fields: dict[str, Any] = {
      field.name: getattr(result, field.name)
      for field in dataclasses.fields(result) if field.name != "state"
  }
  fields["optimizer"] = config.optimizer
  fields["model"] = config.model
  fields["devices"] = [str(device) for device in jax.devices()]
  fields["hardware"] = hardware_lib.describe()
  (workdir / "summary.json").write_text(json.dumps(fields, indent=2))
  steps_run = result.final_step - result.start_step
  table = markdown_table(
      ["epoch", "step", "train loss", "train accuracy", "test loss", "test accuracy"],
      [[record["epoch"], record["step"], f"{record['train_loss']:.4f}",
        f"{record['train_accuracy']:.4f}", f"{record['test_loss']:.4f}",
        f"{record['test_accuracy']:.4f}"] for record in result.history],
  )
  lines = [
      f"# {config.name}: {config.optimizer} on the {config.model} model, a {result.mesh_shape} "
      f"mesh, {result.num_processes} process(es)",
      "",
      f"Steps {result.start_step} to {result.final_step} of {result.total_steps}; "
      f"compile {result.compile_time_s:.2f} s, training {result.train_time_s:.2f} s "
      f"({steps_run / max(result.train_time_s, 1e-9):.1f} steps/s), checkpoint saves "
      f"{result.checkpoint_time_s:.2f} s. Collectives in the compiled step: "
      + ", ".join(f"{name} {count}" for name, count in result.step_collectives.items()) + ". "
      f"Hardware: {hardware_lib.summary_line(fields['hardware'])}.",
      "",
      table,
  ]
  (workdir / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: ``--config <file>[:overrides]`` and ``--workdir`` (Flax-example style)."""

  def train(config: ml_collections.ConfigDict, workdir: str) -> None:
    result = train_and_evaluate(config, workdir)
    if distributed_lib.is_primary():
      final = result.history[-1] if result.history else {}
      print(
          f"steps {result.start_step}->{result.final_step} of {result.total_steps} on mesh "
          f"{result.mesh_shape} x {result.num_processes} process(es); "
          f"test accuracy {final.get('test_accuracy', float('nan')):.4f}; wrote {workdir}"
      )

  cli.run_job(train, default_config="configs/distributed/digits_distributed.py",
              schema=distributed_schema.SCHEMA, argv=argv)


if __name__ == "__main__":
  main()
