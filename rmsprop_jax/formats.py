r"""State formats: how an accumulator leaf (``nu``, ``mu``, the momentum buffer) is stored.

A format turns the float value an accumulator takes after a step into what is kept between
steps, and back. :func:`rmsprop_jax.scale_by_rmsprop` and :func:`rmsprop_jax.momentum_buffer`
call one method per leaf, :meth:`Format.accumulate`, which computes

.. math::

  a_t = \mathrm{rule}(\mathrm{decode}(\text{state}_{t-1})), \qquad
  \text{state}_t = \mathrm{encode}(a_t)

with ``rule`` a :class:`MovingAverage` (:math:`\nu` and :math:`\mu`:
:math:`a_t = \rho\,a_{t-1} + (1-\rho)\,x_t`) or an :class:`Affine` step (the momentum buffer:
:math:`a_t = u_t + \beta\,a_{t-1}`), and returns the value the update uses. A plain dtype
(``accumulator_dtype=jnp.bfloat16``) is :func:`dtype`: rounding to nearest, exactly as before
formats existed. Stochastic rounding draws its random bits from the step count folded into the
format's ``seed`` (see :func:`random_bits`), with integer operations only, so the same inputs
give the same bits under ``jit`` and across reruns, and XLA cannot simplify the rounding away.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Role = Literal["nu", "signed"]
"""``"nu"``: a real second moment, never negative; ``"signed"``: ``mu`` or the momentum buffer."""


class MovingAverage(NamedTuple):
  r"""The moving averages' step :math:`a_t = \rho\,a_{t-1} + (1-\rho)\,x_t`.

  Computed as :math:`a_{t-1} + (1-\rho)(x_t - a_{t-1})`: one product feeding one sum, so a
  compiler that fuses multiply-adds (XLA:CPU does, on CPUs with FMA: AVX2 and later) has one
  way to fuse it whether :math:`\rho` is a constant folded into the program (a Python float)
  or a runtime value (a traced array), and the two give the same bits. In the form
  :math:`\rho a + (1-\rho) x` there are two products to choose from, and XLA chose
  differently for the two programs (one unit in the last place of :math:`\mu` after two steps,
  measured on an AMD EPYC).

  Attributes:
    decay: :math:`\rho`, in the compute dtype.
    target: :math:`x_t` (:math:`|g|^2` for :math:`\nu`, :math:`g` for :math:`\mu`), in the
      compute dtype.
    recompute: optional; computes ``target`` again from copies of its inputs that XLA's common
      subexpression elimination cannot merge with the originals (see :meth:`refreshed`).
    source: optional; a real array :math:`s` with ``target`` = ``of_source(s)`` entry by entry,
      for an ``of_source`` whose magnitude is a nondecreasing function of :math:`|s|` (the
      square for :math:`\nu`, the identity for :math:`\mu`); see :meth:`input_absmax`.
    of_source: that function.
  """

  decay: jax.Array
  target: jax.Array
  recompute: Callable[[], jax.Array] | None = None
  source: jax.Array | None = None
  of_source: Callable[[jax.Array], jax.Array] | None = None

  @property
  def dtype(self) -> jnp.dtype:
    return self.target.dtype

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.target.shape)

  def apply(self, old: jax.Array) -> jax.Array:
    """:math:`a_t` from :math:`a_{t-1}` = ``old``."""
    return old + (1.0 - self.decay) * (self.target - old)

  def input_absmax(self, reduce: Callable[..., jax.Array]) -> jax.Array:
    r"""The largest :math:`|x_t|` of each group ``reduce`` forms (e.g. a block's).

    With a real ``source``, ``|of_source(max(max s, -min s))|``: the same value (rounding is
    monotone, so the largest :math:`|s|` gives the largest :math:`|x|`), from two reductions
    of ``source`` itself. XLA:CPU reduces an array it reads from memory ten times faster than
    one it computes on the way (a square fused into the reduction: 40 ms against 3 ms on a
    16.8M-entry leaf, measured on an AMD EPYC).
    """
    if self.source is None or self.of_source is None or jnp.iscomplexobj(self.source):
      return reduce(jnp.abs(self.refreshed().target), jnp.max)
    largest = jnp.maximum(reduce(self.source, jnp.max), -reduce(self.source, jnp.min))
    return _rounded(jnp.abs(self.of_source(largest)))

  def bound(self, old: jax.Array, new: jax.Array) -> jax.Array:
    r"""An upper bound of :math:`|a_t|` from :math:`A` = ``old`` :math:`\ge |a_{t-1}|` and
    :math:`X` = ``new`` :math:`\ge |x_t|`: :math:`\rho A + (1-\rho) X` (for :math:`0 \le
    \rho \le 1`), computed as :meth:`apply` computes (one product feeding one sum, so one way
    to fuse it: the same bits in every program)."""
    return MovingAverage(self.decay, new).apply(old)

  def map(self, fn: Callable[[jax.Array], jax.Array]) -> MovingAverage:
    """The same step on ``fn`` of the inputs, for a linear ``fn`` (a mean over an axis)."""
    return MovingAverage(self.decay, fn(self.target))

  def refreshed(self) -> MovingAverage:
    """The same step, its ``target`` computed anew (the same values, bit for bit).

    For a second reduction of the target (the factored format's row and column means): XLA:CPU
    fuses an elementwise target such as :math:`|g|^2` into a reduction only when that
    reduction is its one reader, and otherwise writes it out as a float32 array of the leaf's
    size, for every leaf at once under its default scheduler.
    """
    if self.recompute is None:
      return self
    return self._replace(target=self.recompute())


def _rounded(x: jax.Array) -> jax.Array:
  """Non-negative float32 ``x`` itself (NaN stays NaN), through an integer operation.

  A product feeding a sum may be fused into one multiply-add, which skips the product's
  rounding, by one program and not by another (the compiler decides per fused kernel, and
  ``|x * x|`` folds to ``x * x``). Rounding to float32 here, where no multiply-add can reach
  across an integer minimum, keeps a sharded and an unsharded program's bits the same.
  """
  pattern = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  return jax.lax.bitcast_convert_type(jnp.minimum(pattern, 0x7FC00000), jnp.float32)


class Affine(NamedTuple):
  r"""The momentum buffer's step :math:`a_t = u_t + \beta\,a_{t-1}` (one multiply-add).

  Attributes:
    scale: :math:`\beta`, in the compute dtype.
    increment: :math:`u_t`, in the compute dtype.
  """

  scale: jax.Array
  increment: jax.Array

  @property
  def dtype(self) -> jnp.dtype:
    return self.increment.dtype

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.increment.shape)

  def apply(self, old: jax.Array) -> jax.Array:
    """:math:`a_t` from :math:`a_{t-1}` = ``old``."""
    return self.increment + self.scale * old

  def input_absmax(self, reduce: Callable[..., jax.Array]) -> jax.Array:
    """The largest :math:`|u_t|` of each group ``reduce`` forms (e.g. a block's)."""
    return reduce(jnp.abs(self.increment), jnp.max)

  def bound(self, old: jax.Array, new: jax.Array) -> jax.Array:
    r""":math:`|\beta|\,A + U \ge |a_t|` for :math:`|a_{t-1}| \le A` and :math:`|u_t| \le U`."""
    return jnp.abs(self.scale) * old + new

  def map(self, fn: Callable[[jax.Array], jax.Array]) -> Affine:
    """The same step on ``fn`` of the inputs, for a linear ``fn`` (a mean over an axis)."""
    return Affine(self.scale, fn(self.increment))

  def refreshed(self) -> Affine:
    """The same step (see :meth:`MovingAverage.refreshed`; the increment is an input)."""
    return self


Rule = MovingAverage | Affine

ROUNDINGS = ("stochastic", "nearest")


def compute_dtype(dtype: Any) -> jnp.dtype:
  """The dtype arithmetic runs in: at least float32 (bfloat16/float16 are upcast)."""
  return jnp.promote_types(dtype, jnp.float32)


def _check_rounding(rounding: Any) -> None:
  if rounding not in ROUNDINGS:
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}.")


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_seed(seed: Any) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")


# ---------------------------------------------------------------------------------------------
# Random bits.


def step_key(seed: int, count: jax.Array, salt: int) -> jax.Array:
  """The key of one step: ``fold_in(fold_in(PRNGKey(seed), count), salt)``.

  ``salt`` separates the accumulators of one optimizer (0: ``nu``, 1: ``mu``, 2: the momentum
  buffer); :func:`random_bits` folds in the leaf's index.
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), count), salt)


def _mix(x: jax.Array) -> jax.Array:
  """A bijective 32-bit integer hash (the "lowbias32" finaliser: xor-shift, multiply, twice)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def random_bits(key: jax.Array, leaf_index: int, shape: tuple[int, ...]) -> jax.Array:
  r"""Uniform ``uint32`` bits of ``shape`` for leaf ``leaf_index`` of the step ``key``.

  One word :math:`k` drawn from ``fold_in(key, leaf_index)`` keys a counter-based hash of each
  entry's row-major index :math:`i`: :math:`h(i \oplus k)`, with :math:`h` the lowbias32 finaliser
  (:func:`_mix`). Every entry's bits are exactly uniform in each step (:math:`k` is, and :math:`h`
  is a bijection of 32-bit words) and independent across steps, leaves and accumulators (each has
  its own word); within a step the hash's avalanche decorrelates neighbouring entries. One round of
  the hash is enough for that; the second round the bits had earlier in 0.2.0's development
  (:math:`h(h(i \oplus k_0) + k_1)`) made the step on a 16.8M-entry leaf about 15 % slower with int8
  state (2.2-2.4x float32 state's step time against 1.9-2.0x) and 7 % with bfloat16 state
  (1.34-1.44x against 1.24-1.38x; four paired runs on an AMD EPYC, docs/memory.md). Computed shard
  by shard from ``iota`` under sharding, and a pure function of (seed, count, leaf, index).
  """
  word = jax.random.bits(jax.random.fold_in(key, leaf_index), (), jnp.uint32)
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % 2**32)
    stride *= shape[axis]
  return _mix(index ^ word)


def _uniform(bits: jax.Array) -> jax.Array:
  """float32 in [0, 1) from the top 24 bits."""
  return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


# ---------------------------------------------------------------------------------------------
# The formats.


class Format:
  """Base of the state formats: one leaf's storage, hashable so it can be a static argument.

  Subclasses are frozen dataclasses and implement :meth:`init`, :meth:`accumulate` and
  :meth:`decode`. ``stochastic`` formats need a key in :meth:`accumulate`.
  """

  stochastic: ClassVar[bool] = False

  def init(self, leaf: jax.Array, fill: Any, *, role: Role, path: str) -> Any:
    """The stored form of an accumulator for parameter ``leaf``, every entry ``fill``."""
    raise NotImplementedError

  def accumulate(
      self, state: Any, rule: Rule, *, role: Role, key: jax.Array | None, leaf_index: int,
  ) -> tuple[Any, jax.Array]:
    """``encode(rule.apply(decode(state)))`` and the value the update uses.

    ``rule``'s inputs are in the compute dtype (real for ``nu``); the value returned has it.
    """
    raise NotImplementedError

  def decode(self, state: Any, dtype: Any) -> jax.Array:
    """The stored accumulator as an array of the parameter's shape and ``dtype``."""
    raise NotImplementedError

  def for_role(self, role: Role) -> Format:
    """The format that holds ``role`` (a factored format falls back for ``mu``)."""
    del role
    return self

  def stored_kind(self, shape: tuple[int, ...], *, role: Role) -> str:
    """What :meth:`init` stores for a parameter of ``shape``: ``"array"`` or an encoded type."""
    del shape, role
    return "array"

  def check_state(self, state: Any, shape: tuple[int, ...], *, role: Role, where: str) -> None:
    """Raises ``ValueError`` unless ``state`` was made by this format (not another's checkpoint).

    Args:
      state: one stored accumulator (an array or an encoded leaf).
      shape: its parameter's shape.
      role: ``"nu"`` or ``"signed"``.
      where: how to name the accumulator in the message (e.g. ``"nu['w']"``).
    """
    expected = self.stored_kind(tuple(shape), role=role)
    found = type(state).__name__ if is_encoded(state) else "array"
    if expected == "array" and found == "array":
      wanted = self.array_dtype()
      dtype = getattr(state, "dtype", None)
      if dtype is None:
        return
      if wanted is None:
        # The parameter's compute dtype: never narrower than float32.
        if jnp.finfo(dtype).bits >= 32:
          return
        found, expected = f"a {jnp.dtype(dtype)} array", "a float32 (or wider) array"
      elif jnp.dtype(dtype) == wanted:
        return
      else:
        found, expected = f"a {jnp.dtype(dtype)} array", f"a {wanted} array"
    elif expected == found:
      return
    raise ValueError(
        f"The optimizer state's {where} is stored as {found}, but the state format {self!r} "
        f"stores it as {expected}: the state (a restored checkpoint?) was made with another "
        "accumulator_dtype. Restore it into an optimizer with the format it was saved with, or "
        "initialise a new state."
    )

  def array_dtype(self) -> jnp.dtype | None:
    """The dtype a per-element stored array must have (``None``: any)."""
    return None


@dataclasses.dataclass(frozen=True)
class DtypeFormat(Format):
  """Per-element storage in a float dtype, rounded to nearest (``None``: the parameter's).

  ``None`` stores each accumulator in :func:`compute_dtype` of its parameter: float32 for
  bfloat16, float16 and float32 parameters, float64 for float64, complex64/128 for complex
  (real for ``nu``). float16 or bfloat16 *storage* must be asked for: a float16 ``nu``
  underflows for gradients below about 2.4e-4 (``g**2 < 6e-8``), and its update explodes.

  The update reads the stored (rounded) value back: with float32 storage a no-op, bit for bit
  what the library computed before formats existed.
  """

  dtype: Any = None

  def storage_dtype(self, leaf: Any, *, role: Role, path: str) -> jnp.dtype:
    leaf_dtype = compute_dtype(jnp.result_type(leaf))
    is_complex = jnp.issubdtype(leaf_dtype, jnp.complexfloating)
    if self.dtype is None:
      return jnp.finfo(leaf_dtype).dtype if role == "nu" and is_complex else leaf_dtype
    dtype = jnp.dtype(self.dtype)
    if is_complex and role == "signed" and not jnp.issubdtype(dtype, jnp.complexfloating):
      raise ValueError(
          f"accumulator_dtype={dtype} cannot hold mu or the momentum buffer for the complex "
          f"parameter {path} ({jnp.result_type(leaf)}); use accumulator_dtype=None or a complex "
          "dtype."
      )
    return dtype

  def init(self, leaf, fill, *, role, path):
    return jnp.full_like(leaf, fill, dtype=self.storage_dtype(leaf, role=role, path=path))

  def array_dtype(self):
    return None if self.dtype is None else jnp.dtype(self.dtype)

  def accumulate(self, state, rule, *, role, key, leaf_index):
    del role, key, leaf_index
    stored = rule.apply(state.astype(rule.dtype)).astype(state.dtype)
    return stored, stored.astype(rule.dtype)

  def decode(self, state, dtype):
    return state.astype(dtype)


def dtype(value: Any = None) -> DtypeFormat:
  """A plain float dtype, rounded to nearest (what ``accumulator_dtype=value`` means).

  Raises:
    ValueError: for a non-floating dtype (``int8`` is not a quantized format: see :func:`int8`).
  """
  if value is None:
    return DtypeFormat(None)
  try:
    resolved = jnp.dtype(value)
  except TypeError as error:
    raise TypeError(
        f"accumulator_dtype must be a float dtype or a rmsprop_jax.formats format, got "
        f"{value!r}."
    ) from error
  if not jnp.issubdtype(resolved, jnp.inexact):
    raise ValueError(
        f"accumulator_dtype={resolved} is not a floating dtype: an integer accumulator would "
        "truncate the moving average (its first update is about -1e5). For 8-bit state use "
        "accumulator_dtype=rmsprop_jax.formats.int8()."
    )
  return DtypeFormat(resolved)


def _stochastic_bfloat16(value: jax.Array, bits: jax.Array) -> jax.Array:
  r"""float32 -> bfloat16 rounded up or down with probabilities that make it unbiased.

  Adding 16 uniform bits to the low half of the float32 bit pattern and truncating carries
  into the kept half with probability (dropped part) / (bfloat16 spacing): for
  :math:`x` between neighbours :math:`a < x < b`, :math:`P(b) = (x-a)/(b-a)` and
  :math:`E[\mathrm{round}(x)] = x`. Integer operations only; NaN is kept.
  """
  pattern = jax.lax.bitcast_convert_type(value, jnp.uint32)
  rounded = (pattern + (bits >> 16)) & jnp.uint32(0xFFFF0000)
  result = jax.lax.bitcast_convert_type(rounded, jnp.float32)
  return jnp.where(jnp.isnan(value), value, result).astype(jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class BFloat16Format(Format):
  """bfloat16 storage (2 bytes per entry), rounded stochastically (unbiased) or to nearest."""

  rounding: str = "stochastic"
  seed: int = 0

  def __post_init__(self):
    _check_rounding(self.rounding)
    _check_seed(self.seed)

  @property
  def stochastic(self) -> bool:  # type: ignore[override]
    return self.rounding == "stochastic"

  def init(self, leaf, fill, *, role, path):
    if role == "signed" and jnp.iscomplexobj(leaf):
      raise ValueError(
          f"accumulator_dtype=formats.bfloat16() cannot hold mu or the momentum buffer for the "
          f"complex parameter {path}; use a complex dtype or None."
      )
    return jnp.full_like(leaf, fill, dtype=jnp.bfloat16)

  def array_dtype(self):
    return jnp.dtype(jnp.bfloat16)

  def accumulate(self, state, rule, *, role, key, leaf_index):
    del role
    value = rule.apply(state.astype(rule.dtype))
    if self.rounding == "nearest" or rule.dtype != jnp.float32:
      stored = value.astype(jnp.bfloat16)
    else:
      assert key is not None
      stored = _stochastic_bfloat16(value, random_bits(key, leaf_index, value.shape))
    return stored, stored.astype(rule.dtype)

  def decode(self, state, dtype):
    return state.astype(dtype)


def bfloat16(rounding: str = "stochastic", *, seed: int = 0) -> BFloat16Format:
  """bfloat16 state, 2 bytes per parameter; stochastic rounding (the default) is unbiased.

  Rounding to nearest drops every change below half a bfloat16 spacing (8 mantissa bits), so a
  moving average with decay 0.99 or 0.999 stalls below its value; stochastic rounding rounds
  up with probability (dropped part)/(spacing), so the stored average is right on average.
  The update uses the stored value.

  Args:
    rounding: ``"stochastic"`` or ``"nearest"`` (``nearest`` equals ``jnp.bfloat16``).
    seed: folded with the step count into the rounding's random bits.
  """
  return BFloat16Format(rounding, seed)


# --- block-wise 8-bit ------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Int8Leaf:
  """One accumulator in :func:`int8`: ``codes`` (the parameter's shape) and a scale per block."""

  codes: jax.Array
  scales: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.codes.shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BitsandbytesInt8Leaf:
  """One accumulator in :func:`bitsandbytes_int8`: uint8 codes and a float32 absmax per block."""

  bnb_codes: jax.Array
  bnb_absmax: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.bnb_codes.shape)


@dataclasses.dataclass(frozen=True)
class _Blocks:
  """Blocks of a leaf along its last two axes, ``(rows, columns) = shape[-2:]``.

  Rows at least ``block_size`` long are cut into blocks of ``block_size`` (the last one padded
  with zeros); shorter rows are grouped ``block_size // columns`` consecutive rows (of one
  index of the leading axes) to a block. A vector is one row. No block spans two indices of a
  leading axis, so sharding the leading axes never splits a block; a sharded last (or
  second-to-last) axis keeps its blocks whole when each shard holds a whole number of blocks
  (:meth:`check_sharding`). See :meth:`split` for the blocked view, :meth:`scales` for the
  scales' shape (sharded like the parameter's leading axes and its blocked axis).
  """

  shape: tuple[int, ...]
  block_size: int

  @property
  def vector(self) -> bool:
    return len(self.shape) == 1

  @property
  def rows(self) -> int:
    return 1 if self.vector else self.shape[-2]

  @property
  def columns(self) -> int:
    return self.shape[-1]

  @property
  def group(self) -> int:
    return 1 if self.vector else max(1, self.block_size // self.columns)

  @property
  def width(self) -> int:
    return min(self.block_size, self.columns)

  @property
  def row_blocks(self) -> int:
    return -(-self.rows // self.group)

  @property
  def column_blocks(self) -> int:
    return -(-self.columns // self.width)

  @property
  def grouped(self) -> bool:
    return self.group > 1

  def split(self, x: jax.Array) -> jax.Array:
    """``x`` in the blocked view, zero-padded.

    A vector: ``(column_blocks, width)``; rows of at least ``block_size``: ``lead + (rows,
    column_blocks, width)``; shorter rows: ``lead + (row_blocks, group, columns)``. No axis
    of size 1 is inserted (JAX's sharding rules cannot always reshape around one).
    """
    lead = self.shape[:-2]
    if self.grouped:
      pad = self.row_blocks * self.group - self.rows
      if pad:
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, pad), (0, 0)])
      return x.reshape(*lead, self.row_blocks, self.group, self.columns)
    pad = self.column_blocks * self.width - self.columns
    if pad:
      x = jnp.pad(x, [(0, 0)] * (len(self.shape) - 1) + [(0, pad)])
    return x.reshape(*self.shape[:-1], self.column_blocks, self.width)

  def join(self, blocks: jax.Array) -> jax.Array:
    if self.grouped:
      x = blocks.reshape(*self.shape[:-2], self.row_blocks * self.group, self.columns)
      return x[..., : self.rows, :] if x.shape[-2] != self.rows else x
    x = blocks.reshape(*self.shape[:-1], self.column_blocks * self.width)
    return x[..., : self.columns] if x.shape[-1] != self.columns else x

  def scales(self, blocks: jax.Array) -> jax.Array:
    """Each block's largest absolute value: ``lead + (rows, column_blocks)`` (for grouped
    rows ``lead + (row_blocks, 1)``, for a vector ``(column_blocks,)``)."""
    return self.reduce(jnp.abs(blocks), jnp.max)

  def reduce(self, blocks: jax.Array, fn: Callable[..., jax.Array]) -> jax.Array:
    """``fn`` (a reduction such as ``jnp.max``) over each block, in the scales' shape."""
    reduced = fn(blocks, axis=-1)
    return fn(reduced, axis=-1, keepdims=True) if self.grouped else reduced

  def expand(self, scales: jax.Array) -> jax.Array:
    """``scales`` broadcastable against the blocked view."""
    return scales[..., None]

  def check_sharding(self, leaf: Any, *, path: str, what: str) -> None:
    """Raises ``ValueError`` if ``leaf``'s (known) sharding would split a block across shards.

    A leading axis may be sharded freely; the last axis only into shards of a whole number of
    blocks (``width`` entries each), the second-to-last only into a whole number of row groups.
    """
    shard = _shard_shape(leaf)
    if shard is None:
      return
    problems = []
    axes = [(len(self.shape) - 1, self.width, "blocks of")]
    if not self.vector:
      axes.append((len(self.shape) - 2, self.group, "row groups of"))
    for axis, unit, noun in axes:
      size, part = self.shape[axis], shard[axis]
      if part != size and (size % part or part % unit):
        problems.append(f"axis {axis} ({size} entries) is sharded into shards of {part}, not a "
                        f"whole number of {noun} {unit}")
    if problems:
      raise ValueError(
          f"{what} cannot keep the state of the parameter {path} (shape {self.shape}) sharded "
          f"like it: {'; '.join(problems)}, so a block would straddle two shards (and every "
          "update would need a collective). Shard that parameter along another axis (or so that "
          "each shard holds whole blocks), change block_size, or keep it in a per-element format "
          "(raise min_size above its size)."
      )


def _shard_shape(leaf: Any) -> tuple[int, ...] | None:
  """The shape of one shard of ``leaf``, where its sharding is known (else ``None``).

  Concrete arrays carry their sharding; under ``jit`` only explicit mesh axes put it in the
  type (``jax.typeof``).
  """
  shape = tuple(np.shape(leaf))
  sharding = getattr(leaf, "sharding", None)
  if sharding is None:
    try:
      sharding = jax.typeof(leaf).sharding
    except Exception:  # not a JAX value: nothing is known
      return None
  try:
    return tuple(sharding.shard_shape(shape))
  except Exception:  # an abstract sharding (Auto axes): nothing is known
    return None


def _constant_fill(fill: Any) -> np.float32 | None:
  """``fill`` as a float32 constant whose codes and scales ``init`` may write directly.

  ``None`` for what must go through the encoder: a traced value, a non-finite one, or a
  subnormal one (XLA:CPU flushes those to zero inside the encoder).
  """
  if isinstance(fill, jax.core.Tracer) or np.ndim(fill) != 0:
    return None
  value = np.float32(fill)
  if not np.isfinite(value) or (value != 0 and abs(value) < np.finfo(np.float32).tiny):
    return None
  return value


def _constant_scales(blocks: _Blocks, leaf: Any, scale: np.float32) -> jax.Array:
  """``blocks.scales`` of ``scale`` everywhere in ``leaf`` (in ``blocks``' shape, as the encoder
  sees it: the leaf's own, or flattened for bitsandbytes), placed as the encoder places them."""
  filled = jnp.full_like(leaf, scale, dtype=jnp.float32).reshape(blocks.shape)
  return blocks.scales(blocks.split(filled))


@dataclasses.dataclass(frozen=True)
class FloatMap:
  r"""The codes of :func:`int8`: little floats, so that decoding and encoding are bit operations.

  Code :math:`c = 1..n` (``n = 2^b - 1``, ``b`` the magnitude's bits) is the float32 whose bit
  pattern is :math:`(c + o) \ll s`: a float of ``mantissa_bits`` explicit mantissa bits, its
  exponent below that of the largest code :math:`c = n`, which is exactly 1. Code 0 is exactly
  0. With :math:`m` = ``mantissa_bits``,

  .. math::

    \mathrm{value}(c) = 2^{\lfloor (c+1)/2^m \rfloor - 2^{b-m}}\,
      \bigl(1 + ((c+1) \bmod 2^m)/2^m\bigr), \qquad c \ge 1,

  so each octave below 1 holds :math:`2^m` codes, evenly spaced (relative spacing
  :math:`2^{-m}` to :math:`2^{-m-1}`), down to :math:`2^{-16}(1 + 2^{1-m})` for both maps here.
  ``nu``: 8 bits, 4 mantissa bits (16 codes per octave, 3.1-6.3 % apart, smallest
  :math:`1.72\times 10^{-5}`); ``mu`` and the momentum buffer: a sign bit and 7 bits, 3
  mantissa bits (8 per octave, 6.3-12.5 %, smallest :math:`1.91\times 10^{-5}`).

  Decoding is an integer add, a shift and a bitcast; encoding rounds the float32 pattern of
  :math:`x \in [0, 1]` at bit :math:`s` (adding half a code's width, or :math:`s` random bits
  for stochastic rounding: inside an octave the codes are evenly spaced, so the carry comes
  with probability (dropped part) / (spacing), exactly), shifts and subtracts. No table, no
  gather, no logarithm: each step of a leaf is elementwise work that XLA fuses with its
  neighbours, and every CPU computes the same bits.
  """

  magnitude_bits: int
  mantissa_bits: int

  @property
  def last(self) -> int:
    """The largest code (value 1)."""
    return 2**self.magnitude_bits - 1

  @property
  def shift(self) -> int:
    return 23 - self.mantissa_bits

  @property
  def offset(self) -> int:
    return (127 << self.mantissa_bits) - self.last

  @property
  def smallest(self) -> np.float32:
    """The value of code 1, the smallest positive value."""
    return np.uint32((1 + self.offset) << self.shift).view(np.float32)

  def values(self) -> np.ndarray:
    """Every code's value, ``values()[c]`` for ``c = 0..last`` (float32, ascending)."""
    codes = np.arange(self.last + 1, dtype=np.uint32)
    values = ((codes + np.uint32(self.offset)) << np.uint32(self.shift)).view(np.float32)
    return np.where(codes == 0, np.float32(0), values)

  def decode(self, codes: jax.Array) -> jax.Array:
    """The values of non-negative integer ``codes`` (float32)."""
    pattern = (codes.astype(jnp.uint32) + jnp.uint32(self.offset)) << jnp.uint32(self.shift)
    values = jax.lax.bitcast_convert_type(pattern, jnp.float32)
    return jnp.where(codes == 0, jnp.float32(0), values)

  def encode(self, magnitude: jax.Array, bits: jax.Array | None, *, zero_exact: bool) -> jax.Array:
    """The code (int32) of each float32 ``magnitude`` in [0, 1].

    ``bits`` (uniform ``uint32``) round stochastically, else to nearest (ties up). Below the
    smallest code :math:`v_1` the neighbours are 0 and :math:`v_1`: up with probability
    :math:`x / v_1` (or from :math:`v_1 / 2` on). ``zero_exact`` (``nu``): only 0 is code 0; a
    positive value below :math:`v_1` takes code 1.
    """
    pattern = jax.lax.bitcast_convert_type(magnitude, jnp.uint32)
    if bits is None:
      carry = jnp.uint32(1 << (self.shift - 1))
      low_up = magnitude >= jnp.float32(self.smallest / 2)
    else:
      carry = bits >> jnp.uint32(32 - self.shift)
      low_up = _uniform(bits) * jnp.float32(self.smallest) < magnitude
    rounded = ((pattern + carry) >> jnp.uint32(self.shift)).astype(jnp.int32) - self.offset
    low = (magnitude > 0) if zero_exact else low_up
    codes = jnp.where(magnitude < jnp.float32(self.smallest), low.astype(jnp.int32), rounded)
    return jnp.clip(codes, 0, self.last)


NU_MAP = FloatMap(magnitude_bits=8, mantissa_bits=4)
"""``nu``'s map in :func:`int8`: 255 positive codes, 16 per octave, and 0."""
SIGNED_MAP = FloatMap(magnitude_bits=7, mantissa_bits=3)
"""The magnitude map of ``mu`` and the momentum buffer in :func:`int8` (the code's sign apart)."""


@dataclasses.dataclass(frozen=True)
class Int8Format(Format):
  r"""Block-wise 8-bit state: a code per entry and a float32 scale per block.

  Each entry stores its value divided by its block's scale :math:`s` (at least the block's largest
  magnitude; see below), as a code of a :class:`FloatMap`. ``nu`` (:math:`\ge 0`) uses 256
  unsigned codes (:data:`NU_MAP`): code 0 is exactly 0, codes 1..255 little floats with 4 mantissa
  bits from :math:`1.72\times 10^{-5}\,s` to :math:`s` (16 per octave, 3.1 to 6.3 % apart, 4.8
  decades). Only 0 maps to code 0: a positive value below the smallest code rounds up to it, so
  :math:`g/(\sqrt{\nu}+\epsilon)` can never see a :math:`\nu` rounded to 0 (the zero-point problem
  of Li et al., 2023). ``mu`` and the momentum buffer use int8 codes :math:`k = -127..127`: the
  sign of :math:`k` and :data:`SIGNED_MAP` of :math:`|k|` (3 mantissa bits, 8 per octave); there
  rounding to 0 is unbiased and harmless.

  The scale: when a state is made (:meth:`init`, or an encoding of a given array) it is the
  block's largest magnitude, stored exactly. After a step it is a bound on it computed from
  the step's inputs: :math:`s_t = \rho A + (1-\rho) X` for the moving averages, with
  :math:`A` the block's largest stored magnitude before the step (the value of its largest
  code) and :math:`X = \max |x_t|` over the block, and :math:`|\beta| A + \max |u_t|` for
  the momentum buffer (:meth:`MovingAverage.bound`, :meth:`Affine.bound`). The maximum of the
  new values themselves would need them written out first (XLA:CPU does not fuse the decoding
  into a reduction): a float32 copy of the leaf, which is what the format exists to avoid.
  The codes' relative spacing does not depend on where in the map a value falls, so a loose
  bound costs range at the bottom only (below :math:`1.72\times 10^{-5}\,s_t`), not
  precision. For :math:`\nu` (non-negative) the bound is at most twice the block's largest
  value, and each step starts again from the stored maximum, so it never drifts; for signed
  values it is looser in a step where an entry's old value and its input cancel.

  Blocks run along the last axis: rows of at least ``block_size`` entries are cut into blocks
  of ``block_size``, shorter rows (of one index of the leading axes) grouped so that a block
  holds at most ``block_size`` entries. Codes keep the parameter's shape and sharding; the
  scales have shape ``lead + (rows, blocks per row)`` (grouped rows: ``lead + (row groups,
  1)``; a vector: ``(blocks,)``), sharded along the same axes as the parameter. Leaves with
  fewer than ``min_size`` entries stay float32 (or the parameter's wider dtype). The update
  uses the value before quantization.

  Sharded parameters: a block never straddles two shards, so the update runs shard by shard
  with no collective, as long as a sharded last axis is cut into shards of whole blocks (a
  multiple of ``block_size`` entries) and a sharded second-to-last axis into whole row groups;
  leading axes may be sharded freely. :meth:`init` refuses any other sharding it can see (a
  concrete array's, or explicit mesh axes under ``jit``), naming the parameter.
  """

  block_size: int = 256
  min_size: int = 4096
  rounding: str = "stochastic"
  seed: int = 0

  def __post_init__(self):
    _check_positive_int("block_size", self.block_size)
    _check_positive_int("min_size", self.min_size, minimum=0)
    _check_rounding(self.rounding)
    _check_seed(self.seed)

  @property
  def stochastic(self) -> bool:  # type: ignore[override]
    return self.rounding == "stochastic"

  def _quantized(self, leaf: Any) -> bool:
    return self._quantized_shape(np.shape(leaf))

  def _quantized_shape(self, shape: tuple[int, ...]) -> bool:
    return math.prod(shape) >= self.min_size and len(shape) >= 1

  def _blocks(self, shape: tuple[int, ...]) -> _Blocks:
    return _Blocks(tuple(shape), self.block_size)

  def stored_kind(self, shape, *, role):
    return "Int8Leaf" if self._quantized_shape(shape) else "array"

  @staticmethod
  def code_map(role: Role) -> FloatMap:
    """The map of ``nu``'s codes, or of the magnitude of ``mu``'s and the momentum buffer's."""
    return NU_MAP if role == "nu" else SIGNED_MAP

  def init(self, leaf, fill, *, role, path):
    if not self._quantized(leaf):
      return DtypeFormat(None).init(leaf, fill, role=role, path=path)
    if role == "signed" and jnp.iscomplexobj(leaf):
      raise ValueError(
          f"accumulator_dtype=formats.int8() cannot quantize mu or the momentum buffer of the "
          f"complex parameter {path}; pass mu_dtype=None (or a complex dtype) for it."
      )
    blocks = self._blocks(np.shape(leaf))
    blocks.check_sharding(leaf, path=path, what=repr(self))
    constant = _constant_fill(fill)
    if constant is not None:
      # Every block of a constant c has scale |c| and every entry the code of sign(c) * 1 (the
      # map's last code is exactly 1), or code 0 and scale 0 for c = 0: what _encode computes,
      # without a float32 copy of the leaf (test_formats checks the bits).
      last = self.code_map(role).last
      code = 0 if constant == 0 else last if role == "nu" else last * int(np.sign(constant))
      codes = jnp.full_like(leaf, code, dtype=jnp.uint8 if role == "nu" else jnp.int8)
      return Int8Leaf(codes=codes, scales=_constant_scales(blocks, leaf, abs(constant)))
    real = jnp.finfo(compute_dtype(jnp.result_type(leaf))).dtype
    value = jnp.full_like(leaf, fill, dtype=real)
    return self._encode(value, role=role, bits=None)

  def _encode(self, value: jax.Array, *, role: Role, bits: jax.Array | None,
              scales: jax.Array | None = None) -> Int8Leaf:
    """Codes and scales of ``value``; ``bits`` (uniform ``uint32``, ``value``'s shape) round
    stochastically, ``None`` to nearest. ``scales``: a bound on each block's largest
    ``|value|`` (its absmax when ``None``)."""
    blocks = self._blocks(value.shape)
    split = blocks.split(value.astype(jnp.float32))
    if scales is None:
      scales = blocks.scales(split)
    expanded = blocks.expand(scales)
    safe = jnp.where(expanded > 0, expanded, 1.0)
    magnitude = jnp.minimum(jnp.abs(split) / safe, 1.0)
    bits_split = None if bits is None else blocks.split(bits)
    index = self.code_map(role).encode(magnitude, bits_split, zero_exact=role == "nu")
    if role == "nu":
      codes = blocks.join(index.astype(jnp.uint8))
    else:
      codes = blocks.join(jnp.where(split < 0, -index, index).astype(jnp.int8))
    return Int8Leaf(codes=codes, scales=scales)

  def accumulate(self, state, rule, *, role, key, leaf_index):
    if not isinstance(state, Int8Leaf):
      return DtypeFormat(None).accumulate(
          state, rule, role=role, key=key, leaf_index=leaf_index)
    value = rule.apply(self._decode(state, role).astype(rule.dtype))
    blocks = self._blocks(state.shape)
    inputs = rule.input_absmax(lambda x, fn: blocks.reduce(blocks.split(x.astype(jnp.float32)), fn))
    scales = rule.bound(self._largest(state, role), inputs)
    bits = None
    if self.rounding == "stochastic":
      assert key is not None
      bits = random_bits(key, leaf_index, value.shape)
    return self._encode(value, role=role, bits=bits, scales=scales), value

  def _largest(self, state: Int8Leaf, role: Role) -> jax.Array:
    """Each block's largest stored magnitude (the value of its largest code), like the scales.

    A reduction of the codes alone (no decoding per entry): the map is increasing.
    """
    blocks = self._blocks(state.shape)
    codes = blocks.split(state.codes)
    top = blocks.reduce(codes, jnp.max).astype(jnp.int32)
    if role != "nu":
      top = jnp.maximum(top, -blocks.reduce(codes, jnp.min).astype(jnp.int32))
    return _rounded(self.code_map(role).decode(top) * state.scales)

  def _decode(self, state: Int8Leaf, role: Role) -> jax.Array:
    blocks = self._blocks(state.shape)
    if role == "nu":  # unsigned codes
      values = self.code_map(role).decode(state.codes)
    else:
      codes = state.codes.astype(jnp.int32)
      magnitude = self.code_map(role).decode(jnp.abs(codes))
      values = jnp.where(codes < 0, -magnitude, magnitude)
    split = blocks.split(values) * blocks.expand(state.scales)
    return blocks.join(split)

  def decode(self, state, dtype):
    if not isinstance(state, Int8Leaf):
      return state.astype(dtype)
    role: Role = "nu" if state.codes.dtype == jnp.uint8 else "signed"
    return self._decode(state, role).astype(dtype)


def int8(
    block_size: int = 256,
    min_size: int = 4096,
    rounding: str = "stochastic",
    *,
    seed: int = 0,
) -> Int8Format:
  """Block-wise 8-bit state, about 1.02 bytes per parameter (see :class:`Int8Format`).

  Args:
    block_size: entries per block (one float32 scale each); a positive integer.
    min_size: leaves with fewer entries stay float32, as in bitsandbytes.
    rounding: ``"stochastic"`` (unbiased) or ``"nearest"``.
    seed: folded with the step count into the rounding's random bits.
  """
  return Int8Format(block_size, min_size, rounding, seed)


def bitsandbytes_dynamic_map() -> np.ndarray:
  """bitsandbytes' signed dynamic map (``create_dynamic_map(signed=True)``), 256 float32 values.

  Dettmers' dynamic type: 7 decades :math:`10^{-6..0}`, the :math:`i`-th with
  :math:`2^{i}+1` linearly spaced boundaries on [0.1, 1] (their midpoints are the codes), both
  signs, plus 0 and 1; computed in float32 like ``torch.linspace`` (whose vectorised steps
  depend on the CPU's vector width: the two agree to an ulp, not always bit for bit).
  """

  def linspace(start: float, end: float, steps: int) -> np.ndarray:
    # torch.linspace (float32): the first half counts up from start, the second down from end.
    step = (np.float32(end) - np.float32(start)) / np.float32(steps - 1)  # in float32
    i = np.arange(steps)
    half = steps // 2
    up = np.float32(start) + step * i.astype(np.float32)
    down = np.float32(end) - step * (steps - 1 - i).astype(np.float32)
    return np.where(i < half, up, down).astype(np.float32)

  data: list[float] = []
  for i in range(7):
    boundaries = linspace(0.1, 1.0, 2**i + 1)
    means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
    scale = 10.0 ** (-6 + i)
    data += (np.float32(scale) * means).astype(np.float32).tolist()
    data += (-np.float32(scale) * means).astype(np.float32).tolist()
  data += [0.0, 1.0]
  data += [0.0] * (256 - len(data))
  return np.sort(np.asarray(data, dtype=np.float32))


_BNB_DECADES = 7
_BNB_SCALES = tuple(np.float32(10.0 ** (-6 + i)) for i in range(_BNB_DECADES))
# linspace(0.1, 1, 2^i + 1)'s float32 step: (1 - 0.1) / 2^i, exact once 1 - 0.1 is rounded.
_BNB_STEPS = tuple((np.float32(1.0) - np.float32(0.1)) / np.float32(2**i)
                   for i in range(_BNB_DECADES))


def _choose(index: jax.Array, constants: tuple[np.float32, ...]) -> jax.Array:
  """``constants[index]`` by comparisons (a few selects; no gather)."""
  out = jnp.full(index.shape, constants[0], jnp.float32)
  for i, constant in enumerate(constants[1:], start=1):
    out = jnp.where(index == i, jnp.float32(constant), out)
  return out


def _bnb_boundary(decade: jax.Array, k: jax.Array) -> jax.Array:
  """``linspace(0.1, 1, 2^decade + 1)[k]`` in float32, as :func:`bitsandbytes_dynamic_map`
  computes it (the first half up from 0.1, the second down from 1). The products are rounded
  before their sums (:func:`_rounded`), so that no multiply-add skips a rounding."""
  n = jnp.left_shift(jnp.int32(1), decade)
  step = _choose(decade, _BNB_STEPS)
  up = jnp.float32(0.1) + _rounded(step * k.astype(jnp.float32))
  down = jnp.float32(1.0) - _rounded(step * (n - k).astype(jnp.float32))
  return jnp.where(k < (n + 1) // 2, up, down)


def _bnb_magnitude(rank: jax.Array) -> jax.Array:
  r"""The ``rank``-th positive value of bitsandbytes' dynamic map (int32 0..127, ascending).

  Ranks :math:`2^i - 1 .. 2^{i+1} - 2` are decade :math:`i`: value
  :math:`10^{i-6}\,(b_k + b_{k+1})/2` with :math:`b` = ``linspace(0.1, 1, 2^i + 1)`` and
  :math:`k` = rank :math:`- (2^i - 1)`; rank 127 is 1. The same float32 operations as the
  table (tests compare all 256 codes bit for bit), entry by entry: no table, no gather.
  """
  decade = sum((((rank + 1) >= (1 << i)).astype(jnp.int32) for i in range(1, _BNB_DECADES)),
               jnp.zeros_like(rank))
  k = rank - (jnp.left_shift(jnp.int32(1), decade) - 1)
  mean = (_bnb_boundary(decade, k) + _bnb_boundary(decade, k + 1)) / jnp.float32(2.0)
  value = _rounded(_choose(decade, _BNB_SCALES) * mean)
  return jnp.where(rank >= 127, jnp.float32(1.0), value)


def _bnb_count_below(magnitude: jax.Array) -> jax.Array:
  """How many positive values of the map are below ``magnitude`` (in [0, 1]): the decade
  from comparisons, the place in it from the codes' linear spacing (off by at most one near
  a code, which the caller corrects by comparing with the codes themselves)."""
  decade = sum(((magnitude >= jnp.float32(_BNB_SCALES[i - 1])).astype(jnp.int32)
                for i in range(1, _BNB_DECADES)), jnp.zeros(magnitude.shape, jnp.int32))
  n = jnp.left_shift(jnp.int32(1), decade)
  position = (magnitude / _choose(decade, _BNB_SCALES) - jnp.float32(0.1)) / _choose(
      decade, _BNB_STEPS)
  within = jnp.clip(jnp.ceil(position - jnp.float32(0.5)), 0, n.astype(jnp.float32))
  return n - 1 + within.astype(jnp.int32)


def bitsandbytes_encode(x: jax.Array) -> jax.Array:
  r"""The index (int32) of the entry of :func:`bitsandbytes_dynamic_map` nearest to each
  float32 ``x`` in :math:`[-1, 1]`, as bitsandbytes' search picks it.

  With ``table`` sorted and :math:`u` = ``clip(searchsorted(table, x), 1, 255)``: :math:`u`
  if ``table[u] - x < x - table[u - 1]`` (in float32), else :math:`u - 1`; NaN gives 0.
  Computed without the table: the map is symmetric (255 is 1, 127 is 0, code
  :math:`128 + r` is the :math:`r`-th positive value :math:`v_r`, code :math:`126 - r` is
  :math:`-v_r`), so the search runs on :math:`|x|` between :math:`v_{c-1} < |x| \le v_c`
  (:func:`_bnb_count_below`, checked against :func:`_bnb_magnitude`), with the tie rule of
  the sign: a positive tie goes to the smaller value, a negative one to the larger magnitude.
  """
  magnitude = jnp.abs(x)
  guess = _bnb_count_below(magnitude)
  below = _bnb_magnitude(jnp.maximum(guess - 1, 0))
  at = _bnb_magnitude(jnp.minimum(guess, 127))
  up = (guess <= 127) & (at < magnitude)
  down = (guess >= 1) & (below >= magnitude)
  third = _bnb_magnitude(jnp.clip(jnp.where(up, guess + 1, guess - 2), 0, 127))
  count = jnp.where(up, guess + 1, jnp.where(down, guess - 1, guess))
  lower = jnp.where(up, at, jnp.where(down, third, below))
  lower = jnp.where(count == 0, jnp.float32(0.0), lower)
  upper = jnp.where(up, third, jnp.where(down, below, at))
  to_lower, to_upper = magnitude - lower, upper - magnitude
  positive = x > 0
  larger = jnp.where(positive, to_upper < to_lower, ~(to_lower < to_upper))
  rank = jnp.where(larger, count, count - 1)  # -1: zero
  code = jnp.where(rank < 0, 127, jnp.where(positive, 128 + rank, 126 - rank))
  # Below -v_126 the nearest is -v_126 (code 0): the map has no -1.
  code = jnp.where((x < 0) & (count >= 127), 0, code)
  return jnp.where(jnp.isnan(x), 0, code)


def bitsandbytes_decode(codes: jax.Array) -> jax.Array:
  """``bitsandbytes_dynamic_map()[codes]`` (float32) for integer ``codes`` in 0..255, without
  the table (see :func:`bitsandbytes_encode`)."""
  codes = codes.astype(jnp.int32)
  positive = codes >= 128
  magnitude = _bnb_magnitude(jnp.where(positive, codes - 128, 126 - codes))
  value = jnp.where(positive, magnitude, -magnitude)
  return jnp.where(codes == 127, jnp.float32(0.0), value)


@dataclasses.dataclass(frozen=True)
class BitsandbytesInt8Format(Format):
  """bitsandbytes' 8-bit blockwise state, as ``bitsandbytes.optim.RMSprop8bit`` keeps it.

  The tensor is flattened and cut into blocks of 256 (the last one shorter); each block stores
  its absmax in float32 and each entry the index of the nearest value of the *signed* dynamic
  map (:func:`bitsandbytes_dynamic_map`) to ``value / absmax``, also for ``nu``. The update uses
  the value before quantization. Tensors with fewer than ``min_size`` entries stay float32.

  Sharded parameters: the flattened blocks stay within a shard only when the parameter is
  sharded along its first axis alone, into shards of a multiple of 256 entries; then codes
  are sharded like the parameter, the absmax vector along its blocks, and the update has no
  collective. Any other sharding it can see (a column-sharded matrix, say) is refused at
  :meth:`init`, naming the parameter: its blocks would straddle shards. :func:`int8` (blocks
  along the last axis) follows any sharding of whole blocks.
  """

  min_size: int = 4096
  block_size: ClassVar[int] = 256

  def __post_init__(self):
    _check_positive_int("min_size", self.min_size, minimum=0)

  def init(self, leaf, fill, *, role, path):
    if math.prod(np.shape(leaf)) < self.min_size or np.ndim(leaf) == 0:
      return DtypeFormat(None).init(leaf, fill, role=role, path=path)
    if jnp.iscomplexobj(leaf):
      raise ValueError(
          f"accumulator_dtype=formats.bitsandbytes_int8() cannot hold the complex parameter "
          f"{path}; bitsandbytes has no complex state."
      )
    self._check_sharding(leaf, path)
    constant = _constant_fill(fill)
    if constant is None:
      return self._encode(jnp.full_like(leaf, fill, dtype=jnp.float32))
    # A constant c: each block's absmax is |c| and every entry holds _encode's code of sign(c)
    # (the same search and tie rule, in NumPy), or code 0 and absmax 0 for c = 0.
    table = bitsandbytes_dynamic_map()
    target = np.float32(np.sign(constant))
    upper = int(np.clip(np.searchsorted(table, target, side="left"), 1, 255))
    nearer_upper = (table[upper] - target) < (target - table[upper - 1])
    code = 0 if constant == 0 else (upper if nearer_upper else upper - 1)
    scales = _constant_scales(self._blocks(np.shape(leaf)), leaf, abs(constant))
    return BitsandbytesInt8Leaf(bnb_codes=jnp.full_like(leaf, code, dtype=jnp.uint8),
                                bnb_absmax=scales)

  def _blocks(self, shape: tuple[int, ...]) -> _Blocks:
    return _Blocks((math.prod(shape),), self.block_size)

  def _check_sharding(self, leaf: Any, path: str) -> None:
    shape = tuple(np.shape(leaf))
    shard = _shard_shape(leaf)
    if shard is None or shard == shape:
      return
    inner = math.prod(shape[1:])
    if shard[1:] != shape[1:] or shape[0] % shard[0] or (shard[0] * inner) % self.block_size:
      raise ValueError(
          f"{self!r} cannot keep the state of the parameter {path} (shape {shape}, shards of "
          f"{shard}) sharded like it: bitsandbytes cuts the flattened tensor into blocks of "
          f"{self.block_size}, which stay within a shard only when the parameter is sharded "
          f"along its first axis alone into shards of a multiple of {self.block_size} entries. "
          "Shard it that way, or use formats.int8() (blocks along the last axis)."
      )

  def stored_kind(self, shape, *, role):
    quantized = math.prod(shape) >= self.min_size and len(shape) > 0
    return "BitsandbytesInt8Leaf" if quantized else "array"

  def _encode(self, value: jax.Array) -> BitsandbytesInt8Leaf:
    blocks = self._blocks(value.shape)
    split = blocks.split(value.reshape(-1))
    absmax = blocks.expand(blocks.scales(split))
    index = bitsandbytes_encode(jnp.clip(split / absmax, -1.0, 1.0))
    index = jnp.where(absmax > 0, index, 0)
    codes = blocks.join(index.astype(jnp.uint8)).reshape(value.shape)
    return BitsandbytesInt8Leaf(bnb_codes=codes, bnb_absmax=absmax.reshape(-1))

  def _decode(self, state: BitsandbytesInt8Leaf) -> jax.Array:
    blocks = self._blocks(state.shape)
    values = blocks.split(bitsandbytes_decode(state.bnb_codes.reshape(-1)))
    return blocks.join(values * blocks.expand(state.bnb_absmax)).reshape(state.shape)

  def accumulate(self, state, rule, *, role, key, leaf_index):
    if not isinstance(state, BitsandbytesInt8Leaf):
      return DtypeFormat(None).accumulate(
          state, rule, role=role, key=key, leaf_index=leaf_index)
    value = rule.apply(self._decode(state).astype(rule.dtype))
    return self._encode(value), value

  def decode(self, state, dtype):
    if not isinstance(state, BitsandbytesInt8Leaf):
      return state.astype(dtype)
    return self._decode(state).astype(dtype)


def bitsandbytes_int8(min_size: int = 4096) -> BitsandbytesInt8Format:
  """bitsandbytes' RMSprop8bit state exactly (see :class:`BitsandbytesInt8Format`).

  Use it through :func:`rmsprop_jax.compat.bitsandbytes_rmsprop8bit` to port a bitsandbytes
  run. Its signed map spends half its codes on negative values ``nu`` never takes, and rounding
  to nearest drops small changes: :func:`int8` tracks float32 far better (docs/memory.md).

  Args:
    min_size: bitsandbytes' ``min_8bit_size``.
  """
  return BitsandbytesInt8Format(min_size)


# --- factored ---------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FactoredLeaf:
  """``nu`` of a matrix in :func:`factored`: the row and column means of its average."""

  row: jax.Array
  column: jax.Array
  shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})


