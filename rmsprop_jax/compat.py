"""Presets that reproduce other frameworks' RMSprop exactly, under their own argument names.

A paper's hyperparameters carry over unchanged: ``pytorch_rmsprop(lr=..., alpha=...)`` follows
``torch.optim.RMSprop`` step for step, and likewise for Keras 3 and TensorFlow 1. Where the
frameworks differ (the full table is in ``docs/conventions.md``):

=================  ===============  ==============  ==============  =====================
preset             eps              nu starts at    learning rate   weight decay
=================  ===============  ==============  ==============  =====================
pytorch_rmsprop    outside sqrt     0               after momentum  L2, added to gradient
keras_rmsprop      inside sqrt      0               inside momentum decoupled, -lr*wd*var
tf1_rmsprop        inside sqrt      1               inside momentum none
=================  ===============  ==============  ==============  =====================

Each preset is a chain of :mod:`rmsprop_jax.transform` primitives with a fixed number of stages.
Weight decay is always a stage (stateless; a pass-through that needs no ``params`` when it is the
Python number 0), so its value or type never changes the state. ``momentum`` follows its
framework: the Python number 0 (the default) allocates no buffer, as PyTorch and Keras do, and
any other value, arrays included, does; give momentum as an array from the start (or use
:func:`rmsprop_jax.rmsprop`) if the structure must not depend on it.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from rmsprop_jax import hyperparameters as hp
from rmsprop_jax import transform
from rmsprop_jax.tree_checks import check_floating, check_same_tree


def _l2_penalty(weight_decay: hp.Scalar) -> optax.GradientTransformation:
  """PyTorch's ``weight_decay``: ``g + wd * theta``; a pass-through for the Python number 0."""
  pass_through = hp.is_static_zero(weight_decay)

  def init_fn(params: optax.Params):
    del params
    return optax.EmptyState()

  def update_fn(updates: optax.Updates, state: Any, params: optax.Params | None = None):
    if pass_through:
      return updates, state
    if params is None:
      raise ValueError("weight_decay needs the parameters: call update(grads, state, params).")
    check_same_tree(params, updates, tree_name="params", reference_name="updates")
    check_floating(updates, tree_name="updates")

    def leaf_update(g, p):
      dtype = transform.compute_dtype(g.dtype)
      wd = hp.as_dtype(weight_decay, transform.real_dtype(g.dtype))
      return (g.astype(dtype) + wd * p.astype(dtype)).astype(g.dtype)

    return jax.tree.map(leaf_update, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


def _momentum_stage(momentum: hp.Scalar) -> optax.GradientTransformation:
  """The frameworks' convention: momentum given as the number 0 means no buffer at all."""
  if hp.is_static_zero(momentum):
    return optax.identity()
  return transform.momentum_buffer(momentum)


def pytorch_rmsprop(
    lr: hp.ScalarOrSchedule = 1e-2,
    alpha: hp.Scalar = 0.99,
    eps: hp.Scalar = 1e-8,
    weight_decay: hp.Scalar = 0.0,
    momentum: hp.Scalar = 0.0,
    centered: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""``torch.optim.RMSprop`` with its argument names and defaults.

  .. math::

    g \leftarrow g + \lambda\theta, \quad
    v \leftarrow \alpha v + (1-\alpha) g^2, \quad
    b \leftarrow \mu b + \frac{g}{\sqrt{v} + \epsilon}, \quad
    \theta \leftarrow \theta - \eta_t\, b.

  The learning rate multiplies the momentum buffer *after* it is updated, so under a schedule
  the trajectory differs from the TF/Keras/optax convention.

  Args:
    lr: learning rate (scalar or optax schedule of the step count).
    alpha: smoothing constant in [0, 1].
    eps: added to the denominator, outside the square root.
    weight_decay: L2 penalty, added to the gradient before everything else.
    momentum: momentum factor in [0, 1).
    centered: normalise by the estimated variance of the gradient.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp
    >>> from rmsprop_jax.compat import pytorch_rmsprop
    >>> optimizer = pytorch_rmsprop(lr=0.01, alpha=0.99, momentum=0.9)
    >>> params = jnp.array([1.0, 2.0])
    >>> updates, _ = optimizer.update(params, optimizer.init(params))
    >>> updates  # -lr * g / sqrt(0.01 g^2) = -lr * 10 on the first step
    Array([-0.1, -0.1], dtype=float32)
  """
  hp.check_learning_rate("lr", lr)
  hp.check_scalar("alpha", alpha, minimum=0.0, maximum=1.0)
  hp.check_scalar("eps", eps, minimum=0.0)
  hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  return optax.chain(
      _l2_penalty(weight_decay),
      transform.scale_by_rmsprop(alpha, eps, eps_in_sqrt=False, centered=centered),
      _momentum_stage(momentum),
      transform.scale_by_learning_rate(lr),
  )


def keras_rmsprop(
    learning_rate: hp.ScalarOrSchedule = 1e-3,
    rho: hp.Scalar = 0.9,
    momentum: hp.Scalar = 0.0,
    epsilon: hp.Scalar = 1e-7,
    centered: bool = False,
    weight_decay: hp.Scalar | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Keras 3's ``keras.optimizers.RMSprop`` with its argument names and defaults.

  .. math::

    v \leftarrow \rho v + (1-\rho) g^2, \quad
    b \leftarrow \mu b + \eta_t \frac{g}{\sqrt{v + \epsilon}}, \quad
    \theta \leftarrow \theta - b - \eta_t \lambda \theta.

  Args:
    learning_rate: scalar or optax schedule of the step count (Keras' ``iterations``).
    rho: discounting factor for the moving average of squared gradients, in [0, 1].
    momentum: momentum factor in [0, 1).
    epsilon: added inside the square root.
    centered: normalise by the estimated variance of the gradient.
    weight_decay: decoupled weight decay, applied outside the momentum buffer; ``None`` for none.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  hp.check_learning_rate("learning_rate", learning_rate)
  hp.check_scalar("rho", rho, minimum=0.0, maximum=1.0)
  hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  hp.check_scalar("epsilon", epsilon, minimum=0.0)
  if weight_decay is not None:
    hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  return optax.chain(
      transform.scale_by_rmsprop(rho, epsilon, eps_in_sqrt=True, centered=centered),
      transform.scale_by_learning_rate(learning_rate),
      _momentum_stage(momentum),
      transform.add_decoupled_weight_decay(
          learning_rate, 0.0 if weight_decay is None else weight_decay
      ),
  )


def tf1_rmsprop(
    learning_rate: hp.ScalarOrSchedule,
    decay: hp.Scalar = 0.9,
    momentum: hp.Scalar = 0.0,
    epsilon: hp.Scalar = 1e-10,
    centered: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""TensorFlow 1's ``tf.compat.v1.train.RMSPropOptimizer`` with its names and defaults.

  .. math::

    v \leftarrow \rho v + (1-\rho) g^2 \ (v_0 = 1), \quad
    b \leftarrow \mu b + \eta_t \frac{g}{\sqrt{v + \epsilon}}, \quad
    \theta \leftarrow \theta - b.

  The mean square starts at **1**, so the first hundreds of steps are much smaller than under
  PyTorch or Keras with the same learning rate.

  Args:
    learning_rate: required, scalar or optax schedule of the step count.
    decay: discounting factor for the history, in [0, 1].
    momentum: momentum factor in [0, 1).
    epsilon: added inside the square root.
    centered: normalise by the estimated variance of the gradient.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  hp.check_learning_rate("learning_rate", learning_rate)
  hp.check_scalar("decay", decay, minimum=0.0, maximum=1.0)
  hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  hp.check_scalar("epsilon", epsilon, minimum=0.0)
  return optax.chain(
      transform.scale_by_rmsprop(
          decay, epsilon, eps_in_sqrt=True, initial_scale=1.0, centered=centered
      ),
      transform.scale_by_learning_rate(learning_rate),
      _momentum_stage(momentum),
  )


def bitsandbytes_rmsprop8bit(
    lr: hp.ScalarOrSchedule = 1e-2,
    alpha: hp.Scalar = 0.99,
    eps: hp.Scalar = 1e-8,
    weight_decay: hp.Scalar = 0.0,
    min_8bit_size: int = 4096,
) -> optax.GradientTransformationExtraArgs:
  r"""``bitsandbytes.optim.RMSprop8bit`` with its argument names and defaults.

  .. math::

    g \leftarrow g + \lambda\theta, \quad
    v \leftarrow \alpha v + (1-\alpha) g^2, \quad
    \theta \leftarrow \theta - \eta_t\, \frac{g}{\sqrt{v} + \epsilon},

  with :math:`v` stored as :func:`rmsprop_jax.formats.bitsandbytes_int8` keeps it (blocks of
  256, a float32 absmax each, bitsandbytes' signed dynamic map, rounded to nearest; the update
  uses :math:`v` before it is quantized); tensors with fewer than ``min_8bit_size`` entries keep
  float32 state. bitsandbytes' 8-bit RMSprop has no ``momentum`` (its 8-bit kernels ignore it)
  and refuses ``centered``; neither is offered here.

  Args:
    lr: learning rate (scalar or optax schedule of the step count).
    alpha: smoothing constant in (0, 1] (bitsandbytes refuses 0).
    eps: added to the denominator, outside the square root.
    weight_decay: L2 penalty, added to the gradient before everything else.
    min_8bit_size: parameters with fewer entries keep float32 state.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  from rmsprop_jax import formats

  hp.check_learning_rate("lr", lr)
  hp.check_scalar("alpha", alpha, minimum=0.0, maximum=1.0)
  hp.check_scalar("eps", eps, minimum=0.0)
  hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  return optax.chain(
      _l2_penalty(weight_decay),
      transform.scale_by_rmsprop(
          alpha, eps, eps_in_sqrt=False,
          accumulator_dtype=formats.bitsandbytes_int8(min_size=min_8bit_size)),
      transform.scale_by_learning_rate(lr),
  )
