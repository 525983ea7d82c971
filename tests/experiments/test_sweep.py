"""Tests of the vmapped hyperparameter sweep (experiments/sweeps/) on a tiny sweep.

One tiny sweep (digits subset, 16-unit MLP, 2 epochs, 2 seeds, two optimizers, one of them with
a learning rate that blows up) runs once per module with ``sequential=True``; the tests read its
outputs. The search spaces, chunking and plots are tested directly.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.classification import data as data_lib
from experiments.classification import train
from experiments.sweeps import program, report, search_space, selection, sweep, validation_split

DIVERGING_LEARNING_RATE = 1e30


def tiny_dataset() -> data_lib.Dataset:
  """A class-balanced slice of digits: 160 training and 60 test images."""
  full = data_lib.load_digits()
  return data_lib.Dataset(
      "digits", full.train_images[:160], full.train_labels[:160], full.test_images[:60],
      full.test_labels[:60], full.class_names,
  )


def tiny_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "tiny_sweep"
  config.dataset = "digits"
  config.data_dir = ""
  config.verify_checksums = True
  config.model = "mlp"
  config.model_kwargs = ml_collections.ConfigDict({"hidden_sizes": (16,), "dropout_rate": 0.1})
  config.batch_size = 32
  config.eval_batch_size = 1000
  config.num_epochs = 2
  config.lr_schedule = "constant"
  config.num_seeds = 2
  config.seed = 0
  config.validation_fraction = 0.25
  config.divergence_factor = 10.0
  config.chunk_size = 3
  config.devices = 0
  config.distributed = ml_collections.ConfigDict({})
  config.python_loop_runs = 1
  config.timing_repeats = 2
  config.trial_randomness = "shared"
  config.compilation_cache_dir = ""
  config.optimizers = ml_collections.ConfigDict({
      # Three trials in one chunk, the last one blowing up next to two healthy ones.
      "sgd": {"grid": {"learning_rate": [0.05, 0.5, DIVERGING_LEARNING_RATE]}},
      # Four trials in chunks of three: the second chunk is padded.
      "rmsprop": {"fixed": {"eps": 1e-8},
                  "grid": {"learning_rate": [1e-3, 1e-2], "decay": [0.9, 0.99]}},
  })
  config.heatmap = ml_collections.ConfigDict(
      {"optimizer": "rmsprop", "x": "learning_rate", "y": "decay"}
  )
  return config


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
  workdir = tmp_path_factory.mktemp("tiny_sweep")
  summary = sweep.run_sweep(
      tiny_config(), workdir, sequential=True, dataset=tiny_dataset(), progress=False
  )
  return summary, workdir


# ----------------------------------------------------------------------------------------------
# Search spaces and chunking.


def test_grid_is_the_cartesian_product_first_name_slowest():
  trials = search_space.grid_trials({"learning_rate": [0.1, 0.01], "decay": [0.9, 0.99, 0.999]})
  np.testing.assert_array_equal(trials["learning_rate"], [0.1] * 3 + [0.01] * 3)
  np.testing.assert_array_equal(trials["decay"], [0.9, 0.99, 0.999] * 2)


def test_random_trials_follow_their_distributions_and_seed():
  space = {"learning_rate": ("log_uniform", 1e-5, 1e-1), "decay": ("uniform", 0.5, 0.999)}
  trials = search_space.random_trials(space, 4000, seed=3)
  rates, decays = trials["learning_rate"], trials["decay"]
  assert rates.min() >= 1e-5 and rates.max() <= 1e-1
  assert decays.min() >= 0.5 and decays.max() <= 0.999
  # Log-uniform: each decade gets a quarter of the draws; uniform: the mean is the midpoint.
  counts = np.histogram(np.log10(rates), bins=[-5, -4, -3, -2, -1])[0]
  np.testing.assert_allclose(counts / len(rates), 0.25, atol=0.03)
  assert abs(decays.mean() - 0.7495) < 0.01
  again = search_space.random_trials(space, 4000, seed=3)
  np.testing.assert_array_equal(again["learning_rate"], rates)
  assert not np.array_equal(search_space.random_trials(space, 4000, seed=4)["decay"], decays)


@pytest.mark.parametrize(
    ("name", "entry", "message"),
    [
        ("lion", {"grid": {"learning_rate": [0.1]}}, "unknown optimizer"),
        ("sgd", {"grid": {"learning_rate": [0.1], "decay": [0.9]}}, "unknown hyperparameters"),
        ("rmsprop", {"grid": {"decay": [0.9]}}, "learning_rate"),
        ("sgd", {"grid": {"learning_rate": []}}, "grid\\['learning_rate'\\]"),
        ("sgd", {}, "exactly one of 'grid', 'random', 'tpe', 'qmc'"),
        ("sgd", {"random": {"learning_rate": ("log_uniform", 1e-3, 1.0)}}, "num_trials"),
        ("sgd", {"num_trials": 2, "random": {"learning_rate": ("log_uniform", 0.0, 1.0)}},
         "low > 0"),
        ("sgd", {"num_trials": 2, "random": {"learning_rate": ("uniform", 1.0, 0.1)}},
         "low < high"),
        ("sgd", {"num_trials": 2, "random": {"learning_rate": ("normal", 0.1, 1.0)}},
         "distribution"),
        ("rmsprop", {"fixed": {"decay": 0.9}, "grid": {"learning_rate": [0.1], "decay": [0.9]}},
         "both sweeps and fixes"),
        ("sgd", {"grid": {"learning_rate": [0.1, math.nan]}}, "finite"),
    ],
)
def test_bad_search_spaces_are_rejected_with_the_argument_named(name, entry, message):
  with pytest.raises(ValueError, match=message):
    search_space.optimizer_trials(name, entry, seed=0)


def test_chunks_have_one_shape_and_the_last_is_padded_with_a_real_trial():
  chunks = program.chunk_slices(7, 3)
  assert [real for _, real in chunks] == [3, 3, 1]
  assert all(indices.shape == (3,) for indices, _ in chunks)
  np.testing.assert_array_equal(chunks[-1][0], [6, 6, 6])
  with pytest.raises(ValueError, match="chunk_size"):
    program.chunk_slices(7, 0)


def test_bad_sweep_config_is_rejected_before_training(tmp_path):
  config = tiny_config()
  config.num_seeds = 0
  with pytest.raises(ValueError, match="num_seeds"):
    sweep.run_sweep(config, tmp_path, dataset=tiny_dataset(), progress=False)
  config = tiny_config()
  config.batch_size = 500
  with pytest.raises(ValueError, match="batch_size=500"):
    sweep.run_sweep(config, tmp_path, dataset=tiny_dataset(), progress=False)


# ----------------------------------------------------------------------------------------------
# The compiled program.


def test_one_compilation_serves_every_chunk():
  """Different hyperparameter values in every chunk: one trace, one cache entry."""
  dataset = tiny_dataset()
  data = validation_split.split_validation(dataset, 0.25)
  setup = program.TrainingSetup(
      spec=train.ModelSpec.create("mlp", dataset.image_shape, 10, {"hidden_sizes": (8,)}),
      optimizer="rmsprop", fixed=(), batch_size=40, num_epochs=1,
  )
  traces: dict[str, int] = {}
  chunk_program = program.make_chunk_program(program.make_trial_fn(setup, traces))
  keys = program.run_keys([0], 1, "shared")
  results = []
  for rates, decays in [([1e-3, 1e-2], [0.9, 0.9]), ([3e-3, 3e-2], [0.5, 0.99]),
                        ([1e-4, 1e-1], [0.999, 0.8])]:
    hparams = {"learning_rate": jnp.asarray(rates, jnp.float32),
               "decay": jnp.asarray(decays, jnp.float32)}
    results.append(chunk_program(hparams, keys, data)["train_loss"])
  assert traces == {"rmsprop": 1}
  assert chunk_program._cache_size() == 1  # type: ignore[attr-defined]  # jit's compiled entries
  assert len({float(loss[0, 0]) for loss in results}) == 3  # the values did reach the program


def test_vmapped_trial_equals_the_same_trial_trained_alone():
  """A trial in a chunk (next to a blowing-up one) matches jit(trial) run on its own."""
  dataset = tiny_dataset()
  data = validation_split.split_validation(dataset, 0.25)
  setup = program.TrainingSetup(
      spec=train.ModelSpec.create("mlp", dataset.image_shape, 10, {"hidden_sizes": (8,)}),
      optimizer="rmsprop", fixed=(("momentum", 0.5),), batch_size=40, num_epochs=2,
  )
  trial_fn = program.make_trial_fn(setup)
  swept = {"learning_rate": np.array([3e-3, DIVERGING_LEARNING_RATE, 1e-2]),
           "decay": np.array([0.9, 0.9, 0.99])}
  keys = program.run_keys([5, 6], 3, "shared")
  together, _ = program.run_vmapped(trial_fn, swept, keys, data, chunk_size=3)
  assert selection.diverged_runs(together, 23.0)[1].all()
  alone = jax.jit(trial_fn)
  for trial in (0, 2):
    for seed in range(2):
      hparams = {name: jnp.float32(values[trial]) for name, values in swept.items()}
      result = jax.device_get(alone(hparams, keys[seed], data))
      for metric, value in result.items():
        np.testing.assert_allclose(together[metric][trial, seed], value, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{metric} of trial {trial}, seed {seed}")


# ----------------------------------------------------------------------------------------------
# The sweep's outputs.


def _strict_json(path):
  def refuse(constant):
    raise ValueError(f"non-standard JSON constant {constant}")
  with open(path) as handle:
    return json.load(handle, parse_constant=refuse)


def test_outputs_are_written(tiny_sweep):
  summary, workdir = tiny_sweep
  for name in ("sweep.json", "sweep.md", "heatmap.png", "sensitivity.png"):
    assert (workdir / name).stat().st_size > 0, name
  written = _strict_json(workdir / "sweep.json")  # NaN would not be valid JSON
  assert written["best"] == json.loads(json.dumps(summary["best"]))
  markdown = (workdir / "sweep.md").read_text()
  assert "Best trial per optimizer" in markdown and "heatmap.png" in markdown


def test_every_trial_is_recorded_with_its_hyperparameters_and_results(tiny_sweep):
  summary, _ = tiny_sweep
  trials = summary["trials"]
  sgd = [t for t in trials if t["optimizer"] == "sgd"]
  rmsprop = [t for t in trials if t["optimizer"] == "rmsprop"]
  assert len(trials) == 7 and len(sgd) == 3 and len(rmsprop) == 4
  assert {t["hparams"]["learning_rate"] for t in sgd} == {0.05, 0.5, DIVERGING_LEARNING_RATE}
  rmsprop_grid = {(t["hparams"]["learning_rate"], t["hparams"]["decay"]) for t in rmsprop}
  assert rmsprop_grid == {(1e-3, 0.9), (1e-3, 0.99), (1e-2, 0.9), (1e-2, 0.99)}
  assert all(t["hparams"]["eps"] == 1e-8 for t in rmsprop)
  for trial in trials:
    assert {"train_loss", "test_accuracy", "validation_accuracy", "diverged"} <= set(trial)
    assert len(trial["test_accuracy_per_seed"]) == 2
  assert summary["split_sizes"] == {"train": 120, "validation": 40, "test": 60}


def test_divergent_trial_is_flagged_and_poisons_nothing(tiny_sweep):
  summary, _ = tiny_sweep
  by_rate = {t["hparams"]["learning_rate"]: t for t in summary["trials"]
             if t["optimizer"] == "sgd"}
  blown = by_rate[DIVERGING_LEARNING_RATE]
  assert blown["diverged"] and blown["diverged_seeds"] == 2
  assert blown["train_loss"] is None or blown["train_loss"] > summary["divergence_loss_limit"]
  for rate in (0.05, 0.5):
    assert not by_rate[rate]["diverged"]
    assert by_rate[rate]["train_loss"] < math.log(10)  # they learned something
  assert summary["best"]["sgd"]["hparams"]["learning_rate"] != DIVERGING_LEARNING_RATE
  # The healthy neighbours of the blown-up trial equal their runs trained alone.
  for trial in by_rate.values():  # the same runs trained one at a time, recorded beside
    assert ("sequential_train_loss" in trial) and ("sequential_test_accuracy" in trial)
  agreement = summary["vmapped_vs_sequential_max_abs_diff"]["sgd"]
  assert agreement["diverged_in_one_mode_only"] == 0
  assert agreement["train_loss"] < 1e-5 and agreement["test_accuracy"] == 0.0


def test_vmapped_results_equal_sequential_and_python_loop_runs(tiny_sweep):
  summary, _ = tiny_sweep
  for name, agreement in summary["vmapped_vs_sequential_max_abs_diff"].items():
    for metric in selection.RUN_METRICS:
      assert agreement[metric] < 1e-5, (name, metric, agreement[metric])
  for name, checks in summary["python_loop_vs_vmapped"].items():
    for check in checks:
      np.testing.assert_allclose(check["final_epoch_train_loss_python_loop"],
                                 check["final_epoch_train_loss_vmapped"], rtol=1e-4,
                                 err_msg=name)


def test_timings_and_compilations_are_recorded(tiny_sweep):
  summary, _ = tiny_sweep
  timing = summary["timing"]
  for name in ("sgd", "rmsprop"):
    modes = timing["per_optimizer"][name]
    assert set(modes) == {"vmapped", "sequential", "python_loop"}
    # rmsprop's four trials ran in two chunks, sgd's three in one: one trace each.
    assert modes["vmapped"]["traces"] == 1 and modes["sequential"]["traces"] == 1
    assert modes["vmapped"]["runs"] == modes["sequential"]["runs"] == modes["python_loop"]["runs"]
    assert modes["python_loop"]["runs_timed"] == 1
    for mode in ("vmapped", "sequential"):
      assert len(modes[mode]["run_s_repeats"]) == 2
      assert modes[mode]["run_s"] == min(modes[mode]["run_s_repeats"])
    for mode in modes.values():
      assert mode["compile_s"] > 0 and mode["run_s"] > 0
  assert set(timing["speedup"]["all"]) == {"vs sequential", "vs python_loop"}


def test_best_trial_feeds_the_tuned_comparison(tiny_sweep):
  summary, workdir = tiny_sweep
  for name in ("sgd", "rmsprop"):
    best = summary["best"][name]
    candidates = [t for t in summary["trials"] if t["optimizer"] == name and not t["diverged"]]
    assert best["validation_accuracy"] == max(t["validation_accuracy"] for t in candidates)
    assert train.load_tuned_hparams(workdir / "sweep.json", name) == best["hparams"]
  config = ml_collections.ConfigDict({
      "optimizers": {"rmsprop": {"learning_rate": 1.0, "decay": 0.5, "eps": 1e-3}},
      "tuned_from": str(workdir / "sweep.json"),
  })
  assert train.resolve_hparams(config, "rmsprop") == summary["best"]["rmsprop"]["hparams"]


def test_best_trial_is_none_when_every_trial_diverged():
  records = [{"trial": 0, "diverged": True, "validation_accuracy": 0.1, "validation_loss": None}]
  assert selection.best_trial(records, "validation_accuracy") is None


def test_records_of_a_sweep_that_measured_only_the_validation_split():
  """The sequential CNN sweep (trial_loop) records per-epoch training losses and the validation
  split only: the rest is None, and the loss limit applies to the last epoch's training loss."""
  swept = {"learning_rate": np.array([0.1, 0.2, 0.3])}
  metrics = {
      "epoch_train_loss": np.array([[[2.0, 0.5]], [[2.0, 30.0]], [[2.0, np.nan]]]),
      "validation_loss": np.array([[0.4], [0.3], [0.2]]),
      "validation_accuracy": np.array([[0.8], [0.9], [0.95]]),
  }
  records = selection.trial_records("sgd", swept, {}, metrics, loss_limit=23.0)
  assert [r["diverged"] for r in records] == [False, True, True]
  assert records[0]["test_accuracy"] is None and records[0]["train_loss_per_seed"] is None
  assert records[0]["validation_accuracy_per_seed"] == [0.8]
  best = selection.best_trial(records, "validation_accuracy")
  assert best is not None and best["trial"] == 0 and best["hparams"] == {"learning_rate": 0.1}


