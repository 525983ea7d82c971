"""The gradient transformations RMSprop is chained from.

Each function returns an ``optax.GradientTransformation`` over any pytree, with a ``NamedTuple``
state. Hyperparameters may be Python numbers, arrays or tracers (see
:mod:`rmsprop_jax.hyperparameters`). Arithmetic, hyperparameters included, runs in each leaf's
``promote_types(dtype, float32)``; accumulators are stored in a state format of
:mod:`rmsprop_jax.formats` (a dtype, or ``None``: the parameter's compute dtype) and built with
``jnp.full_like``, so each keeps its parameter's sharding; updates are returned in the
gradient's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rmsprop_jax import formats
from rmsprop_jax import hyperparameters as hp
from rmsprop_jax.formats import compute_dtype
from rmsprop_jax.tree_checks import check_floating, check_same_tree


class ScaleByRmsPropState(NamedTuple):
  """State of :func:`scale_by_rmsprop` (uncentered).

  Attributes:
    count: number of updates applied so far (int32 scalar), for bias correction.
    nu: exponential moving average of squared gradient magnitudes, one leaf per parameter.
  """

  count: chex.Array
  nu: optax.Updates


class ScaleByCenteredRmsPropState(NamedTuple):
  """State of :func:`scale_by_rmsprop` with ``centered=True``.

  Attributes:
    count: number of updates applied so far (int32 scalar), for bias correction.
    mu: exponential moving average of gradients (the first moment).
    nu: exponential moving average of squared gradient magnitudes (the second moment).
  """

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates


class MomentumState(NamedTuple):
  """State of :func:`momentum_buffer`.

  Attributes:
    trace: the heavy-ball buffer, one leaf per parameter (named as in ``optax.TraceState``).
  """

  trace: optax.Updates


class CountedMomentumState(NamedTuple):
  """State of :func:`momentum_buffer` with a stochastically rounded buffer.

  Attributes:
    count: number of updates applied so far (int32 scalar), folded into the rounding's seed.
    trace: the heavy-ball buffer, one leaf per parameter.
  """

  count: chex.Array
  trace: optax.Updates


class ScheduleCountState(NamedTuple):
  """State of the transformations that take a learning rate (a number or a schedule).

  Kept for numbers too, so that the state's structure does not change when
  ``optax.inject_hyperparams`` turns a schedule into a number.

  Attributes:
    count: number of updates applied so far (int32 scalar), the schedule's argument.
  """

  count: chex.Array


def real_dtype(dtype: Any) -> jnp.dtype:
  """The real dtype hyperparameters and second moments take for a leaf of ``dtype``.

  float32 for bfloat16, float16, float32 and complex64 leaves; float64 for float64 and
  complex128 leaves.
  """
  return jnp.finfo(compute_dtype(dtype)).dtype


def _accumulators_like(params: Any, fill: Any, fmt: formats.Format, *, role: formats.Role):
  """One ``fill``-valued accumulator per parameter leaf, in format ``fmt``.

  The formats build each leaf with ``jnp.full_like`` (unlike ``jnp.full(shape, ...)``), which
  places it like its parameter: eagerly on any mesh, and under ``jit`` where the sharding is
  part of the type (explicit axes).
  """
  check_floating(params, tree_name="params")
  fmt = fmt.for_role(role)

  def leaf_fn(path, leaf):
    return fmt.init(leaf, fill, role=role, path=jax.tree_util.keystr(path))

  return jax.tree_util.tree_map_with_path(leaf_fn, params)


def _accumulate(
    fmt: formats.Format, updates: Any, state: Any, step: Any, *, role: formats.Role, name: str
):
  """``step(g, stored, leaf_index, fmt)`` per leaf -> (new state tree, tree of values used).

  Each stored leaf is first checked to be what ``fmt`` stores (a clear error for a state, such
  as a restored checkpoint, made with another format).
  """
  fmt = fmt.for_role(role)
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(updates)
  leaves = [leaf for _, leaf in leaves_with_path]
  stored = treedef.flatten_up_to(state)  # type: ignore[attr-defined]
  for (path, g), s in zip(leaves_with_path, stored, strict=True):
    fmt.check_state(s, np.shape(g), role=role, where=f"{name}{jax.tree_util.keystr(path)}")
  results = [step(g, s, i, fmt) for i, (g, s) in enumerate(zip(leaves, stored, strict=True))]
  new_state = jax.tree.unflatten(treedef, [r[0] for r in results])
  values = jax.tree.unflatten(treedef, [r[1] for r in results])
  return new_state, values


def _step_key(fmt: formats.Format, seed_role: formats.Role, count: Any, salt: int):
  fmt = fmt.for_role(seed_role)
  if not fmt.stochastic:
    return None
  return formats.step_key(getattr(fmt, "seed", 0), count, salt)


def _check_mu_format(mu_format: formats.Format) -> None:
  if isinstance(mu_format, formats.FactoredFormat):
    raise ValueError(
        "mu_dtype cannot be formats.factored(): only the second moment nu can be factored; "
        "pass formats.factored(fallback=...) as accumulator_dtype to choose mu's format."
    )


def _abs_sq(x: jax.Array) -> jax.Array:
  if jnp.iscomplexobj(x):
    return (x.conj() * x).real
  return x * x


def scale_by_rmsprop(
    decay: hp.Scalar = 0.9,
    eps: hp.Scalar = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_scale: hp.Scalar = 0.0,
    centered: bool = False,
    bias_correction: bool = False,
    accumulator_dtype: Any | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Divides updates by the root of a moving average of their squares (RMSprop's preconditioner).

  With gradient :math:`g_t` (complex gradients use :math:`|g_t|^2`):

  .. math::

    \nu_t = \rho\,\nu_{t-1} + (1-\rho)\,g_t^2, \qquad
    \mu_t = \rho\,\mu_{t-1} + (1-\rho)\,g_t \quad\text{(centered only)},

    \sigma_t^2 = \hat\nu_t - |\hat\mu_t|^2 \ \text{(centered)} \ \text{or}\ \hat\nu_t, \qquad
    u_t = \frac{g_t}{\sigma_t + \epsilon} \ \text{or, with eps_in_sqrt,}\
    \frac{g_t}{\sqrt{\sigma_t^2 + \epsilon}},

  where :math:`\hat x = x / (1-\rho^t)` with ``bias_correction`` and :math:`\hat x = x`
  otherwise. :math:`\nu_0` = ``initial_scale``, :math:`\mu_0 = 0`. No learning rate is applied:
  chain :func:`scale_by_learning_rate` (or ``optax.scale_by_learning_rate``) after it.

  Centered *and* bias-corrected, the first step's variance estimate is exactly
  :math:`g_1^2 - g_1^2 = 0`, so the first update is :math:`g_1/\epsilon` (``lr=0.1``, ``g=0.5``,
  ``eps=1e-8``: :math:`-5\times10^6`). Ways out: ``bias_correction=False`` (the first update is
  then :math:`\mathrm{sign}(g_1)/\sqrt{\rho(1-\rho)}`), a learning-rate warm-up, or a much
  larger ``eps`` (the first update is at most :math:`g_1/\epsilon`).

  Args:
    decay: :math:`\rho` in [0, 1], the averaging constant (PyTorch's ``alpha``, Keras'
      ``rho``); 1 is refused with ``bias_correction`` (:math:`1-\rho^t = 0`).
    eps: :math:`\epsilon \ge 0`, added to the denominator for numerical stability. With
      ``eps=0`` an entry whose denominator is 0 (a zero gradient while :math:`\nu` is 0, or a
      gradient so small that its square underflows) gets its gradient as update, not
      :math:`0/0` or :math:`\pm\infty`, and ``jax.grad`` through the update stays finite.
    eps_in_sqrt: add ``eps`` inside the square root (Keras, TF1, optax's default) instead of
      outside it (PyTorch, this library's default).
    initial_scale: :math:`\nu_0 \ge 0`; TF1 starts at 1.0, everything else at 0.
    centered: divide by an estimate of the gradient's standard deviation instead of its root
      mean square (Graves, 2013).
    bias_correction: divide the moving averages by :math:`1-\rho^t` as Adam does.
    accumulator_dtype: how to *store* ``nu`` (and ``mu`` unless ``mu_dtype`` is given): a
      state format of :mod:`rmsprop_jax.formats` (``formats.bfloat16()``, ``formats.int8()``,
      ``formats.factored()``, ``formats.bitsandbytes_int8()``) or a float dtype (rounded to
      nearest; ``jnp.bfloat16`` halves the state but stalls for decays above about 0.9,
      docs/recipes/bfloat16.md). ``None`` stores the parameter's compute dtype (float32 for
      float16/bfloat16 parameters, whose own dtype would underflow :math:`g^2`). Arithmetic
      runs in :func:`compute_dtype`. A non-floating dtype is refused.
    mu_dtype: the format of ``mu`` (``None``: ``accumulator_dtype``'s, or its fallback).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByRmsPropState` or
    :class:`ScaleByCenteredRmsPropState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from rmsprop_jax import scale_by_rmsprop
    >>> tx = optax.chain(scale_by_rmsprop(decay=0.9), optax.scale_by_learning_rate(0.1))
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> updates, state = tx.update({"w": jnp.array([0.5, -4.0])}, tx.init(params))
    >>> # first step: -0.1 * g / (sqrt(0.1 g^2) + eps) = -0.1 * sign(g) * sqrt(10)
    >>> [round(float(u), 4) for u in updates["w"]]
    [-0.3162, 0.3162]

  References:
    - Hinton, Srivastava & Swersky, *Neural Networks for Machine Learning*, lecture 6e (2012).
    - Graves, *Generating Sequences With Recurrent Neural Networks*, arXiv:1308.0850 (2013).
  """
  hp.check_scalar("decay", decay, minimum=0.0, maximum=1.0)
  hp.check_scalar("eps", eps, minimum=0.0)
  hp.check_scalar("initial_scale", initial_scale, minimum=0.0)
  if bias_correction and not hp.is_traced(decay) and float(np.asarray(decay)) == 1.0:
    raise ValueError(
        "decay=1 with bias_correction=True divides by 1 - decay**t = 0; use decay < 1 or "
        "bias_correction=False."
    )
  nu_format = formats.as_format(accumulator_dtype, name="accumulator_dtype")
  if centered and isinstance(nu_format, formats.FactoredFormat):
    raise ValueError(
        "centered=True cannot use accumulator_dtype=formats.factored(): the factored estimate "
        "of nu is not at least mu**2 entry by entry, so nu - mu**2 is 0 (an update of g/eps) "
        "wherever it underestimates. Use centered=False or a per-element format."
    )
  if mu_dtype is None:
    mu_format = nu_format
  else:
    mu_format = formats.as_format(mu_dtype, name="mu_dtype")
    _check_mu_format(mu_format)

  def init_fn(params: optax.Params):
    count = jnp.zeros([], jnp.int32)
    nu = _accumulators_like(params, initial_scale, nu_format, role="nu")
    if centered:
      mu = _accumulators_like(params, 0.0, mu_format, role="signed")
      return ScaleByCenteredRmsPropState(count=count, mu=mu, nu=nu)
    return ScaleByRmsPropState(count=count, nu=nu)

  def update_fn(updates: optax.Updates, state, params: optax.Params | None = None):
    del params
    check_same_tree(updates, state.nu, tree_name="updates", reference_name="optimizer state's nu",
                    is_leaf=formats.is_encoded)
    check_floating(updates, tree_name="updates")
    count = optax.safe_increment(state.count)

    def debiased(average: jax.Array, real: Any) -> jax.Array:
      if not bias_correction:
        return average
      return average / (1.0 - hp.as_dtype(decay, real) ** count.astype(real))

    def averaging(value_fn, role, key):
      # Each format rounds the new average into its storage; the update uses the value the
      # format returns (for dtypes the stored value read back, a no-op for float32 storage:
      # with bfloat16 storage this keeps XLA to one pass per output; reading the unrounded
      # value instead makes the update pass read the old accumulator while another pass
      # overwrites it in place, so XLA copies the donated buffer).
      def step(g, stored, leaf_index, fmt):
        rho = hp.as_dtype(decay, real_dtype(g.dtype))
        wide = g.astype(compute_dtype(g.dtype))
        # `recompute`: value_fn on a copy CSE cannot merge (formats.MovingAverage.refreshed).
        rule = formats.MovingAverage(
            rho, value_fn(wide), lambda: value_fn(jax.lax.optimization_barrier(wide)),
            source=wide, of_source=value_fn)
        return fmt.accumulate(stored, rule, role=role, key=key, leaf_index=leaf_index)
      return step

    def scale(g, nu, mu=None):
      real = real_dtype(g.dtype)
      g_wide = g.astype(compute_dtype(g.dtype))
      variance = debiased(nu.astype(real), real)
      if mu is not None:
        # Mathematically nu - |mu|^2 >= 0 (Jensen); float rounding can push it just below 0,
        # where the square root would be NaN (bias-corrected first step: exactly g^2 - g^2).
        mu_hat = debiased(mu.astype(g_wide.dtype), real)
        variance = jnp.maximum(variance - _abs_sq(mu_hat), 0.0)
      epsilon = hp.as_dtype(eps, real)
      # With eps = 0 the denominator is 0 where the variance is (a zero gradient while nu is
      # still 0, or a gradient whose square underflows): such an entry's update is g itself,
      # and the denominator is replaced there too, so that neither branch holds inf or NaN
      # (jax.grad through jnp.where sees both). Elsewhere this is bit for bit the plain formula.
      if eps_in_sqrt:
        guard = variance + epsilon == 0
        scaling = jax.lax.rsqrt(jnp.where(guard, 1.0, variance + epsilon))
      else:
        guard = (variance == 0) & (epsilon == 0)
        scaling = 1.0 / (jnp.sqrt(jnp.where(guard, 1.0, variance)) + epsilon)
      scaled = jnp.where(guard, g_wide, scaling * g_wide)
      return scaled.astype(g.dtype)

    nu_key = _step_key(nu_format, "nu", count, 0)
    new_nu, nu_values = _accumulate(
        nu_format, updates, state.nu, averaging(_abs_sq, "nu", nu_key), role="nu",
        name="nu")
    if centered:
      mu_key = _step_key(mu_format, "signed", count, 1)
      new_mu, mu_values = _accumulate(
          mu_format, updates, state.mu, averaging(lambda x: x, "signed", mu_key),
          role="signed", name="mu")
      new_updates = jax.tree.map(scale, updates, nu_values, mu_values)
      return new_updates, ScaleByCenteredRmsPropState(count=count, mu=new_mu, nu=new_nu)
    new_updates = jax.tree.map(scale, updates, nu_values)
    return new_updates, ScaleByRmsPropState(count=count, nu=new_nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _learning_rate_at(learning_rate: hp.ScalarOrSchedule, count: Any) -> Any:
  """The learning rate for this step, as given: cast per leaf with ``hp.as_dtype``."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _schedule_state() -> ScheduleCountState:
  """A step counter, schedule or not: ``inject_hyperparams`` turns schedules into numbers."""
  return ScheduleCountState(count=jnp.zeros([], jnp.int32))


def _next_schedule_state(state: ScheduleCountState) -> tuple[jax.Array, ScheduleCountState]:
  return state.count, ScheduleCountState(count=optax.safe_increment(state.count))


def scale_by_learning_rate(learning_rate: hp.ScalarOrSchedule) -> optax.GradientTransformation:
  r"""Multiplies updates by :math:`-\eta_t` (a number or an optax schedule of the step count).

  Unlike ``optax.scale_by_learning_rate``, the learning rate is cast to each leaf's
  :func:`real_dtype` before it is used (static and traced values give bitwise-identical
  results; float64 leaves get a float64 learning rate) and updates keep the gradient's dtype
  even when the learning rate is a float32 array.

  Args:
    learning_rate: :math:`\eta_t \ge 0`, a scalar or a callable ``count -> scalar``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScheduleCountState` (the step count,
    the schedule's argument), a schedule or not, so that the state's structure is the same
    under ``optax.inject_hyperparams``, which evaluates schedules itself.
  """
  hp.check_learning_rate("learning_rate", learning_rate)

  def init_fn(params: optax.Params):
    del params
    return _schedule_state()

  def update_fn(updates: optax.Updates, state, params: optax.Params | None = None):
    del params
    check_floating(updates, tree_name="updates")
    count, new_state = _next_schedule_state(state)
    value = _learning_rate_at(learning_rate, count)

    def leaf_update(g):
      step_size = -hp.as_dtype(value, real_dtype(g.dtype))
      return (step_size * g.astype(compute_dtype(g.dtype))).astype(g.dtype)

    return jax.tree.map(leaf_update, updates), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def momentum_buffer(
    momentum: hp.Scalar,
    *,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Heavy-ball momentum on the incoming updates, optionally Nesterov's variant.

  .. math::

    b_t = \beta\, b_{t-1} + u_t, \qquad
    \text{output} = b_t \ \text{or, with nesterov,}\ u_t + \beta\, b_t.

  The same rule as ``optax.trace``; the buffer may be stored in ``accumulator_dtype`` while the
  arithmetic runs in :func:`compute_dtype`, and outputs keep the incoming updates' dtype.

  Args:
    momentum: :math:`\beta` in [0, 1).
    nesterov: use Nesterov's look-ahead form.
    accumulator_dtype: the buffer's format (:mod:`rmsprop_jax.formats`, the signed map for
      ``formats.int8()``; a factored format's fallback) or float dtype; the output is the value
      the format returns (for dtypes the stored, rounded buffer). ``None`` stores the
      parameters' compute dtype (float32 for float16/bfloat16 parameters). With a stochastic
      format the state is :class:`CountedMomentumState`, whose step count seeds the rounding.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`MomentumState` (or
    :class:`CountedMomentumState` for stochastic rounding).
  """
  hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  trace_format = formats.as_format(accumulator_dtype, name="accumulator_dtype")
  _check_mu_format(trace_format.for_role("signed"))
  counted = trace_format.for_role("signed").stochastic

  def init_fn(params: optax.Params):
    trace = _accumulators_like(params, 0.0, trace_format, role="signed")
    if counted:
      return CountedMomentumState(count=jnp.zeros([], jnp.int32), trace=trace)
    return MomentumState(trace=trace)

  def update_fn(updates: optax.Updates, state, params: optax.Params | None = None):
    del params
    check_same_tree(
        updates, state.trace, tree_name="updates", reference_name="momentum buffer",
        is_leaf=formats.is_encoded,
    )
    check_floating(updates, tree_name="updates")
    count = optax.safe_increment(state.count) if counted else None
    key = _step_key(trace_format, "signed", count, 2) if counted else None

    def new_trace(u, stored, leaf_index, fmt):
      # As in scale_by_rmsprop: the format rounds to its storage; `output` reads its value.
      dtype = compute_dtype(u.dtype)
      beta = hp.as_dtype(momentum, real_dtype(u.dtype))
      return fmt.accumulate(
          stored, formats.Affine(beta, u.astype(dtype)), role="signed", key=key,
          leaf_index=leaf_index)

    def output(u, value):
      result = value
      if nesterov:
        dtype = compute_dtype(u.dtype)
        result = u.astype(dtype) + hp.as_dtype(momentum, real_dtype(u.dtype)) * result
      return result.astype(u.dtype)

    trace, values = _accumulate(
        trace_format, updates, state.trace, new_trace, role="signed", name="trace")
    new_updates = jax.tree.map(output, updates, values)
    if counted:
      return new_updates, CountedMomentumState(count=count, trace=trace)
    return new_updates, MomentumState(trace=trace)

  return optax.GradientTransformation(init_fn, update_fn)


def add_decoupled_weight_decay(
    learning_rate: hp.ScalarOrSchedule,
    weight_decay: hp.Scalar,
    mask: Any | None = None,
) -> optax.GradientTransformation:
  r"""Adds the decoupled weight-decay step :math:`-\eta_t \lambda\, \theta` to the updates.

  Chained *after* the learning rate and momentum, the decay neither passes through the
  preconditioner nor accumulates in the momentum buffer (Loshchilov & Hutter, 2019; Keras 3's
  ``weight_decay``).

  The state (:class:`ScheduleCountState`, inside ``optax.MaskedState`` with a ``mask``) depends
  only on ``mask`` being given, never on ``weight_decay``'s value or type. A ``weight_decay``
  that is the Python number 0 makes the stage a pass-through that needs no ``params``; an
  array (even a zero one) always computes :math:`u - \eta_t \lambda\,\theta`.

  Args:
    learning_rate: :math:`\eta_t`, the same scalar or schedule as the optimizer's.
    weight_decay: :math:`\lambda \ge 0`.
    mask: a pytree of booleans with the parameters' structure (or a callable ``params ->
      mask``) selecting the leaves to decay, as in ``optax.adamw``.

  Returns:
    An ``optax.GradientTransformation``; ``update`` requires ``params`` unless
    ``weight_decay`` is the number 0.
  """
  hp.check_learning_rate("learning_rate", learning_rate)
  hp.check_scalar("weight_decay", weight_decay, minimum=0.0)
  pass_through = hp.is_static_zero(weight_decay)

  def init_fn(params: optax.Params):
    del params
    return _schedule_state()

  def update_fn(updates: optax.Updates, state, params: optax.Params | None = None):
    count, new_state = _next_schedule_state(state)
    if pass_through:
      return updates, new_state
    if params is None:
      raise ValueError(
          "Decoupled weight decay needs the parameters: call update(grads, state, params)."
      )
    check_same_tree(params, updates, tree_name="params", reference_name="updates")
    check_floating(updates, tree_name="updates")
    value = _learning_rate_at(learning_rate, count)

    def leaf_update(u, p):
      real = real_dtype(u.dtype)
      dtype = compute_dtype(u.dtype)
      decay_step = hp.as_dtype(value, real) * hp.as_dtype(weight_decay, real)
      return (u.astype(dtype) - decay_step * p.astype(dtype)).astype(u.dtype)

    return jax.tree.map(leaf_update, updates, params), new_state

  transformation = optax.GradientTransformation(init_fn, update_fn)
  if mask is not None:
    return optax.masked(transformation, mask)
  return transformation
