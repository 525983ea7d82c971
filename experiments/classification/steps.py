"""The pure training and evaluation functions of the classifiers, with any optax optimizer.

The model is split once into a static ``graphdef`` and two pytrees, the trainable ``params``
and the ``model_state`` (batch-norm running statistics); together with the optimizer state and
a step counter they form a :class:`TrainState`. Every function below is pure in those pytrees,
so it can be jit-compiled, vmapped (over seeds, or over hyperparameters by building the
optimizer inside the vmapped function) and sharded without change. Static arguments come first,
so ``functools.partial`` binds them:

* ``state = init_train_state(spec, optimizer, key)`` — a fresh :class:`TrainState`.
* ``state, metrics = train_step(graphdef, optimizer, state, batch, rng)`` — one step of
  softmax cross-entropy on ``batch = (images, labels)``; ``rng`` drives dropout.
* ``state, metrics = train_epoch(graphdef, optimizer, state, images, labels, rng,
  batch_size=..., augment=...)`` — one pass over a data set that lives on the device, as one
  ``lax.scan``; :func:`train_indexed_step` is its body, for epochs driven from Python.
* ``metrics = eval_step(graphdef, state, batch)`` and ``metrics = evaluate(graphdef, state,
  images, labels, batch_size=...)`` — loss, accuracy and predicted classes in inference mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.classification.model_spec import ModelSpec, init_variables, split_params
from experiments.common import data_order


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