def test_plots_of_a_random_search(tmp_path):
  generator = np.random.default_rng(0)
  records = []
  for trial in range(20):
    rate, decay = 10 ** generator.uniform(-4, 0), generator.uniform(0.5, 0.999)
    records.append({
        "optimizer": "rmsprop", "search": "random", "trial": trial, "diverged": rate > 0.3,
        "hparams": {"learning_rate": rate, "decay": decay},
        "test_accuracy": None if rate > 0.3 else 1 - rate, "validation_accuracy": 1 - rate,
    })
  assert report.plot_heatmap(tmp_path / "heatmap.png", records, "learning_rate", "decay", "t")
  report.plot_sensitivity(tmp_path / "sensitivity.png", records, "t")
  assert (tmp_path / "heatmap.png").stat().st_size > 0
  assert (tmp_path / "sensitivity.png").stat().st_size > 0
  assert not report.plot_heatmap(tmp_path / "none.png", records, "learning_rate", "eps", "t")


def test_the_sensitivity_legend_says_of_how_many_trials_each_point_is_the_best():
  grid = {rate: [{"hparams": {"learning_rate": rate, "decay": decay, "eps": 1e-8}}
                 for decay in (0.5, 0.9, 0.99)] for rate in (1e-3, 1e-2)}
  assert report._sensitivity_label("rmsprop", grid) == (
      "rmsprop: best of 3 decay values per learning rate")
  single = {rate: [{"hparams": {"learning_rate": rate}}] for rate in (1e-3, 1e-2)}
  assert report._sensitivity_label("sgd", single) == "sgd"


