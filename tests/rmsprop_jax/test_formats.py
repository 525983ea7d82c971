"""State formats (rmsprop_jax.formats): encode/decode, unbiased rounding, composition, errors."""

from __future__ import annotations

import functools
import operator
from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import formats, momentum_buffer, scale_by_rmsprop

# ------------------------------------------------------------------ encode / decode vs NumPy


def _numpy_float_map(mantissa_bits):
  """The int8 map from its formula: code c >= 1 is 2**(floor((c+1)/2**m) - 16) (1 + frac)."""
  c = np.arange(2 ** (mantissa_bits + 4), dtype=np.float64)
  exponent = np.floor((c + 1) / 2**mantissa_bits) - 16
  fraction = ((c + 1) % 2**mantissa_bits) / 2**mantissa_bits
  return np.where(c == 0, 0.0, 2.0**exponent * (1 + fraction)).astype(np.float32)


def test_int8_maps_are_the_documented_floats():
  for code_map, mantissa_bits in ((formats.NU_MAP, 4), (formats.SIGNED_MAP, 3)):
    want = _numpy_float_map(mantissa_bits)
    np.testing.assert_array_equal(code_map.values(), want)
    assert want[-1] == 1.0 and want[0] == 0.0 and np.all(np.diff(want) > 0)
    assert code_map.smallest == want[1]
    codes = jnp.arange(code_map.last + 1)
    np.testing.assert_array_equal(jax.jit(code_map.decode)(codes), want)
    # Every code is its own nearest code (encoding a code's value gives it back).
    np.testing.assert_array_equal(
        jax.jit(lambda m, cm=code_map: cm.encode(m, None, zero_exact=True))(want), codes)
  np.testing.assert_allclose(formats.NU_MAP.smallest, 2.0**-16 * 1.125)


