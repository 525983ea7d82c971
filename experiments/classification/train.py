"""Functional training of the Flax NNX classifiers with any of the compared optimizers.

The model is split once into a static ``graphdef`` and two pytrees, the trainable ``params``
and the ``model_state`` (batch-norm running statistics); together with the optimizer state and
a step counter they form a :class:`TrainState`. Every function below is pure in those pytrees,
so it can be jit-compiled, vmapped (over seeds, or over hyperparameters by building the
optimizer inside the vmapped function) and sharded without change.

Interface (static arguments first, so ``functools.partial`` binds them):

* ``spec = ModelSpec(name, input_shape, num_classes, kwargs)`` — a hashable description of the
  model; ``graphdef = model_graphdef(spec)`` builds its structure without allocating weights,
  and ``params, model_state = init_variables(spec, key)`` its variables (vmap over keys for
  several seeds).
* ``optimizer = optimizer_lib.make_optimizer(name, hparams, schedule=..., total_steps=...)``
  (:mod:`experiments.common.optimizers`) — every numeric hyperparameter may be a Python number,
  an array or a tracer.
* ``state = init_train_state(spec, optimizer, key)`` — a fresh :class:`TrainState`.
* ``state, metrics = train_step(graphdef, optimizer, state, batch, rng)`` — one step of
  softmax cross-entropy on ``batch = (images, labels)``; ``rng`` drives dropout.
* ``state, metrics = train_epoch(graphdef, optimizer, state, images, labels, rng,
  batch_size=..., augment=...)`` — one pass over a data set that lives on the device: a
  permutation drawn from ``rng``, batches gathered by index inside a ``lax.scan``, so no
  host-to-device copy happens per step. The last incomplete batch is dropped (each epoch
  shuffles anew, so every example is used across epochs).
* ``metrics = eval_step(graphdef, state, batch)`` and ``metrics = evaluate(graphdef, state,
  images, labels, batch_size=...)`` — loss, accuracy and predicted classes in inference mode.

Several seeds in one program::

    train = jax.jit(jax.vmap(
        functools.partial(train_epoch, graphdef, optimizer, batch_size=64),
        in_axes=(0, None, None, 0)))
    states = jax.vmap(lambda k: init_train_state(spec, optimizer, k))(keys)
    states, metrics = train(states, images, labels, epoch_keys)

Several hyperparameter values in one program (the optimizer is built from traced values)::

    def run(hparams, key):
      optimizer = optimizer_lib.make_optimizer("rmsprop", hparams)
      state = init_train_state(spec, optimizer, key)
      return train_epoch(graphdef, optimizer, state, images, labels, key, batch_size=64)
    jax.jit(jax.vmap(run))({"learning_rate": jnp.logspace(-4, -2, 8)}, keys)

:func:`train_and_evaluate` runs one optimizer of a config (several seeds vmapped), evaluates the
test set after every epoch, saves the final variables with Orbax and returns a
:class:`RunResult`; :mod:`experiments.classification.compare` calls it once per optimizer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments.classification import data as data_lib
from experiments.classification import models
from experiments.common import cli, data_order
from experiments.common import optimizers as optimizer_lib

# ----------------------------------------------------------------------------------------------
# Model construction.


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A hashable description of a model: what :func:`.models.build_model` takes.

  Attributes:
    name: one of :data:`experiments.classification.models.MODELS`.
    input_shape: ``(height, width, channels)``.
    num_classes: number of classes.
    kwargs: the model's keyword arguments as sorted ``(name, value)`` pairs (tuples for
      sequences), so that the spec can be a static jit argument.
  """

  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  kwargs: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def create(
      cls, name: str, input_shape: Any, num_classes: int, kwargs: Mapping[str, Any] | None = None
  ) -> ModelSpec:
    """Builds a spec from plain values (lists become tuples)."""
    frozen = tuple(
        sorted((key, tuple(value) if isinstance(value, list) else value)
               for key, value in (kwargs or {}).items())
    )
    shape = tuple(int(size) for size in input_shape)
    return cls(name, shape, int(num_classes), frozen)  # type: ignore[arg-type]

  def build(self, key: jax.Array | int) -> nnx.Module:
    """The initialised module, with weights drawn from ``key``."""
    return models.build_model(
        self.name, self.input_shape, self.num_classes, rngs=nnx.Rngs(params=key),
        **dict(self.kwargs),
    )


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """``nnx.split(model, nnx.Param, ...)``: graph, parameters and the rest (batch statistics).

  Two filters give exactly three parts; flax types the result as two or more.
  """
  return cast(tuple[nnx.GraphDef, nnx.State, nnx.State], nnx.split(model, nnx.Param, ...))


