"""The gradient transformations RMSprop is chained from.

Each function returns an ``optax.GradientTransformation`` over any pytree, with a ``NamedTuple``
state. Hyperparameters may be Python numbers, arrays or tracers (see
:mod:`rmsprop_jax.hyperparameters`). Arithmetic, hyperparameters included, runs in each leaf's
``promote_types(dtype, float32)``; accumulators are stored in ``accumulator_dtype`` (default: the
parameter's dtype) and built with ``jnp.full_like``, so each keeps its parameter's sharding;
updates are returned in the gradient's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import hyperparameters as hp
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


class ScheduleCountState(NamedTuple):
  """State of the transformations that take a learning rate (a number or a schedule).

  Kept for numbers too, so that the state's structure does not change when
  ``optax.inject_hyperparams`` turns a schedule into a number.

  Attributes:
    count: number of updates applied so far (int32 scalar), the schedule's argument.
  """

  count: chex.Array


def compute_dtype(dtype: Any) -> jnp.dtype:
  """The dtype arithmetic runs in: at least float32 (bfloat16/float16 are upcast)."""
  return jnp.promote_types(dtype, jnp.float32)


def real_dtype(dtype: Any) -> jnp.dtype:
  """The real dtype hyperparameters and second moments take for a leaf of ``dtype``.

  float32 for bfloat16, float16, float32 and complex64 leaves; float64 for float64 and
  complex128 leaves.
  """
  return jnp.finfo(compute_dtype(dtype)).dtype


def _storage_dtype(leaf: Any, accumulator_dtype: Any, *, real: bool, path: str, name: str) -> Any:
  """Dtype of an accumulator leaf for parameter ``leaf``."""
  leaf_dtype = jnp.result_type(leaf)
  is_complex = jnp.issubdtype(leaf_dtype, jnp.complexfloating)
  if accumulator_dtype is None:
    return jnp.finfo(leaf_dtype).dtype if real and is_complex else leaf_dtype
  accumulator_dtype = jnp.dtype(accumulator_dtype)
  if is_complex and not real and not jnp.issubdtype(accumulator_dtype, jnp.complexfloating):
    raise ValueError(
        f"accumulator_dtype={accumulator_dtype} cannot hold {name} for the complex parameter "
        f"{path} ({leaf_dtype}); use accumulator_dtype=None or a complex dtype."
    )
  return accumulator_dtype


def _accumulators_like(params: Any, fill: Any, accumulator_dtype: Any, *, real: bool, name: str):
  """One ``fill``-valued accumulator per parameter leaf, with that leaf's shape and sharding.

  ``jnp.full_like`` (unlike ``jnp.full(shape, ...)``) places each accumulator like its parameter:
  eagerly on any mesh, and under ``jit`` where the sharding is part of the type (explicit axes).
  """
  check_floating(params, tree_name="params")

  def leaf_fn(path, leaf):
    dtype = _storage_dtype(
        leaf, accumulator_dtype, real=real, path=jax.tree_util.keystr(path), name=name
    )
    return jnp.full_like(leaf, fill, dtype=dtype)

  return jax.tree_util.tree_map_with_path(leaf_fn, params)


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

  Args:
    decay: :math:`\rho` in [0, 1], the averaging constant (PyTorch's ``alpha``, Keras'
      ``rho``).
    eps: :math:`\epsilon \ge 0`, added to the denominator for numerical stability. With
      ``eps=0`` a gradient entry that is 0 while its :math:`\nu` is 0 gets update 0, not
      :math:`0/0`.
    eps_in_sqrt: add ``eps`` inside the square root (Keras, TF1, optax's default) instead of
      outside it (PyTorch, this library's default).
    initial_scale: :math:`\nu_0 \ge 0`; TF1 starts at 1.0, everything else at 0.
    centered: divide by an estimate of the gradient's standard deviation instead of its root
      mean square (Graves, 2013).
    bias_correction: divide the moving averages by :math:`1-\rho^t` as Adam does.
    accumulator_dtype: dtype to *store* ``nu`` and ``mu`` in (e.g. ``jnp.bfloat16`` halves the
      state); arithmetic still runs in :func:`compute_dtype` on the stored (rounded) averages.
      ``None`` keeps the parameters' dtype. In bfloat16 a step's change below half the
      spacing near ``nu`` is rounded away, so with decays above about 0.9 ``nu`` stalls below
      its value (docs/recipes/bfloat16.md).

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
  if accumulator_dtype is not None:
    accumulator_dtype = jnp.dtype(accumulator_dtype)

  def init_fn(params: optax.Params):
    count = jnp.zeros([], jnp.int32)
    nu = _accumulators_like(params, initial_scale, accumulator_dtype, real=True, name="nu")
    if centered:
      mu = _accumulators_like(params, 0.0, accumulator_dtype, real=False, name="mu")
      return ScaleByCenteredRmsPropState(count=count, mu=mu, nu=nu)
    return ScaleByRmsPropState(count=count, nu=nu)

  def update_fn(updates: optax.Updates, state, params: optax.Params | None = None):
    del params
    check_same_tree(updates, state.nu, tree_name="updates", reference_name="optimizer state's nu")
    check_floating(updates, tree_name="updates")
    count = optax.safe_increment(state.count)

    def debiased(average: jax.Array, real: Any) -> jax.Array:
      if not bias_correction:
        return average
      return average / (1.0 - hp.as_dtype(decay, real) ** count.astype(real))

    def moving_average(g, average, value_fn):
      # Accumulators are rounded to their storage dtype, and `scale` reads the stored value
      # back (a no-op for float32 storage). With bfloat16 storage this keeps XLA to one pass
      # per output: reading the unrounded value instead makes the update pass read the old
      # accumulator while another pass overwrites it in place, so XLA copies the donated buffer.
      rho = hp.as_dtype(decay, real_dtype(g.dtype))
      value = value_fn(g.astype(compute_dtype(g.dtype)))
      return ((1.0 - rho) * value + rho * average.astype(value.dtype)).astype(average.dtype)

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
      if eps_in_sqrt:
        scaling = jax.lax.rsqrt(variance + epsilon)
      else:
        scaling = 1.0 / (jnp.sqrt(variance) + epsilon)
      # With eps = 0, a zero gradient where nu is still 0 would give 0 * inf = NaN; its update
      # is 0 (g itself). Elsewhere scaling is finite and scaling * 0 is g, bit for bit.
      scaled = jnp.where((g_wide == 0) & (variance == 0), g_wide, scaling * g_wide)
      return scaled.astype(g.dtype)

    new_nu = jax.tree.map(lambda g, nu: moving_average(g, nu, _abs_sq), updates, state.nu)
    if centered:
      new_mu = jax.tree.map(lambda g, mu: moving_average(g, mu, lambda x: x), updates, state.mu)
      new_updates = jax.tree.map(scale, updates, new_nu, new_mu)
      return new_updates, ScaleByCenteredRmsPropState(count=count, mu=new_mu, nu=new_nu)
    new_updates = jax.tree.map(scale, updates, new_nu)
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
    accumulator_dtype: dtype to store the buffer in; the output is the stored (rounded) buffer.
      ``None`` keeps the parameters' dtype.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`MomentumState`.
  """
  hp.check_scalar("momentum", momentum, minimum=0.0, maximum=1.0, include_maximum=False)
  if accumulator_dtype is not None:
    accumulator_dtype = jnp.dtype(accumulator_dtype)

  def init_fn(params: optax.Params):
    return MomentumState(
        trace=_accumulators_like(params, 0.0, accumulator_dtype, real=False, name="trace")
    )

  def update_fn(updates: optax.Updates, state: MomentumState, params: optax.Params | None = None):
    del params
    check_same_tree(
        updates, state.trace, tree_name="updates", reference_name="momentum buffer"
    )
    check_floating(updates, tree_name="updates")

    def new_trace(u, trace):
      # As in scale_by_rmsprop: round to the storage dtype; `output` reads the stored buffer.
      dtype = compute_dtype(u.dtype)
      beta = hp.as_dtype(momentum, real_dtype(u.dtype))
      return (u.astype(dtype) + beta * trace.astype(dtype)).astype(trace.dtype)

    def output(u, trace):
      dtype = compute_dtype(u.dtype)
      result = trace.astype(dtype)
      if nesterov:
        result = u.astype(dtype) + hp.as_dtype(momentum, real_dtype(u.dtype)) * result
      return result.astype(u.dtype)

    trace = jax.tree.map(new_trace, updates, state.trace)
    return jax.tree.map(output, updates, trace), MomentumState(trace=trace)

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