def _numpy_int8_nu(value, block_size):
  """Reference int8 encoding of a (rows, columns) nu with columns a multiple of block_size."""
  rows, columns = value.shape
  blocks = value.reshape(rows, columns // block_size, block_size)
  scales = blocks.max(axis=2, keepdims=True)
  magnitude = blocks / np.where(scales > 0, scales, 1.0)
  table = _numpy_float_map(4)
  distance = np.abs(magnitude[..., None] - table)
  codes = np.argmin(distance, axis=-1)
  codes = np.where((magnitude > 0) & (codes == 0), 1, codes)
  decoded = table[codes] * scales
  return codes.reshape(rows, columns), scales[..., 0], decoded.reshape(rows, columns)


def test_int8_nu_encode_decode_matches_numpy():
  value = np.array(10.0 ** jax.random.uniform(jax.random.key(0), (8, 512), minval=-6, maxval=0))
  value[0, :7] = 0.0
  fmt = formats.int8(block_size=256, min_size=0, rounding="nearest")
  leaf = fmt._encode(jnp.asarray(value), role="nu", bits=None)
  codes, scales, decoded = _numpy_int8_nu(value, 256)
  np.testing.assert_array_equal(np.asarray(leaf.codes), codes)
  np.testing.assert_array_equal(np.asarray(leaf.scales), scales)
  np.testing.assert_allclose(np.asarray(fmt.decode(leaf, jnp.float32)), decoded, rtol=1e-6)
  # The map's spacing bounds the error: half a step of 1/16 of an octave's base (4 mantissa
  # bits), above the smallest code (2**-16 * 1.125 of the block's largest value).
  above = value > 2e-5 * value.max(axis=1, keepdims=True)
  relative = np.abs(decoded / np.where(value > 0, value, 1) - 1)[above]
  assert relative.max() <= 1 / 32 + 1e-6


def test_int8_signed_round_trip_and_blocks_of_short_rows():
  value = jax.random.normal(jax.random.key(1), (300, 40))  # rows shorter than a block: grouped
  fmt = formats.int8(block_size=256, min_size=0, rounding="nearest")
  leaf = fmt._encode(value, role="signed", bits=None)
  assert leaf.codes.dtype == jnp.int8 and leaf.codes.shape == value.shape
  assert leaf.scales.shape == (-(-300 // 6), 1)  # 6 rows of 40 per block of <= 256
  decoded = np.asarray(fmt.decode(leaf, jnp.float32))
  np.testing.assert_array_equal(np.sign(decoded), np.sign(np.asarray(value)))
  big = np.abs(np.asarray(value)) > 1e-3
  np.testing.assert_allclose(decoded[big], np.asarray(value)[big], rtol=1 / 16)  # 3 mantissa bits


def test_init_of_a_constant_stores_what_the_encoder_makes_of_it():
  # init writes a constant's codes and scales directly (no float32 copy, no lookups); they must
  # be the encoder's bits: padded rows, grouped short rows, a vector, leading axes, both roles.
  shapes = {"padded": (3, 300), "grouped": (2, 21, 40), "vector": (5000,)}
  fills: dict[formats.Role, list[float]] = {
      "nu": [0.0, 1.0, 3e-30, 7.25], "signed": [0.0, 1.0, -0.5, 3e-30, -7.25]}
  for fmt in (formats.int8(min_size=0), formats.bitsandbytes_int8(min_size=0)):
    for role, role_fills in fills.items():
      encode = (functools.partial(fmt._encode, role=role, bits=None)
                if isinstance(fmt, formats.Int8Format) else fmt._encode)
      # The reference: the encoder applied to full arrays, all fills at once.
      want = jax.jit(jax.vmap(functools.partial(jax.tree.map, encode)))(
          {k: np.multiply.outer(np.array(role_fills, np.float32), np.ones(shape, np.float32))
           for k, shape in shapes.items()})
      want = jax.tree.map(np.asarray, want)
      for k, shape in shapes.items():
        for i, fill in enumerate(role_fills):
          got = jax.tree.map(np.asarray, fmt.init(jnp.zeros(shape), fill, role=role,
                                                  path=f"['{k}']"))
          chex.assert_trees_all_equal(got, jax.tree.map(operator.itemgetter(i), want[k]),
                                      strict=True)


def test_int8_scales_bound_each_block_after_a_step():
  # After a step a block's scale is rho * A + (1 - rho) * max|x| (A its largest stored value):
  # never below the block's largest new value, and for nu at most twice it. The largest |x|
  # comes from the gradient's max and min, squared: the same value as the max of the squares.
  fmt = formats.int8(min_size=0, rounding="nearest")
  key = jax.random.key(20)
  grads = [jax.random.normal(jax.random.fold_in(key, t), (8, 512)) * (1 + 30.0 * (t == 2))
           for t in range(5)]
  blocks = fmt._blocks((8, 512))

  def reduce(x, fn):
    return blocks.reduce(blocks.split(x), fn)

  for role, target in (("nu", lambda g: g * g), ("signed", lambda g: g)):
    state = fmt.init(jnp.zeros((8, 512)), 0.0, role=role, path="['w']")

    def step(state, g, role=role, target=target):
      rule = formats.MovingAverage(jnp.float32(0.9), target(g), source=g, of_source=target)
      return fmt.accumulate(state, rule, role=role, key=None, leaf_index=0), (
          rule.input_absmax(reduce), reduce(jnp.abs(target(g)), jnp.max))

    for g in grads:
      (state, value), (from_source, from_target) = jax.jit(step)(state, g)
      np.testing.assert_array_equal(from_source, from_target)
      largest = np.abs(np.asarray(value)).reshape(8, 2, 256).max(axis=-1)
      scales = np.asarray(state.scales)
      assert np.all(scales >= largest * (1 - 1e-6)), role
      if role == "nu":
        assert np.all(scales <= 2 * largest * (1 + 1e-6))
      decoded = np.abs(np.asarray(fmt.decode(state, jnp.float32))).reshape(8, 2, 256)
      assert np.all(decoded.max(axis=-1) <= scales)


def test_bitsandbytes_map_without_a_table_is_the_table_bit_for_bit():
  table = formats.bitsandbytes_dynamic_map()
  decoded = np.asarray(jax.jit(formats.bitsandbytes_decode)(jnp.arange(256, dtype=jnp.uint8)))
  np.testing.assert_array_equal(decoded.view(np.uint32), table.view(np.uint32))


def _nearest_table_index(table: np.ndarray, x: np.ndarray) -> np.ndarray:
  """bitsandbytes' search in NumPy float32: the upper neighbour only if strictly nearer."""
  upper = np.clip(np.searchsorted(table, x, side="left"), 1, 255)
  return np.where((table[upper] - x) < (x - table[upper - 1]), upper, upper - 1)


def test_bitsandbytes_encode_without_a_table_matches_the_search():
  table = formats.bitsandbytes_dynamic_map()
  midpoints = ((table[1:] + table[:-1]) / np.float32(2)).astype(np.float32)
  near = [table, midpoints]
  for points in (table, midpoints):  # within a few ulps of every code and every tie
    up, down = points, points
    for _ in range(4):
      up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-2))
      near += [up, down]
  rng = np.random.default_rng(0)
  spread = np.sign(rng.standard_normal(200_000)) * 10.0 ** rng.uniform(-9, 0, 200_000)
  edges = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 0.9999, -0.9999])
  x = np.clip(np.concatenate([*near, spread, edges]).astype(np.float32), -1, 1)
  codes = np.asarray(jax.jit(formats.bitsandbytes_encode)(x))
  np.testing.assert_array_equal(codes, _nearest_table_index(table, x))
  assert int(jax.jit(formats.bitsandbytes_encode)(jnp.float32(np.nan))) == 0


