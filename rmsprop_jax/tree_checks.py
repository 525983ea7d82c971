"""Checks that an update's tree matches the tree an optimizer state was built for.

``jax.tree.map`` silently broadcasts a leaf of shape ``(1,)`` against one of shape ``(3,)`` and
reports a structure mismatch without saying which leaf is at fault. Optimizer users deserve the
path of the offending leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_same_tree(
    tree: Any,
    reference: Any,
    *,
    tree_name: str,
    reference_name: str,
    is_leaf: Callable[[Any], bool] | None = None,
) -> None:
  """Raises ``ValueError`` unless ``tree`` has ``reference``'s structure and leaf shapes.

  Args:
    tree: the pytree received (gradients, parameters).
    reference: the pytree it must match (the optimizer state's accumulator).
    tree_name: how to call ``tree`` in the message, e.g. ``"updates"``.
    reference_name: how to call ``reference`` in the message.
    is_leaf: marks nodes of ``reference`` that stand for one leaf (an encoded accumulator of
      :mod:`rmsprop_jax.formats`); such a node's ``shape`` is the shape compared.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  reference_leaves, reference_treedef = jax.tree_util.tree_flatten_with_path(
      reference, is_leaf=is_leaf)
  if treedef != reference_treedef:  # type: ignore[operator]  # PyTreeDef stubs lack __ne__
    paths = {jax.tree_util.keystr(path) for path, _ in leaves}
    reference_paths = {jax.tree_util.keystr(path) for path, _ in reference_leaves}
    missing = sorted(reference_paths - paths)
    unexpected = sorted(paths - reference_paths)
    detail = []
    if missing:
      detail.append(f"missing leaves {missing}")
    if unexpected:
      detail.append(f"unexpected leaves {unexpected}")
    if not detail:
      detail.append(f"structure {treedef} differs from {reference_treedef}")
    raise ValueError(
        f"The {tree_name} tree does not match the {reference_name} tree: "
        + "; ".join(detail)
        + ". Pass gradients with the same structure as the params given to init."
    )
  for (path, leaf), (_, reference_leaf) in zip(leaves, reference_leaves, strict=True):
    reference_shape = tuple(getattr(reference_leaf, "shape", np.shape(reference_leaf)))
    if np.shape(leaf) != reference_shape:
      raise ValueError(
          f"Leaf {jax.tree_util.keystr(path)} of the {tree_name} has shape {np.shape(leaf)}, "
          f"but the {reference_name} holds shape {reference_shape} for it. Shapes "
          "must match exactly; nothing is broadcast."
      )


def check_floating(tree: Any, *, tree_name: str) -> None:
  """Raises ``TypeError`` naming the first leaf of ``tree`` that is not float or complex.

  Integer (or boolean, or ``float0``) gradients cannot be preconditioned: cast to the update's
  dtype they are silently rounded or zeroed, so nothing is learned for that leaf.

  Args:
    tree: the pytree received (parameters, gradients).
    tree_name: how to call ``tree`` in the message, e.g. ``"gradients"``.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = np.result_type(leaf) if not hasattr(leaf, "dtype") else leaf.dtype
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
          f"Leaf {jax.tree_util.keystr(path)} of the {tree_name} has dtype {dtype}; RMSprop "
          "needs float or complex leaves. To keep a non-trainable leaf (a step counter, an "
          "index table) in the parameters, freeze it: optax.masked(optimizer, mask) with False "
          "at that leaf, or optax.multi_transform with optax.set_to_zero() for it."
      )
