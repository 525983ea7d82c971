"""The validation split a sweep selects on: a stratified part of the training set held out
(:func:`stratified_split`), and the three splits as device arrays (:class:`SweepData`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.classification import data as data_lib


class SweepData(NamedTuple):
  """Device arrays of the three splits; passed to the compiled program as arguments."""

  train_images: jax.Array
  train_labels: jax.Array
  validation_images: jax.Array
  validation_labels: jax.Array
  test_images: jax.Array
  test_labels: jax.Array


def stratified_split(
    dataset: data_lib.Dataset, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(train_images, train_labels, validation_images, validation_labels)``: a stratified
  ``validation_fraction`` of the training set held out (scikit-learn, ``random_state=seed``)."""
  from sklearn.model_selection import train_test_split

  train_images, validation_images, train_labels, validation_labels = train_test_split(
      dataset.train_images, dataset.train_labels, test_size=validation_fraction,
      stratify=dataset.train_labels, random_state=seed,
  )
  return train_images, train_labels, validation_images, validation_labels


def split_validation(
    dataset: data_lib.Dataset, validation_fraction: float, seed: int = 0
) -> SweepData:
  """Holds out a stratified ``validation_fraction`` of the training set for model selection.

  With ``validation_fraction == 0`` the test set stands in for the validation set (then the
  choice of the best trial has seen the test set; the sweep's output says so).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction}.")
  if validation_fraction == 0.0:
    train_images, train_labels = dataset.train_images, dataset.train_labels
    validation_images, validation_labels = dataset.test_images, dataset.test_labels
  else:
    train_images, train_labels, validation_images, validation_labels = stratified_split(
        dataset, validation_fraction, seed
    )
  return SweepData(*(jnp.asarray(array) for array in (
      train_images, train_labels, validation_images, validation_labels,
      dataset.test_images, dataset.test_labels,
  )))

