"""The training code and the comparison report, on digits with small, fast settings."""

from __future__ import annotations

import csv
import functools
import json

import jax
import jax.numpy as jnp
import matplotlib.image
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs.classification import cifar10, digits, fashion_mnist
from experiments.classification import compare, data, metrics, models, train
from experiments.common import optimizers as optimizer_lib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fast_config(**overrides) -> ml_collections.ConfigDict:
  """digits with the MLP (compiles in a second or two), 2 seeds, 4 epochs."""
  config = digits.get_config()
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict({"hidden_sizes": (64,), "dropout_rate": 0.1})
  config.num_epochs = 4
  config.num_seeds = 2
  config.save_checkpoint = False
  config.target_accuracy = 0.8
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("digits")
  summary = compare.run_comparison(fast_config(), workdir, progress=False)
  return summary, workdir


# ----------------------------------------------------------------------------------------------
# The comparison's output contract.


def test_every_optimizer_beats_chance_by_a_wide_margin(comparison):
  summary, _ = comparison
  assert set(summary["optimizers"]) == {"sgd", "momentum", "adam", "rmsprop"}
  for name, result in summary["optimizers"].items():
    # Chance is 0.1 on ten balanced classes.
    assert result["test_accuracy"] > 0.7, (name, result["test_accuracy"])


