"""``rmsprop``: the full optimizer, a chain of the primitives in :mod:`rmsprop_jax.transform`."""

from __future__ import annotations

from typing import Any

import optax

from rmsprop_jax import hyperparameters as hp
from rmsprop_jax import transform


def rmsprop(
    learning_rate: hp.ScalarOrSchedule = 1e-3,
    decay: hp.Scalar = 0.9,
    eps: hp.Scalar = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_scale: hp.Scalar = 0.0,
    centered: bool = False,
    momentum: hp.Scalar | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    weight_decay: hp.Scalar = 0.0,
    weight_decay_mask: Any | None = None,
    accumulator_dtype: Any | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""RMSprop (Hinton, 2012) with the options of every major framework.

  For gradient :math:`g_t`, learning rate :math:`\eta_t` and parameters :math:`\theta_t`:

  .. math::

    \nu_t = \rho\,\nu_{t-1} + (1-\rho)\,g_t^2, \qquad
    s_t = -\eta_t\,\frac{g_t}{\sqrt{\nu_t} + \epsilon}
      \quad\Big(\text{or } -\eta_t\,\frac{g_t}{\sqrt{\nu_t + \epsilon}}
      \text{ with eps_in_sqrt}\Big),

    b_t = \beta\,b_{t-1} + s_t \ \text{(with momentum, learning rate inside the buffer)},
    \qquad \Delta\theta_t = b_t - \eta_t\,\lambda\,\theta_{t-1}.

  ``centered`` replaces :math:`\nu_t` by :math:`\nu_t - \mu_t^2` (Graves, 2013), with
  :math:`\mu_t` the moving average of :math:`g_t`; ``bias_correction`` divides both averages
  by :math:`1-\rho^t`. It is the chain::

    scale_by_rmsprop -> scale_by_learning_rate -> momentum_buffer -> add_decoupled_weight_decay

  always four stages, the third ``optax.identity()`` when ``momentum is None``. The state's
  tree structure therefore depends only on the structural options (``centered``, ``momentum``
  given or ``None``, ``weight_decay_mask`` given or not), never on a number being a Python
  float or an array, nor on the learning rate being a schedule or a number:
  ``optax.inject_hyperparams(rmsprop)`` has the same inner state as ``rmsprop``. A
  ``weight_decay`` of the Python number 0 (the default) makes the last stage a pass-through,
  so ``update`` then needs no ``params``. For every option ``optax.rmsprop`` also has, the
  trajectory equals ``optax.rmsprop``'s with the same arguments (note the defaults differ:
  optax puts ``eps`` inside the square root by default).

  Each state leaf that mirrors a parameter (``nu``, ``mu``, the momentum ``trace``) is built
  with ``jnp.full_like`` and keeps that parameter's sharding; ``update`` is elementwise and
  adds no collective. Hyperparameters may be Python numbers, arrays or tracers (jit arguments,
  vmapped sweeps, ``optax.inject_hyperparams``); each is cast to the leaf's compute dtype
  ``promote_types(dtype, float32)`` before any arithmetic, so float64 parameters get float64
  hyperparameters, and a Python float and the same value passed as a float32 jit argument (a
  float64 one for float64 parameters) give bitwise-identical results. A jitted step that
  takes hyperparameters as arguments compiles once. Concrete invalid values raise
  ``ValueError`` here, naming the argument; float and complex gradients only (an integer leaf
  raises ``TypeError`` naming its path).

  With ``eps=0`` a gradient entry that is 0 while its :math:`\nu` is still 0 gets a zero
  update (not :math:`0/0`); every other entry is unaffected.

  Non-finite gradients are not hidden: they propagate into the state. To skip such steps and
  leave the state untouched, wrap the optimizer: ``optax.apply_if_finite(rmsprop(...),
  max_consecutive_errors=5)``.

  Args:
    learning_rate: :math:`\eta_t \ge 0`, a scalar or an optax schedule.
    decay: :math:`\rho \in [0, 1]`, the second-moment averaging constant.
    eps: :math:`\epsilon \ge 0`, the denominator's stability term.
    eps_in_sqrt: put ``eps`` inside the square root (Keras/TF/optax convention).
    initial_scale: initial value of :math:`\nu` (TF1 uses 1.0).
    centered: use the centered (variance) estimate.
    momentum: :math:`\beta \in [0, 1)`, or ``None`` for no momentum buffer.
    nesterov: Nesterov momentum; requires ``momentum``.
    bias_correction: debias the moving averages as in Adam.
    weight_decay: :math:`\lambda \ge 0`, decoupled (AdamW-style) weight decay.
    weight_decay_mask: pytree of booleans or callable ``params -> mask`` selecting the
      parameters to decay, as in ``optax.adamw`` (allowed with ``weight_decay=0`` too, so
      that the state's structure does not depend on the value).
    accumulator_dtype: how to store :math:`\nu`, :math:`\mu` and the momentum buffer: a
      state format of :mod:`rmsprop_jax.formats` or a float dtype. Arithmetic runs in
      ``promote_types(dtype, float32)`` and updates keep the gradients' dtype. The formats:
      ``formats.bfloat16()`` (2 bytes per parameter, stochastic rounding: unbiased, tracks
      float32 state at decays 0.9-0.999), ``formats.int8()`` (block-wise 8-bit, about 1.02
      bytes, stochastic rounding), ``formats.factored()`` (row and column statistics of
      matrices) and ``formats.bitsandbytes_int8()`` (bitsandbytes' ``RMSprop8bit`` state);
      docs/memory.md measures them. A dtype is rounded to nearest: ``jnp.bfloat16`` (=
      ``formats.bfloat16("nearest")``) keeps 8 mantissa bits, so an average with a long
      horizon stalls below its value (steady gradient: decay 0.99 about 20 % low, 0.999 at a
      quarter; docs/recipes/bfloat16.md). ``None`` stores each accumulator in its
      parameter's compute dtype: float32 for float32, float16 and bfloat16 parameters (a
      float16 ``nu`` would underflow :math:`g^2`), float64 for float64. A non-floating dtype is
      refused. Under ``optax.inject_hyperparams`` pass ``static_args=("accumulator_dtype",)``:
      a dtype is callable and would be taken for a schedule.
    mu_dtype: the format (or float dtype) of :math:`\mu` and the momentum buffer; ``None``
      uses ``accumulator_dtype`` (a factored format's per-element fallback). Static under
      ``optax.inject_hyperparams`` like ``accumulator_dtype``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import rmsprop_jax
    >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> optimizer = rmsprop_jax.rmsprop(learning_rate=0.01, momentum=0.9)
    >>> state = optimizer.init(params)
    >>> for _ in range(3):
    ...   grads = jax.grad(loss)(params)
    ...   updates, state = optimizer.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> [round(float(w), 3) for w in params["w"]]
    [0.853, -1.852, 2.852]

  References:
    - Hinton, Srivastava & Swersky, *Neural Networks for Machine Learning*, lecture 6e (2012).
    - Graves, *Generating Sequences With Recurrent Neural Networks*, arXiv:1308.0850 (2013).
    - Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR (2019).
  """
  hp.check_learning_rate("learning_rate", learning_rate)
  if momentum is not None:
    hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  elif nesterov:
    raise ValueError("nesterov=True needs a momentum value; got momentum=None.")
  hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  if momentum is None:
    momentum_stage = optax.identity()
  else:
    momentum_stage = transform.momentum_buffer(
        momentum,
        nesterov=nesterov,
        accumulator_dtype=accumulator_dtype if mu_dtype is None else mu_dtype,
    )
  return optax.chain(
      transform.scale_by_rmsprop(
          decay,
          eps,
          eps_in_sqrt=eps_in_sqrt,
          initial_scale=initial_scale,
          centered=centered,
          bias_correction=bias_correction,
          accumulator_dtype=accumulator_dtype,
          mu_dtype=mu_dtype,
      ),
      transform.scale_by_learning_rate(learning_rate),
      momentum_stage,
      transform.add_decoupled_weight_decay(learning_rate, weight_decay, weight_decay_mask),
  )
