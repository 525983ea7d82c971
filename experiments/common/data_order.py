"""The data order of every training loop: a seed's keys, each epoch's batches and step keys.

One derivation serves ``train.py`` (scanned and stepped epochs), the sweeps, the sharded trainer
and exact resume: seed ``s`` splits into an initialisation key and a data key; the data key
splits into one key per epoch; epoch ``e``'s key splits into the key of its permutation
(batches of indices; the last incomplete batch is dropped) and the key its per-step keys
(dropout, augmentation) are split from. A run is therefore a pure function of its seed, and a
step is located by ``(epoch, index)`` alone.
"""

from __future__ import annotations

import jax


def seed_keys(seed: int | jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(init_key, data_key)`` of a seed (an int, or a key already made from one)."""
  is_key = isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
  key = seed if is_key else jax.random.key(seed)
  init_key, data_key = jax.random.split(key)
  return init_key, data_key


def epoch_keys(data_key: jax.Array, num_epochs: int) -> jax.Array:
  """One key per epoch; the run's length is part of the order (it fixes the split)."""
  return jax.random.split(data_key, num_epochs)


def epoch_batches(rng: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
  """A random permutation cut into ``(num_examples // batch_size, batch_size)`` indices."""
  if batch_size < 1 or batch_size > num_examples:
    raise ValueError(f"batch_size must be in [1, {num_examples}]; got {batch_size}.")
  steps = num_examples // batch_size
  permutation = jax.random.permutation(rng, num_examples)
  return permutation[: steps * batch_size].reshape(steps, batch_size)


def epoch_plan(
    epoch_key: jax.Array, num_examples: int, batch_size: int
) -> tuple[jax.Array, jax.Array]:
  """An epoch's ``(batch indices (steps, batch_size), step keys (steps,))``."""
  permutation_key, steps_key = jax.random.split(epoch_key)
  batches = epoch_batches(permutation_key, num_examples, batch_size)
  return batches, jax.random.split(steps_key, batches.shape[0])