def test_summary_json_schema(comparison):
  summary, workdir = comparison
  written = json.loads((workdir / "summary.json").read_text())
  assert written["optimizers"].keys() == summary["optimizers"].keys()
  for name, result in written["optimizers"].items():
    for key in ("test_accuracy", "test_accuracy_std", "final_train_loss", "wall_time_s"):
      assert isinstance(result[key], float) and np.isfinite(result[key]), (name, key)
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["steps_to_target"] is None or result["steps_to_target"] > 0
    assert len(result["steps_to_target_per_seed"]) == 2
    for key in ("per_class_precision", "per_class_recall", "per_class_f1"):
      assert len(result[key]) == 10 and all(0.0 <= value <= 1.0 for value in result[key])
    assert "learning_rate" in result["hyperparameters"]
    matrix = np.asarray(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 2 * written["num_test"]
    np.testing.assert_allclose(np.trace(matrix) / matrix.sum(), result["test_accuracy"],
                               atol=1e-6)
  assert written["optimizers"]["momentum"]["hyperparameters"]["momentum"] == 0.9
  assert written["input_pipeline"]["input_s_per_epoch"] > 0


def test_metrics_csv_has_one_row_per_optimizer_seed_and_epoch(comparison):
  _, workdir = comparison
  with open(workdir / "metrics.csv") as handle:
    rows = list(csv.DictReader(handle))
  assert len(rows) == 4 * 2 * 4
  assert {row["optimizer"] for row in rows} == {"sgd", "momentum", "adam", "rmsprop"}
  last = [row for row in rows if row["optimizer"] == "rmsprop" and row["epoch"] == "4"]
  assert all(int(row["step"]) == 4 * (1437 // 64) for row in last)


def test_plots_are_real_pngs(comparison):
  _, workdir = comparison
  for name in compare.PLOTS:
    path = workdir / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE, name
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01  # Not a blank canvas.


def test_summary_markdown_names_every_optimizer_and_plot(comparison):
  _, workdir = comparison
  text = (workdir / "summary.md").read_text()
  # The title names the optimizers this run compared (a formats comparison has others).
  assert text.splitlines()[0].endswith("SGD vs SGD + momentum vs Adam vs RMSprop")
  for label in ("SGD", "SGD + momentum", "Adam", "RMSprop"):
    assert f"| {label}" in text
  for name in compare.PLOTS:
    assert f"({name})" in text


# ----------------------------------------------------------------------------------------------
# Optimizers.


@pytest.mark.parametrize("name", optimizer_lib.OPTIMIZERS)
def test_make_optimizer_builds_each_optimizer(name):
  params = {"w": jnp.ones(3)}
  optimizer = optimizer_lib.make_optimizer(name, {"learning_rate": 0.1})
  updates, _ = optimizer.update({"w": jnp.ones(3)}, optimizer.init(params), params)
  assert float(updates["w"][0]) < 0


def test_make_optimizer_rmsprop_is_rmsprop_jax():
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([0.5, 0.25])}
  ours = optimizer_lib.make_optimizer(
      "rmsprop", {"learning_rate": 0.01, "decay": 0.95, "momentum": 0.5}
  )
  import rmsprop_jax

  reference = rmsprop_jax.rmsprop(0.01, 0.95, momentum=0.5)
  state, reference_state = ours.init(params), reference.init(params)
  for _ in range(3):
    updates, state = ours.update(grads, state, params)
    expected, reference_state = reference.update(grads, reference_state, params)
    np.testing.assert_array_equal(updates["w"], expected["w"])


def test_make_optimizer_takes_vmapped_learning_rates():
  params = {"w": jnp.array([1.0, -1.0])}
  grads = {"w": jnp.array([0.3, -0.6])}

  def one_update(learning_rate):
    optimizer = optimizer_lib.make_optimizer("rmsprop", {"learning_rate": learning_rate})
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return updates["w"]

  rates = jnp.array([1e-3, 1e-2, 1e-1])
  vmapped = jax.jit(jax.vmap(one_update))(rates)
  for index, rate in enumerate([1e-3, 1e-2, 1e-1]):
    np.testing.assert_allclose(vmapped[index], one_update(rate), rtol=1e-6)


def test_make_optimizer_rejects_bad_input():
  with pytest.raises(ValueError, match="unknown keys \\['beta'\\]"):
    optimizer_lib.make_optimizer("adam", {"learning_rate": 1e-3, "beta": 0.9})
  with pytest.raises(ValueError, match="learning_rate"):
    optimizer_lib.make_optimizer("sgd", {})
  with pytest.raises(ValueError, match="optimizer name"):
    optimizer_lib.make_optimizer("adagrad", {"learning_rate": 0.1})
  with pytest.raises(ValueError, match="total_steps"):
    optimizer_lib.make_optimizer("sgd", {"learning_rate": 0.1}, schedule="cosine")


# What each accumulator_format name stores for a (128, 128) leaf, and its rmsprop_jax format.
FORMAT_CASES = {
    "float32": ("float32", lambda f: f.dtype(jnp.float32)),
    "bfloat16": ("bfloat16", lambda f: f.bfloat16("stochastic")),
    "bfloat16_nearest": ("bfloat16", lambda f: f.bfloat16("nearest")),
    "int8": ("Int8Leaf", lambda f: f.int8(rounding="stochastic")),
    "factored": ("FactoredLeaf", lambda f: f.factored()),
    "bitsandbytes_int8": ("BitsandbytesInt8Leaf", lambda f: f.bitsandbytes_int8()),
}


@pytest.mark.parametrize("state_format", sorted(FORMAT_CASES))
def test_make_optimizer_maps_each_accumulator_format(state_format):
  import rmsprop_jax
  from rmsprop_jax import formats

  stored, expected_format = FORMAT_CASES[state_format]
  assert set(FORMAT_CASES) == set(optimizer_lib.ACCUMULATOR_FORMATS)
  params = {"w": jnp.linspace(-1.0, 1.0, 128 * 128).reshape(128, 128)}
  grads = {"w": jnp.cos(7.0 * params["w"])}
  # A named variant entry ("kind") builds the same optimizer as the plain name.
  for name, hparams in (("rmsprop", {}), ("rmsprop_variant", {"kind": "rmsprop"})):
    ours = optimizer_lib.make_optimizer(
        name, {**hparams, "learning_rate": 0.01, "accumulator_format": state_format})
    reference = rmsprop_jax.rmsprop(0.01, accumulator_dtype=expected_format(formats))
    state, reference_state = ours.init(params), reference.init(params)
    nu = state[0].nu["w"]
    assert (type(nu).__name__ if formats.is_encoded(nu) else str(nu.dtype)) == stored
    for _ in range(2):
      updates, state = ours.update(grads, state, params)
      expected, reference_state = reference.update(grads, reference_state, params)
      np.testing.assert_array_equal(updates["w"], expected["w"])


def test_make_optimizer_refuses_an_unknown_accumulator_format_or_kind():
  with pytest.raises(ValueError, match=r"optimizers\.rmsprop\.accumulator_format must be one "
                                       r"of \('float32', .*got 'int4'"):
    optimizer_lib.make_optimizer("rmsprop", {"learning_rate": 0.1, "accumulator_format": "int4"})
  with pytest.raises(ValueError, match=r"optimizers\.mine\.accumulator_format"):
    optimizer_lib.make_optimizer(
        "mine", {"kind": "rmsprop", "learning_rate": 0.1, "accumulator_format": jnp.int8})
  with pytest.raises(ValueError, match=r"optimizers\.mine\.kind must be one of"):
    optimizer_lib.make_optimizer("mine", {"kind": "adagrad", "learning_rate": 0.1})
  with pytest.raises(ValueError, match="unknown keys \\['accumulator_format'\\]"):
    optimizer_lib.make_optimizer("adam", {"learning_rate": 1e-3, "accumulator_format": "int8"})


def test_check_config_names_a_bad_accumulator_format_and_a_variant_without_kind():
  from configs.classification import fashion_mnist_mlp_formats
  from experiments.classification import schema
  from experiments.common.errors import ConfigError

  config = fashion_mnist_mlp_formats.get_config()
  schema.check_config(config)
  config.optimizers.rmsprop_int8.accumulator_format = "int7"
  with pytest.raises(ConfigError, match=r"optimizers\.rmsprop_int8\.accumulator_format"):
    schema.check_config(config)
  config = fashion_mnist_mlp_formats.get_config()
  del config.optimizers.rmsprop_int8["kind"]
  with pytest.raises(ConfigError, match=r"unknown optimizer\(s\) \['rmsprop_int8'\]"):
    schema.check_config(config)


def test_cosine_schedule_decays_the_step():
  optimizer = optimizer_lib.make_optimizer("sgd", {"learning_rate": 1.0}, schedule="cosine",
                                   total_steps=10)
  params = {"w": jnp.zeros(())}
  state = optimizer.init(params)
  first, state = optimizer.update({"w": jnp.ones(())}, state, params)
  for _ in range(8):
    last, state = optimizer.update({"w": jnp.ones(())}, state, params)
  assert float(first["w"]) == pytest.approx(-1.0)
  assert -0.1 < float(last["w"]) < 0


# ----------------------------------------------------------------------------------------------
# Tuned hyperparameters from a sweep.


def test_tuned_from_overrides_the_config_hyperparameters(tmp_path):
  sweep = {
      "best": {
          "rmsprop": {"trial": 3, "hparams": {"learning_rate": 0.003, "decay": 0.95},
                      "validation_accuracy": 0.97},
          "adam": {"hparams": {"learning_rate": 0.002}},
          "sgd": None,  # Every trial diverged: the config's values stay.
      }
  }
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps(sweep))
  config = fast_config(tuned_from=str(path))
  assert train.resolve_hparams(config, "rmsprop") == {
      "learning_rate": 0.003, "decay": 0.95, "eps": 1e-8
  }
  assert train.resolve_hparams(config, "adam")["learning_rate"] == 0.002
  assert train.resolve_hparams(config, "sgd") == {"learning_rate": 0.1}
  assert train.resolve_hparams(fast_config(), "rmsprop")["learning_rate"] == 1e-3


def test_tuned_from_reports_a_missing_or_malformed_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="tuned_from"):
    train.load_tuned_hparams(tmp_path / "nope.json", "sgd")
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps({"trials": []}))
  with pytest.raises(ValueError, match="'best'"):
    train.load_tuned_hparams(path, "sgd")
  # An entry of a format no sweep writes (the hyperparameters themselves): rerun the sweep.
  path.write_text(json.dumps({"best": {"adam": {"learning_rate": 0.002}}}))
  with pytest.raises(ValueError, match=r"no 'hparams' object.*rerun the sweep"):
    train.load_tuned_hparams(path, "adam")