def test_bfloat16_nearest_matches_numpy_cast():
  value = jax.random.normal(jax.random.key(2), (4096,)) * 1e3
  fmt = formats.bfloat16("nearest")
  state, used = fmt.accumulate(
      jnp.zeros(4096, jnp.bfloat16), formats.Affine(jnp.float32(0.0), value), role="signed",
      key=None, leaf_index=0)
  np.testing.assert_array_equal(
      np.asarray(state).view(np.uint16),
      np.asarray(value).astype(ml_dtypes.bfloat16).view(np.uint16))
  np.testing.assert_array_equal(np.asarray(used), np.asarray(state, np.float32))


def test_factored_statistics_match_numpy():
  nu = np.asarray(jax.random.uniform(jax.random.key(3), (3, 16, 24)))
  fmt = formats.factored(min_dim_size=8)
  leaf = fmt._encode(jnp.asarray(nu), (1, 2))
  np.testing.assert_allclose(np.asarray(leaf.row), nu.mean(axis=2), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(leaf.column), nu.mean(axis=1), rtol=1e-6)
  row, column = nu.mean(axis=2), nu.mean(axis=1)
  estimate = row[:, :, None] * column[:, None, :] / row.mean(axis=1)[:, None, None]
  np.testing.assert_allclose(np.asarray(fmt.decode(leaf, jnp.float32)), estimate, rtol=1e-5)
  # A rank-1 nu is recovered exactly.
  rank1 = np.outer(np.arange(1.0, 17.0), np.arange(1.0, 25.0))[None]
  recovered = fmt.decode(fmt._encode(jnp.asarray(rank1), (1, 2)), jnp.float32)
  np.testing.assert_allclose(np.asarray(recovered), rank1, rtol=1e-5)


# ------------------------------------------------------------------ stochastic rounding


def test_stochastic_bfloat16_is_unbiased():
  value = jnp.float32(1.0) + jnp.arange(1, 2049, dtype=jnp.float32) * jnp.float32(2.0**-14)
  spacing = 2.0**-7

  def draw(t):
    bits = formats.random_bits(formats.step_key(0, t, 0), 0, value.shape)
    return formats._stochastic_bfloat16(value, bits).astype(jnp.float32)

  draws = jax.jit(jax.vmap(draw))(jnp.arange(256, dtype=jnp.int32))  # steps 0..255
  mean = np.asarray(draws.mean(axis=0))
  # Each draw is one of the two neighbours; their mean is the value to within sampling error
  # (standard deviation <= spacing / 2 / sqrt(256)), far below nearest rounding's bias.
  assert np.all(np.abs(mean - np.asarray(value)) < 5 * spacing / 2 / 16)
  assert abs(float(np.mean(mean - np.asarray(value)))) < spacing / 200
  nearest = np.asarray(value.astype(jnp.bfloat16).astype(jnp.float32))
  assert np.max(np.abs(nearest - np.asarray(value))) > spacing / 4  # the control is biased


def test_stochastic_int8_is_unbiased():
  value = 10.0 ** jax.random.uniform(jax.random.key(4), (1, 4096), minval=-4, maxval=0)
  fmt = formats.int8(min_size=0)

  def draw(t):
    bits = formats.random_bits(formats.step_key(0, t, 0), 0, value.shape)
    return fmt.decode(fmt._encode(value, role="nu", bits=bits), jnp.float32)

  draws = jax.jit(jax.vmap(draw))(jnp.arange(200, dtype=jnp.int32))  # steps 0..199
  ratio = np.asarray(draws.mean(axis=0) / value)
  assert abs(float(np.mean(ratio)) - 1) < 2e-3
  assert np.max(np.abs(ratio - 1)) < 0.02


