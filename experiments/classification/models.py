"""Flax NNX image classifiers for the optimizer comparison.

Three families, all mapping NHWC float32 images to unnormalised class logits:

* :class:`MLP` — flatten, then fully connected ReLU layers with dropout. Any input size.
* :class:`SmallCNN` — stages of two 3x3 convolutions (batch normalisation, ReLU) and a 2x2 max
  pool, then a dropout-regularised dense head. Two stages fit 8x8x1 digits (8 -> 4 -> 2) and
  28x28x1 Fashion-MNIST (28 -> 14 -> 7).
* :class:`TwoConvTwoDense` — DeepOBS's ``fmnist_2c2d`` (Schneider et al., 2019): two 5x5
  convolutions (32, 64 channels, ReLU) each followed by a 2x2 max pool, dense 1024 with ReLU,
  dense ``num_classes``; no batch norm, no dropout. The network of the Crowded Valley
  benchmark's Fashion-MNIST results (Schmidt et al., 2021).
* :class:`CifarCNN` — a VGG-style network for 32x32x3 images: three stages of two 3x3
  convolutions with batch normalisation (64, 128, 256 channels), max pooling and dropout after
  each stage, global average pooling and a linear classifier (Simonyan & Zisserman, 2015;
  Ioffe & Szegedy, 2015).

Every model is called as ``model(images, train=..., rngs=...)``. With ``train=True`` batch
normalisation uses the batch statistics and updates its running averages, and dropout draws its
masks from ``rngs`` (an ``nnx.Rngs`` with a ``dropout`` stream, or a key). With ``train=False``
both are deterministic and ``rngs`` may be omitted. The models keep no random state of their
own, so ``nnx.split(model, nnx.Param, ...)`` yields parameters and batch statistics only, and
a training step that threads those two states is a pure function (see
:mod:`experiments.classification.train`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

MODELS = ("mlp", "cnn", "cifar_cnn", "2c2d")

# Batch-norm running averages with momentum 0.9 track the weights within tens of steps; the
# Flax default of 0.99 lags behind the short runs here (22 steps per digits epoch).
_BATCH_NORM_MOMENTUM = 0.9


class MLP(nnx.Module):
  """Multilayer perceptron: ``flatten -> [Linear -> ReLU -> Dropout] * k -> Linear``."""

  def __init__(
      self,
      input_shape: Sequence[int],
      num_classes: int,
      *,
      hidden_sizes: Sequence[int] = (256, 128),
      dropout_rate: float = 0.1,
      rngs: nnx.Rngs,
  ):
    in_features = 1
    for size in input_shape:
      in_features *= int(size)
    layers = []
    for width in hidden_sizes:
      layers.append(nnx.Linear(in_features, width, rngs=rngs))
      in_features = width
    self.hidden = nnx.List(layers)
    self.dropout = nnx.Dropout(dropout_rate)
    self.head = nnx.Linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = self.dropout(nnx.relu(layer(x)), deterministic=not train, rngs=rngs)
    return self.head(x)


class ConvBlock(nnx.Module):
  """``Conv 3x3 -> BatchNorm -> ReLU`` (the convolution has no bias: batch norm adds one)."""

  def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(
        in_channels, out_channels, kernel_size=(3, 3), padding="SAME", use_bias=False, rngs=rngs
    )
    self.norm = nnx.BatchNorm(out_channels, momentum=_BATCH_NORM_MOMENTUM, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return nnx.relu(self.norm(self.conv(x), use_running_average=not train))


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


class SmallCNN(nnx.Module):
  """Small CNN for 8x8 and 28x28 grey images.

  ``len(channels)`` stages of two :class:`ConvBlock` and a 2x2 max pool, then
  ``flatten -> Dropout -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes)``.
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      num_classes: int,
      *,
      channels: Sequence[int] = (32, 64),
      hidden_size: int = 128,
      dropout_rate: float = 0.25,
      rngs: nnx.Rngs,
  ):
    height, width, in_channels = (int(size) for size in input_shape)
    blocks = []
    for out_channels in channels:
      if height < 2 or width < 2:
        raise ValueError(
            f"channels={tuple(channels)} has more pooling stages than input_shape="
            f"{tuple(input_shape)} can take."
        )
      blocks.append(ConvBlock(in_channels, out_channels, rngs=rngs))
      blocks.append(ConvBlock(out_channels, out_channels, rngs=rngs))
      in_channels, height, width = out_channels, height // 2, width // 2
    self.blocks = nnx.List(blocks)
    self.dropout = nnx.Dropout(dropout_rate)
    self.dense = nnx.Linear(height * width * in_channels, hidden_size, rngs=rngs)
    self.head = nnx.Linear(hidden_size, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
    for index, block in enumerate(self.blocks):
      x = block(x, train=train)
      if index % 2 == 1:
        x = _max_pool(x)
    x = self.dropout(x.reshape(x.shape[0], -1), deterministic=not train, rngs=rngs)
    x = self.dropout(nnx.relu(self.dense(x)), deterministic=not train, rngs=rngs)
    return self.head(x)


class TwoConvTwoDense(nnx.Module):
  """DeepOBS ``2c2d``: ``[Conv 5x5 -> ReLU -> MaxPool 2x2] x 2 -> Dense -> ReLU -> Dense``.

  Convolutions and pools pad ``SAME`` (28 -> 14 -> 7), as in DeepOBS. ``channels`` and
  ``hidden_size`` default to DeepOBS's 32, 64 and 1024.
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      num_classes: int,
      *,
      channels: Sequence[int] = (32, 64),
      hidden_size: int = 1024,
      rngs: nnx.Rngs,
  ):
    height, width, in_channels = (int(size) for size in input_shape)
    convs = []
    for out_channels in channels:
      convs.append(nnx.Conv(in_channels, out_channels, kernel_size=(5, 5), padding="SAME",
                            rngs=rngs))
      in_channels, height, width = out_channels, -(-height // 2), -(-width // 2)
    self.convs = nnx.List(convs)
    self.dense = nnx.Linear(height * width * in_channels, hidden_size, rngs=rngs)
    self.head = nnx.Linear(hidden_size, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
    del train, rngs  # No dropout, no batch norm.
    for conv in self.convs:
      x = nnx.max_pool(nnx.relu(conv(x)), window_shape=(2, 2), strides=(2, 2), padding="SAME")
    x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


class CifarCNN(nnx.Module):
  """VGG-style CNN for 32x32x3 images.

  Three stages of two :class:`ConvBlock`, 2x2 max pooling and dropout (rates grow with depth),
  then global average pooling and a linear classifier.
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      num_classes: int,
      *,
      channels: Sequence[int] = (64, 128, 256),
      dropout_rates: Sequence[float] = (0.1, 0.2, 0.3),
      rngs: nnx.Rngs,
  ):
    if len(dropout_rates) != len(channels):
      raise ValueError(
          f"dropout_rates needs one rate per stage: {len(channels)} stages, got "
          f"{len(dropout_rates)} rates."
      )
    in_channels = int(input_shape[-1])
    blocks = []
    for out_channels in channels:
      blocks.append(ConvBlock(in_channels, out_channels, rngs=rngs))
      blocks.append(ConvBlock(out_channels, out_channels, rngs=rngs))
      in_channels = out_channels
    self.blocks = nnx.List(blocks)
    self.dropouts = nnx.List([nnx.Dropout(rate) for rate in dropout_rates])
    self.head = nnx.Linear(in_channels, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
    for stage, dropout in enumerate(self.dropouts):
      x = self.blocks[2 * stage](x, train=train)
      x = self.blocks[2 * stage + 1](x, train=train)
      x = dropout(_max_pool(x), deterministic=not train, rngs=rngs)
    return self.head(jnp.mean(x, axis=(1, 2)))


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
  """Builds one of :data:`MODELS` by name.

  Args:
    name: ``"mlp"``, ``"cnn"`` (:class:`SmallCNN`), ``"cifar_cnn"`` or ``"2c2d"``
      (:class:`TwoConvTwoDense`).
    input_shape: ``(height, width, channels)`` of one image.
    num_classes: number of output logits.
    rngs: initialisation randomness, e.g. ``nnx.Rngs(params=key)``.
    **kwargs: the model's own keyword arguments (``hidden_sizes``, ``channels``,
      ``dropout_rate`` ...).

  Returns:
    The initialised module.
  """
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (height, width, channels); got {input_shape}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
  constructors = {"mlp": MLP, "cnn": SmallCNN, "cifar_cnn": CifarCNN, "2c2d": TwoConvTwoDense}
  if name not in constructors:
    raise ValueError(f"model must be one of {MODELS}; got {name!r}.")
  return constructors[name](input_shape, num_classes, rngs=rngs, **kwargs)
