"""rmsprop_jax inside the JAX and optax machinery users put it in: jit, vmap, grad, dtypes,
masks, optax wrappers and Flax."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax

KEY = jax.random.PRNGKey(0)


def make_params():
  k1, k2 = jax.random.split(KEY)
  return {
      "dense": {"kernel": jax.random.normal(k1, (3, 4)), "bias": jnp.zeros(4)},
      "scale": jax.random.normal(k2, ()),
  }


def loss_fn(params, x):
  hidden = jnp.tanh(x @ params["dense"]["kernel"] + params["dense"]["bias"])
  return jnp.mean((hidden * params["scale"] - 0.5) ** 2)


X = jax.random.normal(jax.random.PRNGKey(1), (8, 3))


def train(optimizer, params, steps=20, jit=True):
  def step(params, state):
    grads = jax.grad(loss_fn)(params, X)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  state = optimizer.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def test_jit_and_eager_agree_and_loss_decreases():
  optimizer = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, weight_decay=1e-3)
  params = make_params()
  jitted, _ = train(optimizer, params, jit=True)
  eager, _ = train(optimizer, params, jit=False)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-6)
  assert loss_fn(jitted, X) < 0.5 * loss_fn(params, X)


def test_vmap_over_hyperparameters_equals_separate_runs():
  learning_rates = jnp.array([1e-3, 1e-2, 3e-2])
  decays = jnp.array([0.9, 0.95, 0.99])
  params = make_params()

  def run(lr, decay):
    return train(rmsprop_jax.rmsprop(lr, decay, momentum=0.5), params, steps=10, jit=False)[0]

  swept = jax.jit(jax.vmap(run))(learning_rates, decays)
  for i in range(3):
    alone = jax.jit(run)(learning_rates[i], decays[i])
    trial = jax.tree.map(lambda x, i=i: x[i], swept)
    chex.assert_trees_all_close(trial, alone, rtol=1e-6, atol=1e-7)


def test_grad_through_update_step_meta_learns_learning_rate():
  params = make_params()

  def loss_after_steps(log_lr):
    optimizer = rmsprop_jax.rmsprop(jnp.exp(log_lr), momentum=0.9)
    trained, _ = train(optimizer, params, steps=5, jit=False)
    return loss_fn(trained, X)

  log_lr = jnp.log(1e-3)
  meta_grad = jax.grad(loss_after_steps)(log_lr)
  assert jnp.isfinite(meta_grad)
  finite_difference = (loss_after_steps(log_lr + 1e-2) - loss_after_steps(log_lr - 1e-2)) / 2e-2
  np.testing.assert_allclose(meta_grad, finite_difference, rtol=5e-2)
  assert meta_grad < 0  # a larger step helps from this small learning rate


def test_weight_decay_mask_leaves_masked_out_leaves_undecayed():
  params = make_params()
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  mask = {"dense": {"kernel": True, "bias": False}, "scale": False}
  optimizer = rmsprop_jax.rmsprop(0.1, weight_decay=0.5, weight_decay_mask=mask)
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * params["dense"]["kernel"])
  np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["scale"], 0.0)
  # A callable mask, as optax.adamw accepts: decay only matrices.
  by_rank = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
  optimizer = rmsprop_jax.rmsprop(0.1, weight_decay=0.5, weight_decay_mask=by_rank)
  updates_callable, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  chex.assert_trees_all_close(updates_callable, updates)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_updates_keep_the_gradient_dtype(dtype):
  params = jax.tree.map(lambda x: x.astype(dtype), make_params())
  optimizer = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, weight_decay=1e-2)
  grads = jax.grad(loss_fn)(params, X.astype(dtype))
  updates, state = optimizer.update(grads, optimizer.init(params), params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  # The state defaults to float32 for half-precision parameters (a float16 g**2 underflows).
  for name in ("nu", "mu", "trace"):
    for leaf in jax.tree.leaves(optax.tree_utils.tree_get(state, name)):
      assert leaf.dtype == jnp.float32, name


def test_mixed_dtype_tree():
  params = {"low": jnp.ones((4,), jnp.bfloat16), "high": jnp.ones((4,), jnp.float32)}
  grads = {"low": jnp.full((4,), 0.5, jnp.bfloat16), "high": jnp.full((4,), 0.5, jnp.float32)}
  optimizer = rmsprop_jax.rmsprop(1e-2, momentum=0.9)
  updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  np.testing.assert_allclose(
      updates["low"].astype(jnp.float32), updates["high"], rtol=1e-2
  )


def test_bf16_accumulators_halve_state_and_track_float32():
  params = make_params()
  full = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9)
  half = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, accumulator_dtype=jnp.bfloat16)
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree) if x.ndim)
  half_state = half.init(params)
  assert nbytes(half_state) * 2 == nbytes(full.init(params))
  for name in ("nu", "mu", "trace"):
    for leaf in jax.tree.leaves(optax.tree_utils.tree_get(half_state, name)):
      assert leaf.dtype == jnp.bfloat16, name
  params_full, _ = train(full, params, steps=30)
  params_half, state = train(half, params, steps=30)
  chex.assert_trees_all_equal_dtypes(params_half, params)  # float32 params stay float32
  chex.assert_trees_all_close(params_half, params_full, rtol=2e-2, atol=2e-3)
  assert optax.tree_utils.tree_get(state, "nu")["scale"].dtype == jnp.bfloat16


def test_inject_hyperparams_matches_static_bitwise_and_can_change_lr():
  params = make_params()
  static = rmsprop_jax.rmsprop(1e-2, 0.9, 1e-3, momentum=0.9, centered=True)
  injected = optax.inject_hyperparams(rmsprop_jax.rmsprop)(
      learning_rate=1e-2, decay=0.9, eps=1e-3, momentum=0.9, centered=True
  )
  params_static, static_state = train(static, params, steps=50)
  params_injected, state = train(injected, params, steps=50)
  chex.assert_trees_all_equal(params_static, params_injected)  # bitwise
  chex.assert_trees_all_equal(  # the state lives where users look for it
      optax.tree_utils.tree_get(state, "nu"), optax.tree_utils.tree_get(static_state, "nu")
  )
  fresh = injected.init(params)
  fresh.hyperparams["learning_rate"] = jnp.asarray(0.0)
  updates, _ = injected.update(jax.grad(loss_fn)(params, X), fresh, params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_array_equal(leaf, 0.0)


def test_multi_steps_accumulates_gradients():
  params = make_params()
  inner = rmsprop_jax.rmsprop(1e-2)
  optimizer = optax.MultiSteps(inner, every_k_schedule=2)
  state = optimizer.init(params)
  g1 = jax.grad(loss_fn)(params, X)
  g2 = jax.grad(loss_fn)(params, 2 * X)
  first, state = optimizer.update(g1, state, params)
  for leaf in jax.tree.leaves(first):
    np.testing.assert_array_equal(leaf, 0.0)
  second, _ = optimizer.update(g2, state, params)
  mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = inner.update(mean_grads, inner.init(params), params)
  chex.assert_trees_all_close(second, expected, rtol=1e-5)


def test_masked_and_multi_transform():
  params = make_params()
  grads = jax.grad(loss_fn)(params, X)
  labels = {"dense": {"kernel": "rms", "bias": "sgd"}, "scale": "rms"}
  optimizer = optax.multi_transform(
      {"rms": rmsprop_jax.rmsprop(1e-2), "sgd": optax.sgd(1e-1)}, labels
  )
  updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["dense"]["bias"], -0.1 * grads["dense"]["bias"], rtol=1e-6)
  rms_alone, _ = rmsprop_jax.rmsprop(1e-2).update(grads, rmsprop_jax.rmsprop(1e-2).init(params))
  np.testing.assert_allclose(updates["scale"], rms_alone["scale"], rtol=1e-6)

  masked = optax.masked(rmsprop_jax.rmsprop(1e-2), {"dense": {"kernel": True, "bias": False},
                                                    "scale": False})
  updates, _ = masked.update(grads, masked.init(params), params)
  np.testing.assert_array_equal(updates["scale"], grads["scale"])  # passed through untouched
  np.testing.assert_allclose(updates["dense"]["kernel"], rms_alone["dense"]["kernel"], rtol=1e-6)


def test_apply_if_finite_skips_non_finite_steps_and_keeps_state():
  params = make_params()
  optimizer = optax.apply_if_finite(rmsprop_jax.rmsprop(1e-2, momentum=0.9), 3)
  state = optimizer.init(params)
  grads = jax.grad(loss_fn)(params, X)
  _, state = optimizer.update(grads, state, params)
  bad = jax.tree.map(lambda g: g.at[...].set(jnp.nan) if g.ndim == 0 else g, grads)
  updates, bad_state = optimizer.update(bad, state, params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_array_equal(leaf, 0.0)
  chex.assert_trees_all_equal(bad_state.inner_state, state.inner_state)
  assert int(bad_state.notfinite_count) == 1
  # Unwrapped, the NaN reaches the state: it is not hidden.
  plain = rmsprop_jax.rmsprop(1e-2)
  _, plain_state = plain.update(bad, plain.init(params), params)
  assert jnp.isnan(optax.tree_utils.tree_get(plain_state, "nu")["scale"])


def test_flax_nnx_optimizer_and_train_state():
  from flax import nnx
  from flax.training import train_state

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):
      return self.linear(x)

  model = Model(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-2, momentum=0.9), wrt=nnx.Param)
  targets = jnp.sum(X, axis=1, keepdims=True)

  @nnx.jit
  def nnx_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - targets) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(nnx_step(model, optimizer)) for _ in range(50)]
  assert losses[-1] < 0.5 * losses[0]

  params = {"w": jnp.zeros((3, 1))}
  state = train_state.TrainState.create(
      apply_fn=lambda p, x: x @ p["w"], params=params, tx=rmsprop_jax.rmsprop(1e-2)
  )

  @jax.jit
  def ts_step(state):
    grads = jax.grad(lambda p: jnp.mean((state.apply_fn(p, X) - targets) ** 2))(state.params)
    return state.apply_gradients(grads=grads)

  for _ in range(50):
    state = ts_step(state)
  assert int(state.step) == 50
  final_loss = jnp.mean((X @ state.params["w"] - targets) ** 2)
  assert final_loss < 0.5 * jnp.mean(targets**2)


@pytest.mark.parametrize("arity", [2, 3])
def test_tuple_shaped_parameter_trees(arity):
  # A (w, b) or (w1, w2, w3) tuple of parameters has the shape of a per-leaf result tuple;
  # the update must still treat each array as one parameter.
  arrays = [jnp.linspace(-1.0, 1.0, 2 + i) for i in range(arity)]
  as_tuple = tuple(arrays)
  as_dict = {f"p{i}": a for i, a in enumerate(arrays)}
  optimizer = rmsprop_jax.rmsprop(0.1, centered=True, momentum=0.9, weight_decay=0.1)
  tuple_updates, tuple_state = optimizer.update(as_tuple, optimizer.init(as_tuple), as_tuple)
  dict_updates, _ = optimizer.update(as_dict, optimizer.init(as_dict), as_dict)
  for i in range(arity):
    np.testing.assert_array_equal(tuple_updates[i], dict_updates[f"p{i}"])
  chex.assert_trees_all_equal_shapes(optax.tree_utils.tree_get(tuple_state, "nu"), as_tuple)