# ----------------------------------------------------------------------------------------------
# Training functions.


def test_vmapped_seeds_match_seeds_run_one_by_one(tmp_path):
  dataset = data.load_digits()
  vmapped = train.train_and_evaluate(
      fast_config(num_epochs=1, vmap_seeds=True, epoch_loop="scan"), tmp_path / "vmap",
      dataset=dataset,
  )
  looped = train.train_and_evaluate(
      fast_config(num_epochs=1, vmap_seeds=False, epoch_loop="python"), tmp_path / "loop",
      dataset=dataset,
  )
  np.testing.assert_allclose(vmapped.train_loss, looped.train_loss, rtol=1e-4)
  np.testing.assert_allclose(vmapped.test_accuracy, looped.test_accuracy, atol=1 / 360 + 1e-6)


def test_train_epoch_unrolled_equals_rolled():
  dataset = data.load_digits()
  spec = train.ModelSpec.create("mlp", dataset.image_shape, 10, {"hidden_sizes": (32,)})
  graphdef = train.model_graphdef(spec)
  optimizer = optimizer_lib.make_optimizer("momentum", {"learning_rate": 0.05})
  state = train.init_train_state(spec, optimizer, jax.random.key(0))
  images, labels = jnp.asarray(dataset.train_images), jnp.asarray(dataset.train_labels)
  outputs = []
  for unroll in (1, True):
    epoch = jax.jit(functools.partial(train.train_epoch, graphdef, optimizer, batch_size=400,
                                      unroll=unroll))
    outputs.append(epoch(state, images, labels, jax.random.key(1)))
  np.testing.assert_allclose(outputs[0][1]["loss"], outputs[1][1]["loss"], rtol=1e-5)
  assert int(outputs[0][0].step) == 1437 // 400