def test_stochastic_int8_signed_is_unbiased_down_to_zero():
  # Signed values over four decades with both signs, and a block of values below the smallest
  # code (rounded to 0 or to it, with the probability that makes the mean right).
  magnitude = 10.0 ** jax.random.uniform(jax.random.key(14), (1, 4096), minval=-4, maxval=0)
  sign = jnp.where(jax.random.bernoulli(jax.random.key(15), shape=(1, 4096)), 1.0, -1.0)
  tiny = float(formats.SIGNED_MAP.smallest) / 4
  value = jnp.concatenate([magnitude * sign, jnp.full((1, 256), tiny).at[0, 0].set(1.0)], axis=1)
  fmt = formats.int8(min_size=0)

  def draw(t):
    bits = formats.random_bits(formats.step_key(0, t, 1), 0, value.shape)
    return fmt.decode(fmt._encode(value, role="signed", bits=bits), jnp.float32)

  draws = np.asarray(jax.jit(jax.vmap(draw))(jnp.arange(200, dtype=jnp.int32)))
  ratio = draws[:, :, :4096].mean(axis=0) / np.asarray(value[:, :4096])
  assert abs(float(np.mean(ratio)) - 1) < 2e-3
  assert np.max(np.abs(ratio - 1)) < 0.03
  low = draws[:, 0, 4097:]
  assert set(np.unique(low)) <= {0.0, float(formats.SIGNED_MAP.smallest)}
  assert abs(float(low.mean()) / tiny - 1) < 0.05  # 51,000 draws of P = 1/4


@pytest.mark.parametrize(
    "fmt", [formats.bfloat16(), pytest.param(formats.int8(min_size=0), marks=pytest.mark.slow)],
    ids=repr)
def test_stochastic_rounding_is_reproducible_under_jit_and_across_calls(fmt):
  optimizer = rmsprop_jax.rmsprop(1e-2, decay=0.99, momentum=0.9, centered=True,
                                  accumulator_dtype=fmt)
  params = {"w": jnp.zeros((16, 512))}
  grads = [{"w": jax.random.normal(jax.random.key(t), (16, 512))} for t in range(4)]

  def run(update):
    state = optimizer.init(params)
    for g in grads:
      _, state = update(g, state, params)
    return state

  eager, jitted, again = run(optimizer.update), run(jax.jit(optimizer.update)), run(
      jax.jit(optimizer.update))
  # The random bits are integer functions of (seed, step, leaf, index): identical under jit.
  key = formats.step_key(fmt.seed, jnp.int32(3), 0)
  bits = formats.random_bits(key, 1, (16, 512))
  jitted_bits = jax.jit(formats.random_bits, static_argnums=(1, 2))(key, 1, (16, 512))
  np.testing.assert_array_equal(bits, jitted_bits)
  # A rerun of the same program gives the same bits; eager arithmetic may differ from jit's
  # (fused multiply-adds) by an ulp before rounding, so it is compared to a code's width.
  chex.assert_trees_all_equal(jitted, again)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
    if a.dtype in (jnp.int8, jnp.uint8):
      assert np.mean(np.asarray(a) != np.asarray(b)) < 0.01
    else:
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                 rtol=2e-2, atol=1e-6)
  other_seed = rmsprop_jax.rmsprop(1e-2, decay=0.99, momentum=0.9, centered=True,
                                   accumulator_dtype=type(fmt)(**{**fmt.__dict__, "seed": 7}))
  state = other_seed.init(params)
  for g in grads:
    _, state = other_seed.update(g, state, params)
  pairs = zip(jax.tree.leaves(state), jax.tree.leaves(jitted), strict=True)
  assert not all(np.array_equal(a, b) for a, b in pairs)


# ------------------------------------------------------------------ the stall case


def _steady_nu(fmt, decay, gradient):
  transformation = scale_by_rmsprop(decay, accumulator_dtype=fmt)

  def step(state, _):
    return transformation.update(gradient, state)[1], None

  state, _ = jax.lax.scan(step, transformation.init(gradient), length=10_000)
  return np.asarray(formats.as_format(fmt).decode(state.nu, jnp.float32))


