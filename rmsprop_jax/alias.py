"""``rmsprop``: the full optimizer, a chain of the primitives in :mod:`rmsprop_jax.transform`."""

from __future__ import annotations

from typing import Any

import optax

from rmsprop_jax import hyperparameters as hp
from rmsprop_jax import transform


def is_static_zero(value: Any) -> bool:
  """True for a Python number equal to 0: the component it controls can be left out.

  Arrays and tracers always keep their component, so that an optimizer's state structure never
  depends on a hyperparameter's value (``optax.inject_hyperparams`` rebuilds the optimizer from
  arrays on every step, and jit/vmap pass tracers).
  """
  return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


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

  where the last two are present only when ``momentum is not None`` and ``weight_decay`` is not
  the number 0. For every option ``optax.rmsprop`` also has, the trajectory equals
  ``optax.rmsprop``'s with the same arguments (note the defaults differ: optax puts ``eps``
  inside the square root by default).

  Hyperparameters may be Python numbers, arrays or tracers (jit arguments, vmapped sweeps,
  ``optax.inject_hyperparams``); a Python float and the same float32 value passed as a jit
  argument give bitwise-identical results, and a jitted step that takes them as arguments
  compiles once. Concrete invalid values raise ``ValueError`` here, naming the argument.

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
      parameters to decay, as in ``optax.adamw``.
    accumulator_dtype: dtype to store :math:`\nu`, :math:`\mu` and the momentum buffer in
      (``jnp.bfloat16`` halves the state); arithmetic runs in float32 and updates keep the
      gradients' dtype.

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
    Hinton, Srivastava & Swersky, *Neural Networks for Machine Learning*, lecture 6e (2012).
    Graves, *Generating Sequences With Recurrent Neural Networks*, arXiv:1308.0850 (2013).
    Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR (2019).
  """
  hp.check_learning_rate("learning_rate", learning_rate)
  if momentum is not None:
    hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  elif nesterov:
    raise ValueError("nesterov=True needs a momentum value; got momentum=None.")
  hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  components = [
      transform.scale_by_rmsprop(
          decay,
          eps,
          eps_in_sqrt=eps_in_sqrt,
          initial_scale=initial_scale,
          centered=centered,
          bias_correction=bias_correction,
          accumulator_dtype=accumulator_dtype,
      ),
      transform.scale_by_learning_rate(learning_rate),
  ]
  if momentum is not None:
    components.append(
        transform.momentum_buffer(
            momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
        )
    )
  if not is_static_zero(weight_decay):
    components.append(
        transform.add_decoupled_weight_decay(learning_rate, weight_decay, weight_decay_mask)
    )
  elif weight_decay_mask is not None:
    raise ValueError("weight_decay_mask was given but weight_decay is 0: nothing to mask.")
  return optax.chain(*components)