def _factored_axes(shape: tuple[int, ...], min_dim_size: int) -> tuple[int, int] | None:
  """(second-largest axis, largest axis), or None when the leaf is not factored."""
  if len(shape) < 2:
    return None
  order = np.argsort(shape, kind="stable")
  if shape[order[-2]] < min_dim_size:
    return None
  return int(order[-2]), int(order[-1])


@dataclasses.dataclass(frozen=True)
class FactoredFormat(Format):
  r"""Adafactor's factored second moment for ``nu`` (Shazeer & Stern, 2018).

  For a leaf whose two largest axes :math:`r` (second largest) and :math:`c` (largest) both
  have at least ``min_dim_size`` entries, only the means of the average over each are kept,
  :math:`R = \mathrm{mean}_c\,\nu` and :math:`C = \mathrm{mean}_r\,\nu`, and the update uses

  .. math:: \hat\nu = R\,C / \mathrm{mean}_r R,

  the rank-1 estimate with the right row and column means (0 where the mean is 0). Means are
  linear, so averaging the statistics is averaging :math:`\nu`: ``accumulate`` never forms the
  full matrix in the state. Other leaves (vectors, small matrices) and ``mu`` / the momentum
  buffer are stored in ``fallback`` (default: the parameter's compute dtype, float32).
  Factoring a sharded axis needs a reduction across its shards (an all-reduce per leaf).

  The column means reduce :math:`|g|^2` computed anew (:meth:`MovingAverage.refreshed`), so
  that XLA:CPU fuses the square into both reductions instead of writing a float32
  :math:`|g|^2` of every factored leaf (all alive at once): the compiled step then needs no
  leaf-sized temporary (docs/memory.md).
  """

  min_dim_size: int = 128
  fallback: Format = dataclasses.field(default_factory=DtypeFormat)

  def __post_init__(self):
    _check_positive_int("min_dim_size", self.min_dim_size)
    if not isinstance(self.fallback, Format) or isinstance(self.fallback, FactoredFormat):
      raise ValueError(
          "fallback must be a per-element format (formats.dtype(...), formats.bfloat16(), "
          f"formats.int8()), got {self.fallback!r}."
      )

  @property
  def stochastic(self) -> bool:  # type: ignore[override]
    return self.fallback.stochastic

  def for_role(self, role: Role) -> Format:
    return self if role == "nu" else self.fallback

  def stored_kind(self, shape, *, role):
    if role == "nu" and _factored_axes(shape, self.min_dim_size) is not None:
      return "FactoredLeaf"
    return self.fallback.stored_kind(shape, role=role)

  def array_dtype(self):
    return self.fallback.array_dtype()

  def init(self, leaf, fill, *, role, path):
    axes = _factored_axes(np.shape(leaf), self.min_dim_size)
    if role != "nu" or axes is None:
      return self.fallback.init(leaf, fill, role=role, path=path)
    real = jnp.finfo(compute_dtype(jnp.result_type(leaf))).dtype
    value = jnp.full_like(leaf, fill, dtype=real)
    return self._encode(value, axes)

  @staticmethod
  def _encode(value: jax.Array, axes: tuple[int, int]) -> FactoredLeaf:
    r, c = axes
    return FactoredLeaf(row=jnp.mean(value, axis=c), column=jnp.mean(value, axis=r),
                        shape=tuple(value.shape))

  def accumulate(self, state, rule, *, role, key, leaf_index):
    if not isinstance(state, FactoredLeaf):
      return self.fallback.accumulate(
          state, rule, role=role, key=key, leaf_index=leaf_index)
    axes = _factored_axes(state.shape, self.min_dim_size)
    assert axes is not None
    r, c = axes
    new = FactoredLeaf(
        row=rule.map(lambda x: jnp.mean(x, axis=c)).apply(state.row),
        column=rule.refreshed().map(lambda x: jnp.mean(x, axis=r)).apply(state.column),
        shape=state.shape)
    return new, self._estimate(new, axes)

  @staticmethod
  def _estimate(state: FactoredLeaf, axes: tuple[int, int]) -> jax.Array:
    r, c = axes
    reduced_r = r - 1 if r > c else r
    mean = jnp.mean(state.row, axis=reduced_r, keepdims=True)
    row = jnp.where(mean > 0, state.row / jnp.where(mean > 0, mean, 1.0), 0.0)
    return jnp.expand_dims(row, c) * jnp.expand_dims(state.column, r)

  def decode(self, state, dtype):
    if not isinstance(state, FactoredLeaf):
      return self.fallback.decode(state, dtype)
    axes = _factored_axes(state.shape, self.min_dim_size)
    assert axes is not None
    return self._estimate(state, axes).astype(dtype)