def test_sweep_md_names_the_model_and_its_tables_are_well_formed(tmp_path):
  summary = {
      "name": "s", "config": {"dataset": "digits", "model": "mlp",
                              "model_kwargs": {"hidden_sizes": (64,)}, "num_epochs": 2,
                              "batch_size": 32},
      "seeds": [0], "selection_metric": "validation_accuracy", "hardware": "cpu",
      "best": {"sgd": {"hparams": {"learning_rate": 0.1}, "validation_accuracy": 0.9,
                       "test_accuracy": 0.8, "train_loss": 0.5}, "adam": None},
      "timing": {"per_optimizer": {"sgd": {"vmapped": {
          "runs": 1, "compile_s": 1.0, "compile_cpu_s": 1.0, "run_s": 2.0, "run_cpu_s": 2.0}}}},
      "trials": [{"optimizer": "sgd", "trial": 0, "hparams": {"learning_rate": 0.1},
                  "diverged": False, "validation_accuracy": 0.9, "test_accuracy": 0.8,
                  "train_loss": 0.5}],
  }
  report.write_markdown(tmp_path / "sweep.md", summary)
  text = (tmp_path / "sweep.md").read_text()
  assert "model `mlp (hidden_sizes=(64,))`" in text
  assert "| sgd | learning_rate=0.1 | 0.9 | 0.8 | 0.5 |" in text
  assert "| adam | every trial diverged | — | — | — |" in text
  assert "|---|---|---|---|---|---|---|" in text  # the timing and every-trial tables