@pytest.mark.slow
@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999])
def test_steady_gradient_does_not_stall(decay):
  gradient = 10.0 ** jax.random.uniform(jax.random.key(5), (4, 1024), minval=-2, maxval=0)
  reference = _steady_nu(None, decay, gradient)
  for fmt in (formats.bfloat16(), formats.int8()):
    ratio = _steady_nu(fmt, decay, gradient) / reference
    assert abs(float(np.mean(ratio)) - 1) < 0.02, (fmt, decay, np.mean(ratio))
    if isinstance(fmt, formats.BFloat16Format):
      assert np.max(np.abs(ratio - 1)) < 0.02, (fmt, decay)
  if decay == 0.999:  # the control: rounding to nearest stalls
    assert np.mean(_steady_nu(jnp.bfloat16, decay, gradient) / reference) < 0.9


# ------------------------------------------------------------------ int8's zero point


def test_int8_nu_keeps_zero_exact_and_small_values_positive():
  fmt = formats.int8(min_size=0, rounding="nearest")
  round_trip = jax.jit(
      lambda value: fmt.decode(fmt._encode(value, role="nu", bits=None), jnp.float32))
  value = np.zeros((1, 256), np.float32)
  value[0, :3] = 1.0, 1e-30, 1e-7
  decoded = np.asarray(round_trip(value))
  np.testing.assert_array_equal(decoded[0, 3:], 0.0)
  assert decoded[0, 1] > 0 and decoded[0, 2] > 0
  assert decoded[0, 0] == 1.0
  np.testing.assert_array_equal(round_trip(np.zeros((1, 256), np.float32)), 0.0)
  # Through the optimizer: a tiny gradient next to a large one gets a bounded update.
  optimizer = scale_by_rmsprop(0.9, eps=1e-8, accumulator_dtype=formats.int8(min_size=0))
  grads = jnp.zeros((1, 256)).at[0, 0].set(1.0).at[0, 1].set(1e-9)
  state = optimizer.init(grads)
  update = jax.jit(optimizer.update)
  for _ in range(3):
    updates, state = update(grads, state)
  assert np.all(np.abs(np.asarray(updates)) < 10)


# ------------------------------------------------------------------ composition

FORMATS = [
    formats.bfloat16(),
    formats.bfloat16("nearest"),
    formats.int8(min_size=0),
    formats.int8(min_size=0, rounding="nearest"),
    formats.factored(min_dim_size=8),
    formats.factored(min_dim_size=8, fallback=formats.int8(min_size=0)),
    formats.bitsandbytes_int8(min_size=0),
]
# The plain update runs in `make test-fast`; each option alone and every option at once only in
# `make test` (the fast lane stays near a minute on 2 cores).
_SLOW = pytest.mark.slow
OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"centered": True}, id="centered", marks=_SLOW),
    pytest.param({"momentum": 0.9}, id="momentum", marks=_SLOW),
    pytest.param({"momentum": 0.9, "nesterov": True}, id="momentum-nesterov", marks=_SLOW),
    pytest.param({"bias_correction": True}, id="bias_correction", marks=_SLOW),
    pytest.param({"centered": True, "momentum": 0.5, "bias_correction": True, "eps": 0.1},
                 id="centered-momentum-bias_correction-eps", marks=_SLOW),
]