def factored(min_dim_size: int = 128, *, fallback: Format | None = None) -> FactoredFormat:
  """Factored ``nu`` (row and column statistics, O(rows + columns)); see :class:`FactoredFormat`.

  Args:
    min_dim_size: factor a leaf only if its two largest axes have at least this many entries
      (optax's Adafactor uses 128).
    fallback: the per-element format of unfactored leaves, ``mu`` and the momentum buffer;
      default the parameter's compute dtype (float32).
  """
  return FactoredFormat(min_dim_size, DtypeFormat() if fallback is None else fallback)


# ---------------------------------------------------------------------------------------------
# Helpers the transformations use.

ENCODED_LEAVES = (Int8Leaf, BitsandbytesInt8Leaf, FactoredLeaf)


def is_encoded(node: Any) -> bool:
  """Whether ``node`` is one encoded accumulator (a leaf of the parameters' tree)."""
  return isinstance(node, ENCODED_LEAVES)


def as_format(value: Any, *, name: str = "accumulator_dtype") -> Format:
  """``None``, a float dtype or a :class:`Format` -> a :class:`Format`.

  Raises:
    ValueError: for a non-floating dtype, naming ``name`` and pointing to :func:`int8`.
    TypeError: for anything else.
  """
  if isinstance(value, Format):
    return value
  try:
    return dtype(value)
  except (TypeError, ValueError) as error:
    raise type(error)(str(error).replace("accumulator_dtype", name, 1)) from None


def state_nbytes(state: Any) -> int:
  """Bytes of every array in ``state`` (its leaves' ``nbytes`` summed)."""
  leaves = jax.tree.leaves(state)
  return sum(int(np.prod(np.shape(x))) * jnp.dtype(x.dtype).itemsize for x in leaves)