def test_evaluate_pads_the_last_chunk_correctly():
  dataset = data.load_digits()
  spec = train.ModelSpec.create("mlp", dataset.image_shape, 10)
  graphdef = train.model_graphdef(spec)
  state = train.init_train_state(spec, optax.sgd(0.1), jax.random.key(0))
  images, labels = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)
  whole = train.evaluate(graphdef, state, images, labels, batch_size=360)
  chunked = train.evaluate(graphdef, state, images, labels, batch_size=100)
  np.testing.assert_allclose(whole["loss"], chunked["loss"], rtol=1e-5)
  np.testing.assert_array_equal(whole["predictions"], chunked["predictions"])


def test_train_step_updates_batch_norm_statistics_and_lowers_the_loss():
  spec = train.ModelSpec.create("cnn", (8, 8, 1), 10, {"channels": (4,), "hidden_size": 8})
  graphdef = train.model_graphdef(spec)
  optimizer = optimizer_lib.make_optimizer("rmsprop", {"learning_rate": 1e-2})
  state = train.init_train_state(spec, optimizer, jax.random.key(0))
  images = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
  labels = jnp.arange(16) % 10
  step = jax.jit(functools.partial(train.train_step, graphdef, optimizer))
  first_state, first = step(state, (images, labels), jax.random.key(2))
  current = first_state
  for index in range(10):
    current, last = step(current, (images, labels), jax.random.key(3 + index))
  assert float(last["loss"]) < float(first["loss"])
  means = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(current.model_state)
           if "mean" in jax.tree_util.keystr(path)]
  assert means and any(float(jnp.abs(mean).max()) > 0 for mean in means)
  assert int(current.step) == 11


def test_augment_images_translates_and_flips():
  images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1) + 1
  augmented = train.augment_images(images, jax.random.key(0), padding=0)
  for index in range(2):
    image, result = np.asarray(images[index]), np.asarray(augmented[index])
    assert np.array_equal(result, image) or np.array_equal(result, image[:, ::-1])
  shifted = train.augment_images(images, jax.random.key(1), padding=2)
  assert shifted.shape == images.shape
  # Translation only moves pixels or brings in zeros: no new values.
  assert set(np.unique(shifted).tolist()) <= set(np.unique(images).tolist()) | {0.0}


def test_steps_to_target_counts_steps_at_epoch_ends():
  accuracy = np.array([[0.5, 0.9, 0.95], [0.5, 0.6, 0.7]])
  result = train.RunResult(
      optimizer="sgd", hparams={"learning_rate": 0.1}, seeds=[0, 1], steps_per_epoch=10,
      train_loss=np.ones((2, 3)), train_accuracy=accuracy, test_loss=np.ones((2, 3)),
      test_accuracy=accuracy, test_predictions=np.zeros((2, 4), np.int32),
      test_labels=np.array([0, 1, 0, 1]), compile_time_s=0.0, train_time_s=1.0,
      eval_time_s=0.0, wall_time_s=1.0,
  )
  assert result.steps_to_target(0.9) == [20, None]
  summary = metrics.summarize_run(result, num_classes=2, target_accuracy=0.9)
  assert summary["steps_to_target"] is None and summary["target_reached_seeds"] == 1
  assert summary["per_class_recall"] == [1.0, 0.0]
  assert summary["per_class_precision"] == [0.5, 0.0]
  assert metrics.summarize_run(result, 2, 0.5)["steps_to_target"] == 10.0


# ----------------------------------------------------------------------------------------------
# Models and configs.


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("mlp", (8, 8, 1), {}),
        # Narrow versions of the larger models: the same layers, a fraction of the eager time.
        ("cnn", (28, 28, 1), {"channels": (4, 8), "hidden_size": 16}),
        ("cifar_cnn", (32, 32, 3), {"channels": (4, 8, 8)}),
    ],
)
def test_models_map_images_to_logits(name, shape, kwargs):
  spec = train.ModelSpec.create(name, shape, 10, kwargs)
  graphdef = train.model_graphdef(spec)
  # The variables' tree and shapes from the model's own initialiser (traced, not compiled),
  # their values drawn here (positive, so batch norm's variances are valid): compiling the
  # initialisers (a random draw per layer) took most of this test's time (cifar_cnn 21 s of
  # 27 s on 2 cores); Flax's initialisers run for real in the trainings of this module.
  abstract = jax.eval_shape(functools.partial(train.init_variables, spec), jax.random.key(0))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda leaf: rng.uniform(0.05, 0.15, leaf.shape).astype(leaf.dtype), abstract)

  @jax.jit
  def forward(variables, key, images):
    model = nnx.merge(graphdef, *variables)
    return model(images, train=False), model(images, train=True, rngs=nnx.Rngs(dropout=key))

  inference_logits, train_logits = forward(variables, jax.random.key(0), jnp.ones((3, *shape)))
  assert inference_logits.shape == (3, 10)
  assert train_logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(train_logits)))


