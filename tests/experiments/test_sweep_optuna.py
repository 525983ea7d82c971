"""Tests of Optuna's samplers driving the vmapped program (experiments/sweeps/optuna_batches.py).

The rounds, the padding and what Optuna is told are checked on a stand-in program (a smooth
function of the hyperparameters: no training, exact); one tiny real sweep checks that the rounds
reuse one compilation and that the told values are the trials' own results.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
import numpy as np
import optuna
import pytest

from experiments.common import cli
from experiments.sweeps import optuna_batches, program, sweep, validation_split
from tests.experiments.test_cli import assert_one_line_error, run_module_in_process
from tests.experiments.test_sweep import tiny_config, tiny_dataset

SPACE = {"learning_rate": ("log_uniform", 1e-5, 1.0), "decay": ("uniform", 0.5, 0.999)}
BEST_RATE, BEST_DECAY = 1e-2, 0.9


class StandIn:
  """A compiled-program stand-in: validation accuracy peaks at (BEST_RATE, BEST_DECAY); rates
  above 0.3 diverge (NaN losses). Records the width of every call."""

  def __init__(self, devices: int = 1):
    self.devices = devices
    self.mesh = self
    self.widths: list[int] = []
    self.compile_s = self.compile_cpu_s = 0.0

  def width(self, num_trials: int) -> int:
    return math.ceil(num_trials / self.devices) * self.devices

  def __call__(self, hparams: dict[str, np.ndarray], keys: Any) -> dict[str, np.ndarray]:
    rates, decays = hparams["learning_rate"], hparams["decay"]
    self.widths.append(len(rates))
    accuracy = np.exp(-(np.log10(rates) - np.log10(BEST_RATE)) ** 2 - 10 * (decays - BEST_DECAY)
                      ** 2)
    loss = np.where(rates > 0.3, np.nan, 1 - accuracy)
    return {"epoch_train_loss": loss[:, None, None], "train_loss": loss[:, None],
            "validation_loss": loss[:, None], "validation_accuracy": accuracy[:, None]}


def run(stand_in: StandIn, search: str, num_trials: int, per_round: int, **kwargs: Any):
  return optuna_batches.run_optuna_batches(
      stand_in, search, SPACE, num_trials, per_round, keys=np.zeros(1),  # type: ignore[arg-type]
      seed=0,
      loss_limit=23.0, **kwargs,
  )


def test_each_round_is_one_call_and_the_last_is_padded():
  stand_in = StandIn(devices=3)
  swept, metrics, timing, rounds = run(stand_in, "tpe", 10, 4)
  assert stand_in.widths == [6, 6, 6]  # 4 per round, rounded up to a multiple of 3 devices
  assert rounds == [0] * 4 + [1] * 4 + [2] * 2
  assert all(len(values) == 10 for values in swept.values())
  assert metrics["validation_accuracy"].shape == (10, 1)
  assert timing.runs == 10 and len(timing.run_s_repeats) == 1


@pytest.mark.parametrize("search", ["tpe", "qmc"])
def test_trials_stay_in_the_space_and_the_seed_fixes_them(search):
  first, _, _, _ = run(StandIn(), search, 12, 4)
  again, _, _, _ = run(StandIn(), search, 12, 4)
  for name, (_, low, high) in SPACE.items():
    assert np.all((first[name] >= low) & (first[name] <= high)), name
    np.testing.assert_array_equal(first[name], again[name])
  assert len(set(first["learning_rate"])) == 12  # every trial its own point


def test_tpe_rounds_move_toward_the_best_region_and_failures_are_told_as_failed():
  study = optuna.create_study(direction="maximize", sampler=optuna_batches.make_sampler("tpe", 0))
  swept, metrics, _, rounds = run(StandIn(), "tpe", 48, 8, study=study)
  distance = np.abs(np.log10(swept["learning_rate"]) - np.log10(BEST_RATE))
  rounds = np.asarray(rounds)
  # The first round is TPE's random start-up; by the last, its proposals sit near the optimum.
  assert np.median(distance[rounds == 5]) < np.median(distance[rounds == 0]) / 2
  diverged = swept["learning_rate"] > 0.3
  states = np.array([trial.state for trial in study.trials])
  assert diverged.any()
  assert np.all(states[diverged] == optuna.trial.TrialState.FAIL)
  assert np.all(states[~diverged] == optuna.trial.TrialState.COMPLETE)
  told = np.array([trial.value for trial in study.trials], dtype=object)[~diverged].astype(float)
  np.testing.assert_allclose(told, metrics["validation_accuracy"][~diverged, 0])


def tpe_config() -> ml_collections.ConfigDict:
  config = tiny_config()
  config.num_seeds, config.num_epochs = 1, 1
  config.optimizers = ml_collections.ConfigDict({
      "rmsprop": {"fixed": {"eps": 1e-8}, "num_trials": 5, "trials_per_round": 2,
                  "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1),
                          "decay": ("uniform", 0.5, 0.999)}},
  })
  return config


def test_rounds_reuse_one_compilation_and_tell_the_trials_own_results(tmp_path):
  config = tpe_config()
  summary = sweep.run_sweep(config, tmp_path, dataset=tiny_dataset(), progress=False)
  assert summary["search"]["rmsprop"] == {"rounds": 3, "trials_per_round": 2, "round_width": 2}
  assert summary["timing"]["per_optimizer"]["rmsprop"]["vmapped"]["traces"] == 1
  assert summary["trial_epochs"] == {"rmsprop": 5 * config.num_epochs}
  trials = [t for t in summary["trials"] if t["optimizer"] == "rmsprop"]
  assert [t["search"] for t in trials] == ["tpe"] * 5
  # The same hyperparameters trained by the plain vmapped sweep give the recorded results.
  dataset = tiny_dataset()
  data = validation_split.split_validation(dataset, config.validation_fraction, config.seed)
  setup = program.TrainingSetup(
      spec=sweep.train.model_spec(config, dataset), optimizer="rmsprop",
      fixed=(("eps", 1e-8),), batch_size=config.batch_size, num_epochs=config.num_epochs,
  )
  swept = {name: np.array([t["hparams"][name] for t in trials]) for name in ("learning_rate",
                                                                               "decay")}
  metrics, _ = program.run_vmapped(program.make_trial_fn(setup), swept,
                                   program.run_keys([config.seed], 5, "shared"), data, 2)
  np.testing.assert_allclose([t["validation_accuracy"] for t in trials],
                             metrics["validation_accuracy"][:, 0], atol=1e-6)
  best = summary["best"]["rmsprop"]
  assert best["validation_accuracy"] == max(t["validation_accuracy"] for t in trials)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"num_trials": 4, "trials_per_round": 2,
          "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1), "decay": [0.9, 0.99]}},
         "optimizers['rmsprop'].tpe['decay'] must be (distribution, low, high)"),
        ({"num_trials": 4, "trials_per_round": 2,
          "tpe": {"learning_rate": ("normal", 1e-3, 1e-1)}},
         "optimizers['rmsprop'].tpe['learning_rate'] distribution"),
        ({"num_trials": 4, "trials_per_round": 2,
          "qmc": {"learning_rate": ("log_uniform", 0.0, 1e-1)}}, "needs low > 0"),
        ({"num_trials": 4, "trials_per_round": 8,
          "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1)}},
         "optimizers['rmsprop'].trials_per_round=8"),
        ({"num_trials": 4, "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1)}},
         "needs trials_per_round"),
        ({"num_trials": 4, "trials_per_round": 2, "halving": {"eta": 2, "rung_epochs": 1},
          "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1)}}, "halving applies to a grid"),
    ],
)
def test_a_space_or_round_optuna_cannot_run_is_refused_naming_the_field(entry, fragment):
  config = tiny_config()
  config.optimizers = ml_collections.ConfigDict({"rmsprop": entry})
  with pytest.raises(cli.ConfigError, match=fragment.replace("[", r"\[").replace("(", r"\(")
                     .replace(")", r"\)")):
    sweep.check_sweep_config(config)


def test_the_command_line_refuses_a_round_wider_than_the_trials_in_one_line():
  completed = run_module_in_process("experiments.sweeps.sweep",
                         "--config=configs/sweeps/sweep_digits_tpe.py",
                         "--config.optimizers.rmsprop.trials_per_round=65",
                         "--workdir=/nonexistent")
  assert_one_line_error(completed, "trials_per_round=65", "num_trials=64")
