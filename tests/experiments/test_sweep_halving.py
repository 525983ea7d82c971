"""Tests of successive halving inside the vmapped program (experiments/sweeps/halving.py).

The schedule and the ranking are checked directly; one tiny halving run checks that the
survivors continue from their exact state (their final results equal the same trials trained
in one go by the plain vmapped program) and that sweep.json records what was trained.
"""

from __future__ import annotations

import itertools

import ml_collections
import numpy as np
import pytest

from experiments.common import cli
from experiments.sweeps import halving, program, sweep, validation_split
from tests.experiments.test_cli import assert_one_line_error, run_module_in_process
from tests.experiments.test_sweep import DIVERGING_LEARNING_RATE, tiny_config, tiny_dataset


@pytest.mark.parametrize(
    ("trials", "epochs", "eta", "rung", "widths", "trial_epochs"),
    [
        (64, 20, 2, 4, [64, 32, 16, 8, 4], 496),  # configs/sweeps/sweep_digits_halving.py
        (64, 20, 3, 5, [64, 21, 7, 2], 470),
        (8, 10, 2, 3, [8, 4, 2, 1], 3 * 8 + 3 * 4 + 3 * 2 + 1),
        (4, 10, 2, 1, [4, 2, 1], 4 + 2 + 8),  # one left: it trains to the end in one segment
    ],
)
def test_schedule_keeps_the_best_one_over_eta_every_rung(trials, epochs, eta, rung, widths,
                                                         trial_epochs):
  schedule = halving.halving_schedule(trials, epochs, eta, rung)
  assert [segment.trials for segment in schedule] == widths
  assert schedule[0].start == 0 and schedule[-1].end == epochs
  assert all(a.end == b.start for a, b in itertools.pairwise(schedule))
  assert sum(s.trials * (s.end - s.start) for s in schedule) == trial_epochs


def test_ranking_puts_diverged_trials_last_and_breaks_ties_by_loss():
  metrics = {
      "validation_accuracy": np.array([[0.9], [0.95], [0.95], [0.99]]),
      "validation_loss": np.array([[0.3], [0.2], [0.1], [0.05]]),
      "train_loss": np.array([[0.3], [0.2], [0.1], [np.nan]]),
  }
  losses = [np.array([[1.0, 0.5]])] * 3 + [np.array([[1.0, np.nan]])]
  assert list(halving.rank_trials(metrics, losses, loss_limit=23.0)) == [2, 1, 0, 3]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"eta": 1, "rung_epochs": 1}, "halving.eta must be an integer >= 2"),
        ({"eta": 2, "rung_epochs": 2}, "halving schedule is longer than the run"),
        ({"eta": 2}, "missing ['rung_epochs']"),
        ({"eta": 2, "rung_epochs": 1, "min_trials": 2}, "unknown ['min_trials']"),
    ],
)
def test_a_halving_schedule_that_cannot_run_is_refused_naming_the_field(value, fragment):
  config = tiny_config()  # 2 epochs
  config.optimizers = ml_collections.ConfigDict({"rmsprop": {
      "grid": {"learning_rate": [1e-3, 1e-2]}, "halving": value}})
  with pytest.raises(cli.ConfigError) as error:
    sweep.check_sweep_config(config)
  assert "optimizers['rmsprop'].halving" in str(error.value) and fragment in str(error.value)


def test_the_command_line_refuses_eta_below_two_in_one_line():
  completed = run_module_in_process("experiments.sweeps.sweep",
                         "--config=configs/sweeps/sweep_digits_halving.py",
                         "--config.optimizers.rmsprop.halving.eta=1", "--workdir=/nonexistent")
  assert_one_line_error(completed, "optimizers['rmsprop'].halving.eta")


def test_survivors_continue_from_their_exact_state(tmp_path):
  """Three trials, eta 2, a rung after the first of 2 epochs: 3 -> 1. The survivor's results
  equal the same trial trained to the end in one vmapped call; a diverging trial is dropped at
  the rung; sweep.json records the trial-epochs and the compiled widths."""
  config = tiny_config()
  config.num_epochs, config.num_seeds = 2, 2
  config.optimizers = ml_collections.ConfigDict({"rmsprop": {
      "fixed": {"eps": 1e-8},
      "grid": {"learning_rate": [3e-3, 3e-2, DIVERGING_LEARNING_RATE]},
      "halving": {"eta": 2, "rung_epochs": 1},
  }})
  summary = sweep.run_sweep(config, tmp_path, dataset=tiny_dataset(), progress=False)
  trials = summary["trials"]
  epochs = [t["epochs_trained"] for t in trials]
  assert sorted(epochs) == [1, 1, 2]
  assert epochs[2] == 1 and trials[2]["diverged"]  # the blown-up trial stops at the rung
  assert summary["trial_epochs"] == {"rmsprop": 4}
  search = summary["search"]["rmsprop"]
  assert search["compiled_widths"] == [3, 1] and search["compilations"] == 2
  assert summary["timing"]["per_optimizer"]["rmsprop"]["vmapped"]["traces"] == 2
  assert summary["devices"] == 1
  winner = epochs.index(2)
  assert summary["best"]["rmsprop"]["trial"] == winner

  dataset = tiny_dataset()
  data = validation_split.split_validation(dataset, config.validation_fraction, config.seed)
  setup = program.TrainingSetup(
      spec=sweep.train.model_spec(config, dataset), optimizer="rmsprop",
      fixed=(("eps", 1e-8),), batch_size=config.batch_size, num_epochs=config.num_epochs,
  )
  rates = np.array([t["hparams"]["learning_rate"] for t in trials[:2]])
  full, _ = program.run_vmapped(program.make_trial_fn(setup), {"learning_rate": rates},
                                program.run_keys([0, 1], 2, "shared"), data, 2)
  for metric in ("train_loss", "validation_accuracy", "test_accuracy"):
    np.testing.assert_allclose(trials[winner][f"{metric}_per_seed"], full[metric][winner],
                               rtol=1e-5, atol=1e-6, err_msg=metric)