def _quadratic_run(optimizer, steps=30):
  """30 noisy steps on a quadratic, as one jitted scan (one compilation per optimizer)."""
  target = jax.random.normal(jax.random.key(6), (32, 256))
  params = {"w": jnp.zeros((32, 256)), "b": jnp.zeros(8)}
  loss = lambda p: jnp.mean((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)

  def step(carry, t):
    params, state = carry
    # Noisy gradients: with a steady gradient the centered variance nu - mu**2 is a tiny
    # difference of large numbers, which any rounding of the state dominates.
    grads = jax.grad(loss)(params)
    key = jax.random.fold_in(jax.random.key(100), t)
    grads = jax.tree.map(
        lambda g: g + 0.5 * jnp.sqrt(jnp.mean(g * g)) * jax.random.normal(key, g.shape), grads)
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  run = jax.jit(lambda params: jax.lax.scan(
      step, (params, optimizer.init(params)), jnp.arange(steps))[0][0])
  params = run(params)
  return params, float(jnp.mean((params["w"] - target) ** 2))


@functools.cache
def _float32_reference_run(options_key):
  return _quadratic_run(rmsprop_jax.rmsprop(1e-2, decay=0.99, **dict(options_key)))


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_formats_follow_float32_with_every_option(fmt, options):
  if isinstance(fmt, formats.FactoredFormat) and options.get("centered"):
    with pytest.raises(ValueError, match="centered"):
      rmsprop_jax.rmsprop(1e-2, accumulator_dtype=fmt, **options)
    return
  reference, reference_loss = _float32_reference_run(tuple(sorted(options.items())))
  params, loss = _quadratic_run(rmsprop_jax.rmsprop(1e-2, decay=0.99, accumulator_dtype=fmt,
                                                    **options))
  chex.assert_tree_all_finite(params)
  if isinstance(fmt, formats.FactoredFormat):
    # Another estimator of nu (rank 1), not a rounding of float32's: it must train, though
    # on this unstructured target (per-entry gradient scales) more slowly (momentum: 1.6x).
    assert loss < 2 * reference_loss
    return
  # The rounding of the state moves the parameters by a few percent of their distance from
  # the start at most (the 8-entry b, whose gradient is a sum, swings: left out).
  difference = np.abs(np.asarray(params["w"]) - np.asarray(reference["w"]))
  assert np.median(difference) < 0.05 * np.median(np.abs(np.asarray(reference["w"])))


def test_mu_dtype_separates_the_first_moment():
  optimizer = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9,
                                  accumulator_dtype=formats.int8(min_size=0),
                                  mu_dtype=formats.bfloat16())
  state = optimizer.init({"w": jnp.zeros((4, 256))})
  assert isinstance(optax.tree_utils.tree_get(state, "nu")["w"], formats.Int8Leaf)
  assert optax.tree_utils.tree_get(state, "mu")["w"].dtype == jnp.bfloat16
  assert optax.tree_utils.tree_get(state, "trace")["w"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="mu_dtype"):
    scale_by_rmsprop(mu_dtype=formats.factored())


@pytest.mark.slow
def test_vmapped_sweep_over_traced_hyperparameters():
  fmt = formats.int8(min_size=0)
  params = {"w": jnp.zeros((4, 256))}
  grads = {"w": jax.random.normal(jax.random.key(7), (4, 256))}

  def run(lr, decay):
    optimizer = rmsprop_jax.rmsprop(lr, decay=decay, momentum=0.5, accumulator_dtype=fmt)
    state = optimizer.init(params)
    for _ in range(3):
      updates, state = optimizer.update(grads, state, params)
    return updates

  lrs, decays = jnp.array([1e-3, 1e-2]), jnp.array([0.9, 0.99])
  swept = jax.jit(jax.vmap(run))(lrs, decays)
  single_run = jax.jit(run)  # one trial's program, its hyperparameters traced scalars
  for i in range(2):
    single = single_run(lrs[i], decays[i])
    np.testing.assert_allclose(swept["w"][i], single["w"], rtol=1e-5, atol=1e-9)


def test_inject_hyperparams_with_a_static_format():
  fmt = formats.bfloat16()
  injected = optax.inject_hyperparams(rmsprop_jax.rmsprop, static_args=("accumulator_dtype",))(
      learning_rate=1e-2, decay=0.99, accumulator_dtype=fmt)
  plain = rmsprop_jax.rmsprop(1e-2, decay=0.99, accumulator_dtype=fmt)
  params = {"w": jnp.zeros((8, 256))}
  grads = {"w": jax.random.normal(jax.random.key(8), (8, 256))}
  state, plain_state = injected.init(params), plain.init(params)
  for _ in range(3):
    updates, state = jax.jit(injected.update)(grads, state, params)
    plain_updates, plain_state = plain.update(grads, plain_state, params)
  chex.assert_trees_all_close(updates, plain_updates, rtol=1e-6)
  chex.assert_trees_all_equal(state.inner_state, plain_state)


def test_apply_if_finite_skips_a_nan_step_with_int8_state():
  optimizer = optax.apply_if_finite(
      rmsprop_jax.rmsprop(1e-2, momentum=0.9, accumulator_dtype=formats.int8(min_size=0)),
      max_consecutive_errors=3)
  params = {"w": jnp.zeros((4, 256))}
  grads = {"w": jnp.ones((4, 256))}
  _, state = optimizer.update(grads, optimizer.init(params), params)
  bad = {"w": grads["w"].at[0, 0].set(jnp.nan)}
  updates, skipped = jax.jit(optimizer.update)(bad, state, params)
  np.testing.assert_array_equal(updates["w"], 0.0)
  chex.assert_trees_all_equal(skipped.inner_state, state.inner_state)
  assert int(skipped.notfinite_count) == 1