def test_build_model_rejects_bad_arguments():
  with pytest.raises(ValueError, match="model must be one of"):
    models.build_model("resnet", (8, 8, 1), 10, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="input_shape"):
    models.build_model("mlp", (64,), 10, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="pooling stages"):
    models.build_model("cnn", (2, 2, 1), 10, rngs=nnx.Rngs(0), channels=(4, 8, 16))


@pytest.mark.parametrize("module", [digits, fashion_mnist, cifar10])
def test_configs_are_complete(module):
  config = module.get_config()
  assert set(config.optimizers) == set(optimizer_lib.OPTIMIZERS)
  for name in optimizer_lib.OPTIMIZERS:
    optimizer_lib.make_optimizer(name, dict(config.optimizers[name]), schedule=config.lr_schedule,
                         total_steps=100)
  assert config.model in models.MODELS and config.dataset in data.DATASETS
  assert config.name == module.__name__.rsplit(".", 1)[-1]


def test_run_comparison_rejects_unknown_optimizer(tmp_path):
  with pytest.raises(ValueError, match="adagrad"):
    compare.run_comparison(fast_config(), tmp_path, optimizers=["adagrad"], progress=False)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("sgd", {"learning_rate": -1.0}, r"optimizers\.sgd\.learning_rate must be .* got -1\.0"),
        ("sgd", {"learning_rate": float("nan")}, r"optimizers\.sgd\.learning_rate"),
        ("momentum", {"learning_rate": 0.1, "momentum": 1.5}, r"optimizers\.momentum\.momentum"),
        ("adam", {"learning_rate": 1e-3, "b2": 1.0}, r"optimizers\.adam\.b2 must be .*\[0, 1\)"),
        ("adam", {"learning_rate": 1e-3, "eps": -1e-8}, r"optimizers\.adam\.eps"),
    ],
)
def test_make_optimizer_checks_the_baselines_hyperparameters(name, hparams, message):
  # optax checks none of these: a negative learning rate trained to a NaN loss with exit 0.
  with pytest.raises(ValueError, match=message):
    optimizer_lib.make_optimizer(name, hparams)
  with pytest.raises(TypeError, match=r"optimizers\.momentum\.nesterov must be True or False"):
    optimizer_lib.make_optimizer("momentum", {"learning_rate": 0.1, "nesterov": "yes"})


def test_the_console_reads_steps_to_target_as_rounded_numbers_or_not_reached():
  """Never ``steps to target None`` nor ``124.66666666666667``: mean ± std rounded, or how many
  seeds reached the target."""
  reached = {"steps_to_target": 124.66666666666667, "steps_to_target_std": 9.43,
             "target_reached_seeds": 3}
  assert compare.steps_to_target_text(reached, 3) == "125 ± 9"
  never = {"steps_to_target": None, "steps_to_target_std": None, "target_reached_seeds": 0}
  assert compare.steps_to_target_text(never, 3) == "not reached (0/3 seeds)"
  summary = {"model": "mlp", "model_kwargs": {"hidden_sizes": (64,), "dropout_rate": 0.1}}
  assert compare.model_name(summary) == "mlp (hidden_sizes=(64,), dropout_rate=0.1)"


def test_tuned_from_reads_the_one_format_the_sweeps_write_and_refuses_others(tmp_path):
  """``best[name]`` is ``{"hparams": {...}, scores...}`` (or None: every trial diverged); the
  bare hyperparameters or a ``hyperparameters`` key (no sweep here writes them) are refused."""
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps({"best": {
      "sgd": {"hparams": {"learning_rate": 0.3, "no_such_hparam": 1}, "validation_accuracy": 0.9},
      "adam": None, "momentum": {"learning_rate": 0.1},
      "rmsprop": {"hyperparameters": {"learning_rate": 0.01}}}}))
  assert train.load_tuned_hparams(path, "sgd") == {"learning_rate": 0.3}
  assert train.load_tuned_hparams(path, "adam") == {}
  for name in ("momentum", "rmsprop"):
    with pytest.raises(ValueError, match=rf"best\['{name}'\] holds no 'hparams'.*rerun the sweep"):
      train.load_tuned_hparams(path, name)
