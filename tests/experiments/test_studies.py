"""Tests for the three studies: data generators, metrics, one short run per optimizer, outputs."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import rmsprop_jax
from configs.studies import adding_problem as adding_config
from configs.studies import nonstationary as nonstationary_config
from configs.studies import sparse_features as sparse_config
from experiments.studies import adding_problem, common, nonstationary, sparse_features

# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("kind", common.OPTIMIZER_KINDS)
def test_make_optimizer_builds_every_kind_and_takes_a_step(kind: str) -> None:
  optimizer = common.make_optimizer({"kind": kind, "learning_rate": 0.1})
  params = {"w": jnp.array([1.0, -2.0])}
  updates, _ = optimizer.update({"w": jnp.array([0.5, -0.5])}, optimizer.init(params), params)
  # Every optimizer moves against the gradient on its first step.
  assert np.all(np.sign(np.asarray(updates["w"])) == np.array([-1.0, 1.0]))


def test_make_optimizer_rejects_bad_specs_naming_the_field() -> None:
  with pytest.raises(ValueError, match="kind"):
    common.make_optimizer({"kind": "adagrad", "learning_rate": 0.1})
  with pytest.raises(ValueError, match="learning_rate"):
    common.make_optimizer({"kind": "sgd"})
  with pytest.raises(ValueError, match="clip_norm"):
    common.make_optimizer({"kind": "sgd", "learning_rate": 0.1, "clip_norm": 0.0})


def test_make_optimizer_passes_rmsprop_options_through() -> None:
  spec = {"kind": "rmsprop", "learning_rate": 0.01, "decay": 0.5, "centered": True,
          "bias_correction": True}
  optimizer = common.make_optimizer(spec)
  params = jnp.ones(3)
  grads = jnp.array([1.0, 2.0, 3.0])
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  # Centered and debiased, the first step's variance estimate g^2 - g^2 is 0: the update is
  # lr * g / eps-sized, i.e. enormous, which the plain variant (lr * sign(g)) is not.
  plain = common.make_optimizer({"kind": "rmsprop", "learning_rate": 0.01, "decay": 0.5,
                                 "bias_correction": True})
  plain_updates, _ = plain.update(grads, plain.init(params), params)
  np.testing.assert_allclose(plain_updates, -0.01 * np.ones(3), rtol=1e-5)
  assert np.all(np.abs(np.asarray(updates)) > 100.0)


def test_make_optimizer_is_the_one_factory_and_rejects_unknown_keys() -> None:
  # Every RMSprop option reaches rmsprop_jax.rmsprop (the studies' old factory dropped
  # eps_in_sqrt, nesterov, initial_scale and weight_decay silently).
  spec = {"kind": "rmsprop", "learning_rate": 0.01, "decay": 0.9, "eps": 1e-3,
          "eps_in_sqrt": True, "initial_scale": 1.0, "momentum": 0.5, "nesterov": True,
          "weight_decay": 0.1}
  hparams: dict[str, Any] = {key: value for key, value in spec.items() if key != "kind"}
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.3, 0.1, -2.0])}
  ours = common.make_optimizer(spec)
  reference = rmsprop_jax.rmsprop(**hparams)
  updates, _ = ours.update(grads, ours.init(params), params)
  expected, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_array_equal(updates["w"], expected["w"])
  with pytest.raises(ValueError, match=r"unknown keys \['decya'\]"):
    common.make_optimizer({"kind": "rmsprop", "learning_rate": 0.01, "decya": 0.9})


def test_first_step_below_and_chunk_sizes() -> None:
  steps = np.array([0, 10, 20, 30])
  assert common.first_step_below(steps, np.array([1.0, 0.5, 0.05, 0.001]), 0.1) == 20
  assert math.isnan(common.first_step_below(steps, np.ones(4), 0.1))
  assert common.chunk_sizes(25, 10) == [10, 10, 5]
  with pytest.raises(ValueError, match="chunk"):
    common.chunk_sizes(10, 0)


# --------------------------------------------------------------------------- shared skeleton


def test_init_seed_states_stacks_each_seeds_state() -> None:
  def init_seed(seed: int) -> tuple[Any, dict[str, Any]]:
    return "graphdef", {"params": jnp.full(2, float(seed)), "key": jax.random.key(seed)}

  graphdef, state = common.init_seed_states([3, 4, 5], init_seed)
  assert graphdef == "graphdef"
  np.testing.assert_array_equal(state["params"], [[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]])
  assert state["key"].shape == (3,)
  with pytest.raises(ValueError, match="seeds"):
    common.init_seed_states([], init_seed)


def test_train_in_chunks_collects_outputs_and_evaluations_per_chunk() -> None:
  # Two seeds; every step adds 1 to the state and outputs the new state.
  def train_chunk(state: jax.Array, num_steps: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    outputs = state[:, None] + jnp.arange(1, num_steps + 1)
    return outputs[:, -1], {"value": outputs}

  run = common.train_in_chunks(train_chunk, jnp.array([0.0, 10.0]), [3, 3, 1], "test",
                               evaluate=lambda state: 2 * state,
                               postfix=lambda value: {"v": f"{float(np.mean(value)):.1f}"})
  np.testing.assert_array_equal(run.steps, [0, 3, 6, 7])
  np.testing.assert_array_equal(run.outputs["value"],
                                [np.arange(1.0, 8.0), np.arange(11.0, 18.0)])
  np.testing.assert_array_equal(np.stack(run.evaluations, axis=1),
                                [[0.0, 6.0, 12.0, 14.0], [20.0, 26.0, 32.0, 34.0]])
  np.testing.assert_array_equal(run.state, [7.0, 17.0])


def test_train_in_chunks_passes_the_chunk_argument_and_may_skip_evaluation() -> None:
  arguments = []

  def train_chunk(state: jax.Array, steps: jax.Array) -> tuple[jax.Array, jax.Array]:
    arguments.append(np.asarray(steps))
    return state, jnp.broadcast_to(steps, (2, steps.shape[0]))

  run = common.train_in_chunks(train_chunk, jnp.zeros(2), [2, 2], "test",
                               chunk_argument=lambda start, size: jnp.arange(start, start + size))
  np.testing.assert_array_equal(np.concatenate(arguments), [0, 1, 2, 3])
  np.testing.assert_array_equal(run.outputs, [[0, 1, 2, 3]] * 2)
  assert run.evaluations == []
  with pytest.raises(ValueError, match="sizes"):
    common.train_in_chunks(train_chunk, jnp.zeros(2), [], "test")


# --------------------------------------------------------------------------- adding problem


def test_adding_problem_target_is_the_sum_of_the_marked_values() -> None:
  inputs, targets = adding_problem.adding_problem_batch(jax.random.key(0), 256, 40)
  values, markers = np.asarray(inputs[..., 0]), np.asarray(inputs[..., 1])
  assert inputs.shape == (256, 40, 2) and targets.shape == (256,)
  assert np.all((values >= 0) & (values < 1))
  # Exactly one marker in each half of the sequence.
  np.testing.assert_array_equal(markers[:, :20].sum(axis=1), 1)
  np.testing.assert_array_equal(markers[:, 20:].sum(axis=1), 1)
  np.testing.assert_allclose(targets, (values * markers).sum(axis=1), rtol=1e-6)


def test_adding_problem_trivial_baseline_is_one_sixth() -> None:
  _, targets = adding_problem.adding_problem_batch(jax.random.key(1), 200_000, 4)
  # Predicting 1 (the mean) has MSE Var(U + U') = 1/6; the standard error here is ~4e-4.
  assert abs(float(jnp.mean((targets - 1.0) ** 2)) - adding_problem.TRIVIAL_MSE) < 3e-3


def test_adding_problem_rejects_too_short_sequences() -> None:
  with pytest.raises(ValueError, match="sequence_length"):
    adding_problem.adding_problem_batch(jax.random.key(0), 4, 1)


def test_adding_rnn_forget_bias_and_output_shape() -> None:
  from flax import nnx

  model = adding_problem.AddingRNN(5, forget_bias=1.0, rngs=nnx.Rngs(0))
  bias_param = model.cell.dense_h.bias
  assert bias_param is not None
  bias = np.asarray(bias_param[...])
  np.testing.assert_array_equal(bias[5:10], 1.0)
  np.testing.assert_array_equal(np.delete(bias, np.s_[5:10]), 0.0)
  inputs, _ = adding_problem.adding_problem_batch(jax.random.key(0), 3, 7)
  assert model(inputs).shape == (3,)
  gru = adding_problem.AddingRNN(4, cell="gru", rngs=nnx.Rngs(0))
  assert gru(inputs).shape == (3,)
  with pytest.raises(ValueError, match="cell"):
    adding_problem.AddingRNN(4, cell="elman", rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- non-stationary


def small_nonstationary_config() -> ml_collections.ConfigDict:
  config = nonstationary_config.get_config("quick")
  config.segment_length = 50
  config.drift = 0.01
  return config


def test_teacher_drifts_slowly_within_segments_and_jumps_between_them() -> None:
  config = small_nonstationary_config()
  teachers = nonstationary.teacher_stream(jax.random.key(3), config, 3 * config.segment_length)
  hidden = np.asarray(teachers["hidden"]).reshape(3 * config.segment_length, -1)
  scale = np.asarray(teachers["scale"])

  def correlation(a: int, b: int) -> float:
    return float(np.corrcoef(hidden[a], hidden[b])[0, 1])

  length = config.segment_length
  for step in range(1, 3 * length):
    if step % length == 0:  # a jump: a fresh, independent draw and a new output scale
      assert abs(correlation(step - 1, step)) < 0.5
      assert scale[step] != scale[step - 1]
    else:  # a drift step: sqrt(1 - 0.01^2) theta + 0.01 xi
      assert correlation(step - 1, step) > 0.999
      assert scale[step] == scale[step - 1]
  assert np.all((scale >= 1 / config.output_scale_range) & (scale <= config.output_scale_range))


def test_teacher_drift_preserves_the_weight_variance() -> None:
  start = {"hidden": jnp.zeros((50, 40)), "output": jnp.zeros(40), "scale": jnp.ones(())}

  def drift(teacher: dict, key: jax.Array) -> tuple[dict, None]:
    return nonstationary.drift_teacher(key, teacher, 0.1), None

  teacher, _ = jax.lax.scan(drift, start, jax.random.split(jax.random.key(0), 2000))
  # After 2000 steps of drift 0.1 the AR(1) has forgotten its start (0.995^2000 ~ 4e-5) and
  # its stationary variance is 1.
  assert abs(float(jnp.var(teacher["hidden"])) - 1.0) < 0.1
  assert float(teacher["scale"]) == 1.0


def test_input_scales_span_the_configured_range() -> None:
  scales = np.asarray(nonstationary.input_scales(10, 10.0))
  np.testing.assert_allclose([scales[0], scales[-1]], [0.1, 10.0], rtol=1e-5)
  assert np.all(np.diff(scales) > 0)
  with pytest.raises(ValueError, match="scale_range"):
    nonstationary.input_scales(10, 0.5)


def test_segment_statistics_on_a_known_curve() -> None:
  config = ml_collections.ConfigDict({"segment_length": 10, "num_segments": 3, "window": 2,
                                      "recovery_threshold": 0.5})
  # Segment 1 falls below 0.5 from its step index 4 on; segment 2 never does.
  segment_one = [4.0, 2.0, 1.0, 0.8, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
  segment_two = [4.0] * 10
  curve = np.array([[1.0] * 10 + segment_one + segment_two])
  stats = nonstationary.segment_statistics(curve, config)
  # Two-step moving average of segment one: ..., (0.8 + 0.2) / 2 = 0.5 at index 4 (not below),
  # 0.2 at index 5: recovery after 6 steps.
  np.testing.assert_array_equal(stats["recovery_steps"], [[6.0, 10.0]])
  np.testing.assert_array_equal(stats["recovered"], [[True, False]])
  np.testing.assert_allclose(stats["post_change_error"], [[3.0, 4.0]])
  np.testing.assert_allclose(stats["settled_error"], [[0.2, 4.0]])


def test_nonstationary_rejects_a_window_longer_than_a_segment() -> None:
  config = small_nonstationary_config()
  config.window = config.segment_length + 1
  with pytest.raises(ValueError, match="window"):
    nonstationary.check_config(config)


# --------------------------------------------------------------------------- sparse features


def test_zipf_probabilities_follow_the_power_law() -> None:
  probabilities = np.asarray(sparse_features.zipf_probabilities(1000, 1.1))
  np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(probabilities[0] / probabilities[[1, 9, 99]],
                             np.array([2.0, 10.0, 100.0]) ** 1.1, rtol=1e-4)


def test_sampled_feature_frequencies_match_the_zipf_law() -> None:
  probabilities = sparse_features.zipf_probabilities(1000, 1.1)
  bags = sparse_features.sample_bags(jax.random.key(0), probabilities, 4096, 8)
  counts = np.bincount(np.asarray(bags).ravel(), minlength=1000)
  expected = np.asarray(probabilities) * bags.size
  # The ten most frequent ids: each count within 5 standard deviations of its expectation.
  np.testing.assert_array_less(np.abs(counts[:10] - expected[:10]), 5 * np.sqrt(expected[:10]))
  # The tail [100, 1000) as a whole.
  assert abs(counts[100:].sum() - expected[100:].sum()) < 5 * np.sqrt(expected[100:].sum())


def test_teacher_labels_are_the_sign_of_the_summed_weights() -> None:
  weights = jnp.array([1.0, -2.0, 0.5, 3.0])
  bags = jnp.array([[0, 1], [2, 3], [1, 1]])
  np.testing.assert_array_equal(sparse_features.teacher_labels(weights, bags), [0.0, 1.0, 0.0])


def test_bucket_bounds_validate_the_edges() -> None:
  assert sparse_features.bucket_bounds(100, (10, 50)) == [(0, 10), (10, 50), (50, 100)]
  with pytest.raises(ValueError, match="bucket_edges"):
    sparse_features.bucket_bounds(100, (50, 10))


def test_rare_row_movement_matches_the_steady_state_formula() -> None:
  gaps = (1, 10, 100)
  sgd = sparse_features.rare_row_movement({"kind": "sgd", "learning_rate": 0.1}, gaps, 5)
  np.testing.assert_allclose(sgd, 1.0, rtol=1e-5)
  rmsprop = sparse_features.rare_row_movement(
      {"kind": "rmsprop", "learning_rate": 0.1, "decay": 0.9}, gaps, 20)
  # In steady state the mean square just after a visit is v = (1 - d) / (1 - d^G), so the
  # row moves by sqrt((1 - d^G) / (1 - d)) learning rates per visit.
  expected = np.sqrt((1 - 0.9 ** np.array(gaps)) / (1 - 0.9))
  np.testing.assert_allclose(rmsprop, expected, rtol=1e-3)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("module", [adding_config, nonstationary_config, sparse_config])
def test_configs_have_one_optimizer_of_each_kind_and_reject_unknown_args(module) -> None:
  for arg in (None, "quick"):
    kinds = {spec.kind for spec in module.get_config(arg).optimizers.values()}
    assert kinds == set(common.OPTIMIZER_KINDS)
  with pytest.raises(ValueError, match="arg"):
    module.get_config("slow")


# --------------------------------------------------------------------------- short runs


def check_outputs(summary: dict, workdir: str, config: ml_collections.ConfigDict) -> dict:
  """The common schema: keys, one entry per optimizer, files on disk, JSON without NaN."""
  assert set(common.SUMMARY_KEYS) <= set(summary)
  assert list(summary["optimizers"]) == list(config.optimizers.keys())
  for filename in ["summary.json", "summary.md", *summary["plots"]]:
    assert os.path.getsize(os.path.join(workdir, filename)) > 0
  assert all(plot.endswith(".png") for plot in summary["plots"])
  with open(os.path.join(workdir, "summary.json")) as handle:
    written = json.load(handle)
  assert written["config"] == json.loads(json.dumps(common.to_jsonable(config)))
  with open(os.path.join(workdir, "summary.md")) as handle:
    markdown = handle.read()
  for name in config.optimizers.keys():
    assert f"| {name} |" in markdown
  return written


def test_adding_problem_short_run_per_optimizer(tmp_path) -> None:
  config = adding_config.get_config("quick")
  summary = adding_problem.train_and_evaluate(config, str(tmp_path))
  written = check_outputs(summary, str(tmp_path), config)
  for name in config.optimizers.keys():
    numbers = written["optimizers"][name]["by_length"]["6"]
    assert numbers["diverged_seeds"] == 0
    assert numbers["grad_norm_max"]["mean"] > 0
    curve = np.asarray(written["curves"]["6"][name]["eval_mse"])
    assert curve.shape == (config.num_seeds, config.num_steps // config.eval_every + 1)
    # Twenty steps are enough to beat the untrained network (which predicts ~0, MSE ~1).
    assert curve[:, -1].mean() < curve[:, 0].mean()


def test_nonstationary_short_run_per_optimizer(tmp_path) -> None:
  config = nonstationary_config.get_config("quick")
  summary = nonstationary.train_and_evaluate(config, str(tmp_path))
  written = check_outputs(summary, str(tmp_path), config)
  for name in config.optimizers.keys():
    numbers = written["optimizers"][name]
    assert numbers["diverged_seeds"] == 0
    assert numbers["average_regret"]["mean"] > 0
    assert 0.0 <= numbers["fraction_recovered"] <= 1.0
    assert 1 <= numbers["recovery_steps"]["mean"] <= config.segment_length


def test_sparse_features_short_run_per_optimizer(tmp_path) -> None:
  config = sparse_config.get_config("quick")
  summary = sparse_features.train_and_evaluate(config, str(tmp_path))
  written = check_outputs(summary, str(tmp_path), config)
  for name in config.optimizers.keys():
    numbers = written["optimizers"][name]
    assert set(numbers["buckets"]) == set(sparse_features.BUCKET_NAMES)
    assert 0.0 <= numbers["final_test_accuracy"]["mean"] <= 1.0
    assert set(numbers["rare_row_movement"]) == {str(gap) for gap in config.movement_gaps}
    # The head rows appear in nearly every batch: their scores learn the teacher's signs.
    assert numbers["buckets"]["head"]["sign_agreement"]["mean"] > 0.6
  np.testing.assert_allclose(
      [written["optimizers"]["sgd"]["rare_row_movement"][str(gap)]
       for gap in config.movement_gaps], 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- pilot


def test_pilot_scores_a_grid_and_picks_the_best_finite_value() -> None:
  from experiments.studies import pilot

  scores = pilot.run_pilot("sparse_features", quick=True, grids={"sgd": (1.0, 3.0)})
  assert set(scores["sgd"]) == {1.0, 3.0}
  assert all(0.0 <= value <= 1.0 for value in scores["sgd"].values())
  assert pilot.best_learning_rate({0.1: 0.3, 0.3: float("nan"), 1.0: 0.2}, maximize=False) == 1.0
  assert pilot.best_learning_rate({0.1: 0.3, 0.3: float("nan"), 1.0: 0.2}, maximize=True) == 0.1
  with pytest.raises(ValueError, match="diverged"):
    pilot.best_learning_rate({0.1: float("nan")}, maximize=True)
  with pytest.raises(ValueError, match="study"):
    pilot.pilot_config("mnist", quick=True)


def test_legend_labels_are_readable_not_config_keys() -> None:
  config = nonstationary_config.get_config()
  labels = {name: common.display_name(spec) for name, spec in config.optimizers.items()}
  assert labels == {"sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam",
                    "rmsprop_090": "RMSprop (decay 0.9)", "rmsprop_099": "RMSprop (decay 0.99)",
                    "rmsprop_0999": "RMSprop (decay 0.999)"}
  assert common.display_name({"kind": "rmsprop", "learning_rate": 1e-2, "decay": 0.999,
                              "bias_correction": True}) == "RMSprop (decay 0.999, debiased)"