def model_graphdef(spec: ModelSpec) -> nnx.GraphDef:
  """The static structure of ``spec``'s model, built without allocating its weights."""
  graphdef, _, _ = split_params(nnx.eval_shape(lambda: spec.build(0)))
  return graphdef


def init_variables(spec: ModelSpec, key: jax.Array) -> tuple[nnx.State, nnx.State]:
  """``(params, model_state)`` of a freshly initialised model; vmap over ``key`` for seeds."""
  _, params, model_state = split_params(spec.build(key))
  return params, model_state


# ----------------------------------------------------------------------------------------------
# Pure training and evaluation functions.


class TrainState(NamedTuple):
  """Everything that changes during training; a pytree."""

  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  step: jax.Array


def init_train_state(
    spec: ModelSpec, optimizer: optax.GradientTransformation, key: jax.Array
) -> TrainState:
  """A fresh :class:`TrainState`: weights from ``key``, the optimizer's initial state."""
  params, model_state = init_variables(spec, key)
  return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))


def train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    rng: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the mean softmax cross-entropy of ``batch``.

  Args:
    graphdef: the model's structure (:func:`model_graphdef`).
    optimizer: the optax transformation; its ``update`` gets the parameters as third argument.
    state: the current :class:`TrainState`.
    batch: ``(images, labels)``, NHWC float32 and int labels.
    rng: key for the dropout masks.

  Returns:
    The new state and ``{"loss", "accuracy"}`` of the batch (before the update).
  """
  images, labels = batch

  def loss_fn(params: nnx.State) -> tuple[jax.Array, tuple[jax.Array, nnx.State]]:
    model = nnx.merge(graphdef, params, state.model_state, copy=True)
    logits = model(images, train=True, rngs=nnx.Rngs(dropout=rng))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    # Batch norm updated its running statistics inside the call; read them back out.
    _, _, model_state = split_params(model)
    return loss, (logits, model_state)

  (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  new_state = TrainState(params, model_state, opt_state, state.step + 1)
  return new_state, {"loss": loss, "accuracy": accuracy}


def augment_images(images: jax.Array, key: jax.Array, padding: int = 4) -> jax.Array:
  """Random translation by up to ``padding`` pixels (zero padding) and random horizontal flip.

  The standard CIFAR-10 augmentation (He et al., 2016); runs on the device, per batch.
  """
  count, height, width, channels = images.shape
  shift_key, flip_key = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(shift_key, (count, 2), 0, 2 * padding + 1)
  crops = jax.vmap(
      lambda image, offset: jax.lax.dynamic_slice(
          image, (offset[0], offset[1], 0), (height, width, channels)
      )
  )(padded, offsets)
  flip = jax.random.bernoulli(flip_key, 0.5, (count, 1, 1, 1))
  return jnp.where(flip, crops[:, :, ::-1], crops)


def train_epoch(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    *,
    batch_size: int,
    augment: bool = False,
    unroll: int | bool = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One shuffled pass over an on-device data set, as a single ``lax.scan``.

  ``unroll`` is passed to ``lax.scan``. XLA's CPU backend runs convolutions inside a loop body
  several times slower than the same convolutions in straight-line code (measured here: a
  digits CNN epoch of 22 steps took 2.98 s as a rolled scan and 0.44 s fully unrolled), so
  short CPU epochs are best unrolled (``unroll=True``); on GPUs, and for long epochs where
  compile time would grow, keep the default.

  Returns:
    The new state and the mean ``{"loss", "accuracy"}`` over the epoch's batches (measured on
    each batch before its update, in training mode).
  """
  batches, step_keys = data_order.epoch_plan(rng, images.shape[0], batch_size)

  def body(
      carry: TrainState, inputs: tuple[jax.Array, jax.Array]
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    indices, key = inputs
    batch_images = images[indices]
    if augment:
      augment_key, key = jax.random.split(key)
      batch_images = augment_images(batch_images, augment_key)
    return train_step(graphdef, optimizer, carry, (batch_images, labels[indices]), key)

  state, metrics = jax.lax.scan(body, state, (batches, step_keys), unroll=unroll)
  return state, jax.tree.map(jnp.mean, metrics)


def eval_step(
    graphdef: nnx.GraphDef, state: TrainState, batch: tuple[jax.Array, jax.Array]
) -> dict[str, jax.Array]:
  """Inference-mode logits of one batch: per-example ``loss`` and ``predictions``."""
  images, labels = batch
  model = nnx.merge(graphdef, state.params, state.model_state)
  logits = model(images, train=False)
  return {
      "loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      "predictions": jnp.argmax(logits, axis=-1).astype(jnp.int32),
  }


def evaluate(
    graphdef: nnx.GraphDef,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int = 1000,
) -> dict[str, jax.Array]:
  """Mean loss, accuracy and every prediction on a whole (on-device) data set.

  The set is padded to a multiple of ``batch_size`` and evaluated chunk by chunk in a
  ``lax.map`` so memory stays bounded; padded examples are dropped before averaging.
  """
  count = images.shape[0]
  batch_size = min(batch_size, count)
  chunks = math.ceil(count / batch_size)
  pad = chunks * batch_size - count
  padded_images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
  padded_labels = jnp.pad(labels, (0, pad))
  outputs = jax.lax.map(
      lambda batch: eval_step(graphdef, state, batch),
      (
          padded_images.reshape(chunks, batch_size, *images.shape[1:]),
          padded_labels.reshape(chunks, batch_size),
      ),
  )
  losses = outputs["loss"].reshape(-1)[:count]
  predictions = outputs["predictions"].reshape(-1)[:count]
  return {
      "loss": jnp.mean(losses),
      "accuracy": jnp.mean(predictions == labels),
      "predictions": predictions,
  }


# ----------------------------------------------------------------------------------------------
# One optimizer of a config, several seeds.


@dataclasses.dataclass
class RunResult:
  """What :func:`train_and_evaluate` measured for one optimizer over ``num_seeds`` seeds.

  Per-epoch arrays have shape ``(num_seeds, num_epochs)``.
  """

  optimizer: str
  hparams: dict[str, Any]
  seeds: list[int]
  steps_per_epoch: int
  train_loss: np.ndarray
  train_accuracy: np.ndarray
  test_loss: np.ndarray
  test_accuracy: np.ndarray
  test_predictions: np.ndarray  # (num_seeds, n_test) after the last epoch.
  test_labels: np.ndarray
  compile_time_s: float
  train_time_s: float
  eval_time_s: float
  wall_time_s: float

  def steps_to_target(self, target: float) -> list[int | None]:
    """Per seed, the first step count (epoch end) whose test accuracy reaches ``target``."""
    result: list[int | None] = []
    for curve in self.test_accuracy:
      reached = np.flatnonzero(curve >= target)
      result.append(int((reached[0] + 1) * self.steps_per_epoch) if reached.size else None)
    return result


def resolve_hparams(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """``name``'s hyperparameters: the config's, overridden by the sweep's best when
  ``config.tuned_from`` names a sweep result (see :func:`load_tuned_hparams`)."""
  if name not in config.optimizers:
    raise ValueError(
        f"config.optimizers has no entry {name!r}; it has {sorted(config.optimizers)}."
    )
  hparams = dict(config.optimizers[name])
  if config.tuned_from:
    hparams.update(load_tuned_hparams(config.tuned_from, name))
  return hparams


def load_tuned_hparams(path: str | Path, name: str) -> dict[str, Any]:
  """The best hyperparameters of optimizer ``name`` from a sweep result file.

  The file is JSON with a ``best`` mapping from optimizer name to an entry, as written by
  ``experiments/sweeps/sweep.py`` and ``trial_loop.py``. An entry is either the hyperparameters
  themselves or an object holding them under ``hparams`` (or ``hyperparameters``) beside other
  fields such as the score; only keys :func:`.optimizers.make_optimizer` accepts for ``name``
  are taken. An optimizer the sweep did not cover keeps the config's values (an empty result).
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"tuned_from={str(path)!r}: no such sweep result file.")
  with open(path) as handle:
    sweep = json.load(handle)
  best = sweep.get("best") if isinstance(sweep, dict) else None
  if not isinstance(best, dict):
    raise ValueError(f"tuned_from={str(path)!r}: the file has no 'best' mapping per optimizer.")
  entry = best.get(name)
  if entry is None:
    return {}
  if not isinstance(entry, dict):
    raise ValueError(f"tuned_from={str(path)!r}: best[{name!r}] is not an object: {entry!r}.")
  for nested in ("hparams", "hyperparameters"):
    if isinstance(entry.get(nested), dict):
      entry = entry[nested]
      break
  allowed = {"learning_rate", *optimizer_lib.OPTIMIZER_DEFAULTS[name]}
  tuned = {key: value for key, value in entry.items() if key in allowed}
  if "learning_rate" not in tuned:
    raise ValueError(f"tuned_from={str(path)!r}: best[{name!r}] holds no learning_rate.")
  return tuned


EPOCH_LOOPS = ("scan", "python")
# Every field a classification config must hold: the code reads each one and keeps no defaults.
CONFIG_FIELDS = (
    "name", "dataset", "data_dir", "verify_checksums", "model", "model_kwargs", "batch_size",
    "eval_batch_size", "num_epochs", "num_seeds", "seed", "lr_schedule", "augment",
    "target_accuracy", "save_checkpoint", "epoch_loop", "scan_unroll", "vmap_seeds",
    "optimizer", "optimizers", "tuned_from",
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`experiments.common.cli.ConfigError` naming the first field that cannot work.

  Called before any data is loaded or any program compiled, so that a typo costs one line,
  not minutes of training the other optimizers first. Checks names (data set, model,
  optimizers, schedule), sizes, and every optimizer's hyperparameters (baselines too), with
  the sweep's values when ``config.tuned_from`` names one.
  """
  def fail(message: str) -> None:
    raise cli.ConfigError(message)

  missing = [field for field in CONFIG_FIELDS if field not in config]
  if missing:
    fail(f"the config has no field(s) {missing}; every field the code reads must be set in the "
         f"config file (see configs/classification/digits.py).")
  if config.dataset not in data_lib.DATASETS:
    fail(f"config.dataset={config.dataset!r} is not one of {data_lib.DATASETS}.")
  if config.model not in models.MODELS:
    fail(f"config.model={config.model!r} is not one of {models.MODELS}.")
  for field in ("batch_size", "eval_batch_size", "num_epochs", "num_seeds"):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(f"config.{field} must be a whole number >= 1; got {value!r}.")
  if config.epoch_loop not in EPOCH_LOOPS:
    fail(f"config.epoch_loop must be one of {EPOCH_LOOPS}; got {config.epoch_loop!r}.")
  schedule = config.lr_schedule
  if schedule not in optimizer_lib.SCHEDULES:
    fail(f"config.lr_schedule must be one of {optimizer_lib.SCHEDULES}; got {schedule!r}.")
  if not 0.0 < config.target_accuracy <= 1.0:
    fail(f"config.target_accuracy must be in (0, 1]; got {config.target_accuracy!r}.")
  unknown = sorted(set(config.optimizers) - set(optimizer_lib.OPTIMIZERS))
  if unknown:
    fail(f"config.optimizers has unknown optimizer(s) {unknown}; the known ones are "
         f"{optimizer_lib.OPTIMIZERS}.")
  if not config.optimizers:
    fail(f"config.optimizers is empty; name at least one of {optimizer_lib.OPTIMIZERS}.")
  if config.optimizer not in optimizer_lib.OPTIMIZERS:
    fail(f"config.optimizer={config.optimizer!r} is not one of {optimizer_lib.OPTIMIZERS}.")
  tuned_from = config.tuned_from
  if tuned_from and not Path(tuned_from).is_file():
    fail(f"config.tuned_from={tuned_from!r}: no such file. It is written by the sweep: run "
         f"`make sweep` (or python -m experiments.sweeps.sweep --config <a sweep config>) first.")
  for name in config.optimizers:
    try:
      optimizer_lib.make_optimizer(name, resolve_hparams(config, name), schedule=schedule,
                                total_steps=1000)
    except (TypeError, ValueError) as error:
      text = str(error)
      fail(text if text.startswith("optimizers.") else f"config.optimizers.{name}: {text}")


def check_data_fits(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> None:
  """Raises :class:`.cli.ConfigError` if a batch is larger than the training set."""
  num_train = dataset.train_images.shape[0]
  if config.batch_size > num_train:
    raise cli.ConfigError(
        f"config.batch_size={config.batch_size} is larger than the {num_train} training "
        f"images of {dataset.name}; use at most {num_train}."
    )


def model_spec(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> ModelSpec:
  """The :class:`ModelSpec` a config asks for, shaped to the data set."""
  kwargs = config.model_kwargs.to_dict() if config.model_kwargs else {}
  return ModelSpec.create(config.model, dataset.image_shape, dataset.num_classes, kwargs)


def load_config_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The config's data set (``config.dataset``, ``config.data_dir`` and, optionally,
  ``config.verify_checksums``, default true)."""
  return data_lib.load_dataset(
      config.dataset,
      data_dir=config.data_dir or None,
      verify_checksums=bool(config.verify_checksums),
  )


def train_indexed_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    batches: jax.Array,
    step_keys: jax.Array,
    index: jax.Array,
    *,
    augment: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """:func:`train_step` on batch ``index`` of an epoch's ``batches``.

  The batch's indices come from :func:`experiments.common.data_order.epoch_plan`; the examples are
  gathered from the on-device data set inside the compiled step.

  This is the body of :func:`train_epoch` as a function of its own, for driving an epoch from
  Python one compiled step at a time (the fast way on XLA's CPU backend, see
  :func:`train_epoch`) without copying a batch from the host per step.
  """
  indices, key = batches[index], step_keys[index]
  batch_images = images[indices]
  if augment:
    augment_key, key = jax.random.split(key)
    batch_images = augment_images(batch_images, augment_key)
  return train_step(graphdef, optimizer, state, (batch_images, labels[indices]), key)


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


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    dataset: data_lib.Dataset | None = None,
    progress: Any = None,
) -> RunResult:
  """Trains ``config.optimizer`` on ``config.dataset`` for ``config.num_seeds`` seeds.

  Seed ``s`` (``config.seed + i``) fixes the initial weights, the data order and the dropout
  masks (:mod:`experiments.common.data_order`); the same seeds give every optimizer the same initial
  weights and data order. After each epoch the whole test set is evaluated. The layout follows
  ``config.vmap_seeds`` (:class:`SeedGroups`) and ``config.epoch_loop``
  (:func:`compile_epoch`), chosen per hardware.

  Compilation is timed apart (ahead-of-time); ``train_time_s`` is the time of the training
  steps alone, ``eval_time_s`` that of the test evaluations, and ``wall_time_s`` everything
  including compilation. With ``config.save_checkpoint`` the final variables of every seed are
  saved with Orbax to ``workdir/checkpoint``.

  Args:
    config: a config from ``configs/`` (see ``configs/classification/digits.py`` for the fields).
    workdir: folder for this run's outputs.
    dataset: the loaded data set, to share one load between optimizers.
    progress: optional tqdm bar, advanced by one per epoch.

  Returns:
    The :class:`RunResult`.
  """
  start = time.perf_counter()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.num_seeds < 1 or config.num_epochs < 1:
    raise ValueError(
        f"num_seeds and num_epochs must be >= 1; got {config.num_seeds}, {config.num_epochs}."
    )
  epoch_loop = config.epoch_loop
  if epoch_loop not in EPOCH_LOOPS:
    raise ValueError(f"config.epoch_loop must be one of {EPOCH_LOOPS}; got {epoch_loop!r}.")

  # The model, the optimizer and the data.
  dataset = dataset if dataset is not None else load_config_dataset(config)
  spec = model_spec(config, dataset)
  graphdef = model_graphdef(spec)
  hparams = resolve_hparams(config, config.optimizer)
  steps_per_epoch = dataset.train_images.shape[0] // config.batch_size
  optimizer = optimizer_lib.make_optimizer(
      config.optimizer, hparams, schedule=config.lr_schedule,
      total_steps=steps_per_epoch * config.num_epochs,
  )
  train_images, train_labels, test_images, test_labels = (
      jax.device_put(array) for array in (dataset.train_images, dataset.train_labels,
                                          dataset.test_images, dataset.test_labels)
  )

  # One train state per seed group; the init and evaluation programs are shared by every
  # optimizer of a comparison (they do not depend on it; see _shared_programs).
  layout = SeedGroups(tuple(config.seed + i for i in range(config.num_seeds)),
                      bool(config.vmap_seeds))
  init_fn, eval_fn = _shared_programs(
      spec, layout.vmap_seeds, int(config.eval_batch_size)
  )
  compile_start = time.perf_counter()
  states, epoch_keys = init_states(layout, init_fn, optimizer, config.num_epochs)
  jax.block_until_ready(eval_fn(states[0], test_images, test_labels))
  epoch_fn = compile_epoch(config, layout, graphdef, optimizer, states[0], train_images,
                           train_labels, layout.epoch_key(epoch_keys[0], 0))
  compile_time = time.perf_counter() - compile_start

  # Train every group an epoch at a time, evaluating the test set after each epoch.
  epochs = EpochRecorder()
  for epoch in range(config.num_epochs):
    epochs.start_epoch()
    for index, keys in enumerate(epoch_keys):
      tick = time.perf_counter()
      states[index], train_metrics = epoch_fn(
          states[index], train_images, train_labels, layout.epoch_key(keys, epoch)
      )
      train_metrics = jax.device_get(train_metrics)
      tock = time.perf_counter()
      evaluation = jax.device_get(eval_fn(states[index], test_images, test_labels))
      epochs.eval_time_s += time.perf_counter() - tock
      epochs.train_time_s += tock - tick
      epochs.add_group(train_metrics, evaluation, len(test_labels))
    epochs.end_epoch()
    if progress is not None:
      progress.set_postfix(
          optimizer=config.optimizer, epoch=epoch + 1,
          test_acc=f"{float(np.mean(epochs.history['test_accuracy'][-1])):.4f}",
      )
      progress.update(1)

  if config.save_checkpoint:
    save_checkpoint(workdir / "checkpoint", layout.stacked(states))
  return RunResult(
      optimizer=config.optimizer,
      hparams=hparams,
      seeds=list(layout.seeds),
      steps_per_epoch=steps_per_epoch,
      test_predictions=np.concatenate(epochs.predictions),
      test_labels=np.asarray(dataset.test_labels),
      compile_time_s=compile_time,
      train_time_s=epochs.train_time_s,
      eval_time_s=epochs.eval_time_s,
      wall_time_s=time.perf_counter() - start,
      **epochs.curves(),
  )


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


@dataclasses.dataclass
class EpochRecorder:
  """Per-epoch training and test metrics of every seed group, the last epoch's predictions and
  the time spent training and evaluating."""

  history: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {
      "train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []})
  predictions: list[np.ndarray] = dataclasses.field(default_factory=list)
  train_time_s: float = 0.0
  eval_time_s: float = 0.0
  _epoch: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

  def start_epoch(self) -> None:
    self._epoch = {key: [] for key in self.history}
    self.predictions = []

  def add_group(self, train_metrics: Mapping[str, Any], evaluation: Mapping[str, Any],
                num_test: int) -> None:
    """Records one seed group's epoch: its training metrics and its test evaluation."""
    for split, values in (("train", train_metrics), ("test", evaluation)):
      self._epoch[f"{split}_loss"].append(np.atleast_1d(values["loss"]))
      self._epoch[f"{split}_accuracy"].append(np.atleast_1d(values["accuracy"]))
    self.predictions.append(np.asarray(evaluation["predictions"]).reshape(-1, num_test))

  def end_epoch(self) -> None:
    for key, values in self._epoch.items():
      self.history[key].append(np.concatenate(values))

  def curves(self) -> dict[str, np.ndarray]:
    """Each metric as ``(seeds, epochs)`` float64."""
    return {key: np.stack(values, axis=1).astype(np.float64)
            for key, values in self.history.items()}


@functools.cache
def _shared_programs(spec: ModelSpec, vmap_seeds: bool, eval_batch_size: int) -> tuple[Any, Any]:
  """Jitted ``key -> (params, model_state)`` and ``(state, images, labels) -> evaluation``."""
  graphdef = model_graphdef(spec)
  over_seeds = SeedGroups((), vmap_seeds).over_seeds
  init_fn = jax.jit(over_seeds(functools.partial(init_variables, spec), 0))
  eval_fn = jax.jit(over_seeds(
      functools.partial(evaluate, graphdef, batch_size=eval_batch_size), (0, None, None)
  ))
  return init_fn, eval_fn


def save_checkpoint(path: Path, states: TrainState) -> None:
  """Saves the (seed-stacked) parameters and batch statistics with Orbax."""
  import orbax.checkpoint as ocp

  target = {
      "params": nnx.to_pure_dict(states.params),
      "model_state": nnx.to_pure_dict(states.model_state),
  }
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path.absolute(), target, force=True)
  checkpointer.wait_until_finished()


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m experiments.classification.train --config configs/classification/digits.py``.

  Trains ``config.optimizer`` alone over the config's seeds and writes ``summary.json`` (the
  comparison, :mod:`experiments.classification.compare`, trains every optimizer of
  ``config.optimizers``).
  """
  from experiments.classification import metrics
  from experiments.common.serialization import to_jsonable

  def train(config: ml_collections.ConfigDict, workdir_name: str) -> None:
    check_config(config)
    workdir = Path(workdir_name)
    dataset = load_config_dataset(config)
    check_data_fits(config, dataset)
    result = train_and_evaluate(config, workdir, dataset=dataset)
    summary = metrics.summarize_run(result, dataset.num_classes, config.target_accuracy)
    (workdir / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    print(f"{config.optimizer} on {config.name}: test accuracy {summary['test_accuracy']:.4f} "
          f"± {summary['test_accuracy_std']:.4f} over {config.num_seeds} seed(s); wrote "
          f"{workdir}/summary.json")

  cli.run_job(train, default_workdir="runs/{name}_{optimizer}", argv=argv)


if __name__ == "__main__":
  main()