@pytest.mark.slow
def test_orbax_round_trip_and_a_clear_error_for_another_format(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  params = {"w": jnp.zeros((8, 256)), "b": jnp.zeros(3)}
  grads = {"w": jax.random.normal(jax.random.key(9), (8, 256)), "b": jnp.ones(3)}
  optimizer = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9,
                                  accumulator_dtype=formats.int8(min_size=0))
  # Jitted: eager dispatch of every encode/decode primitive costs more than one compilation.
  init, update = jax.jit(optimizer.init), jax.jit(optimizer.update)
  _, state = update(grads, init(params), params)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "state", state)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / "state", init(params))
  chex.assert_trees_all_equal(restored, state)
  chex.assert_trees_all_equal(update(grads, restored, params), update(grads, state, params))
  # Into another format's optimizer: its init has another tree, and orbax refuses it;
  # and a state of one format handed to an optimizer of another gets a clear error.
  other = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9,
                              accumulator_dtype=formats.bfloat16())
  with pytest.raises(ValueError):
    checkpointer.restore(tmp_path / "state", other.init(params))
  with pytest.raises(ValueError, match="another accumulator_dtype"):
    other.update(grads, restored, params)
  with pytest.raises(ValueError, match="another accumulator_dtype"):
    rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9).update(
        grads, other.init(params), params)


# ------------------------------------------------------------------ memory

def test_state_bytes_per_parameter():
  params = {"w": jnp.zeros((1024, 1024))}
  per_param = {
      name: formats.state_nbytes(
          scale_by_rmsprop(accumulator_dtype=fmt).init(params).nu) / 2**20
      for name, fmt in [("float32", None), ("bfloat16", formats.bfloat16()),
                        ("int8", formats.int8()), ("factored", formats.factored()),
                        ("bnb", formats.bitsandbytes_int8())]
  }
  assert per_param["float32"] == 4.0 and per_param["bfloat16"] == 2.0
  assert per_param["int8"] == pytest.approx(1 + 4 / 256)
  assert per_param["bnb"] == pytest.approx(1 + 4 / 256)
  assert per_param["factored"] == pytest.approx(2 * 1024 * 4 / 2**20)


# ------------------------------------------------------------------ bad input


def test_non_floating_dtypes_are_refused_pointing_to_int8():
  for dtype in (jnp.int8, jnp.int32, jnp.uint8, bool):
    with pytest.raises(ValueError, match=r"formats\.int8\(\)"):
      rmsprop_jax.rmsprop(1e-2, accumulator_dtype=dtype)
  with pytest.raises(ValueError, match="mu_dtype"):
    rmsprop_jax.rmsprop(1e-2, mu_dtype=jnp.int32)
  with pytest.raises(TypeError, match="accumulator_dtype"):
    scale_by_rmsprop(accumulator_dtype="not a dtype")
  with pytest.raises(ValueError, match=r"formats\.int8\(\)"):
    momentum_buffer(0.9, accumulator_dtype=jnp.int32)


def test_bad_format_arguments_name_the_argument():
  with pytest.raises(ValueError, match="rounding"):
    formats.bfloat16("up")
  with pytest.raises(ValueError, match="rounding"):
    formats.int8(rounding="floor")
  bad_sizes: list[Any] = [0, -4, 2.5, True, "256"]
  for block_size in bad_sizes:
    with pytest.raises(ValueError, match="block_size"):
      formats.int8(block_size=block_size)
  with pytest.raises(ValueError, match="fallback"):
    formats.factored(fallback=jnp.bfloat16)


def test_int8_refuses_complex_first_moments():
  params = {"z": jnp.zeros((16, 256), jnp.complex64)}
  with pytest.raises(ValueError, match=r"complex parameter \['z'\]"):
    rmsprop_jax.rmsprop(1e-2, centered=True, accumulator_dtype=formats.int8()).init(params)
  # nu is real for complex parameters, so int8 holds it.
  state = rmsprop_jax.rmsprop(1e-2, accumulator_dtype=formats.int8()).init(params)
  assert isinstance(optax.tree_utils.tree_get(state, "nu")["z"], formats.Int8Leaf)
