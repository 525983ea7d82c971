"""Masks: weight decay on the weights only, and a frozen part of the model."""

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax

params = {
    "embedding": jnp.ones((4, 2)),  # pretrained: to be frozen
    "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
}
grads = jax.tree.map(jnp.zeros_like, params)  # zero gradients: only weight decay moves things


def changed(before, after):
  """The paths of the leaves that differ, e.g. 'dense/kernel'."""
  moved = jax.tree.map(lambda a, b: bool((a != b).any()), before, after)
  flat, _ = jax.tree_util.tree_flatten_with_path(moved)
  return ["/".join(str(key.key) for key in path) for path, leaf_moved in flat if leaf_moved]


# 1. Decoupled weight decay on matrices only (kernel, embedding; not the bias), as optax.adamw.
optimizer = rmsprop_jax.rmsprop(
    1e-2, weight_decay=0.1, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
)
updates, _ = optimizer.update(grads, optimizer.init(params), params)
print("decayed:", changed(params, optax.apply_updates(params, updates)))

# 2. Freeze the embedding: train the rest, zero updates (and no state) for the embedding.
labels = {"embedding": "frozen", "dense": {"kernel": "trained", "bias": "trained"}}
optimizer = optax.multi_transform(
    {"trained": rmsprop_jax.rmsprop(1e-2, weight_decay=0.1), "frozen": optax.set_to_zero()},
    labels,
)
state = optimizer.init(params)
ones = jax.tree.map(jnp.ones_like, params)
updates, state = optimizer.update(ones, state, params)
print("updated:", changed(params, optax.apply_updates(params, updates)))
nu = optax.tree_utils.tree_get(state, "nu")
print("nu kept for:", sorted(k for k, v in nu.items() if not isinstance(v, optax.MaskedNode)))

# 3. optax.masked: RMSprop on part of the tree; the other leaves pass through unchanged.
optimizer = optax.masked(rmsprop_jax.rmsprop(1e-2), {"embedding": False, "dense": True})
updates, _ = optimizer.update(ones, optimizer.init(params), params)
print("embedding updates pass through:", bool((updates["embedding"] == 1.0).all()))