def test_run_keys_shared_or_drawn_per_trial():
  shared = program.run_keys([3, 4], 5, "shared")
  assert shared.shape == (2,)
  per_trial = program.run_keys([3, 4], 5, "per_trial")
  assert per_trial.shape == (5, 2)
  raw = np.asarray(jax.random.key_data(per_trial)).reshape(10, -1)
  assert len({tuple(row) for row in raw}) == 10  # every run its own key
  with pytest.raises(ValueError, match="trial_randomness"):
    program.run_keys([3], 5, "independent")


def test_random_search_sweep_end_to_end(tmp_path):
  """RMSprop random search with momentum: trials drawn in range, recorded, plotted as a scatter."""
  config = tiny_config()
  config.num_epochs, config.num_seeds = 1, 1
  config.optimizers = ml_collections.ConfigDict({"rmsprop": {
      "num_trials": 3,
      "random": {"learning_rate": ("log_uniform", 1e-4, 1e-2), "eps": ("log_uniform", 1e-8, 1e-4),
                 "decay": ("uniform", 0.8, 0.99), "momentum": ("uniform", 0.0, 0.9)},
  }})
  summary = sweep.run_sweep(config, tmp_path, dataset=tiny_dataset(), progress=False)
  trials = summary["trials"]
  assert len(trials) == 3 and all(t["search"] == "random" for t in trials)
  for trial in trials:
    hparams = trial["hparams"]
    assert 1e-4 <= hparams["learning_rate"] <= 1e-2 and 1e-8 <= hparams["eps"] <= 1e-4
    assert 0.8 <= hparams["decay"] <= 0.99 and 0.0 <= hparams["momentum"] <= 0.9
    assert not trial["diverged"]
  assert summary["best"]["rmsprop"]["hparams"]["momentum"] > 0.0  # the momentum buffer is used
  assert summary["plots"] == ["heatmap.png", "sensitivity.png"]
  assert "speedup" not in summary["timing"]  # no --sequential: vmapped only
