"""Tests of the trial axis sharded over devices and processes (experiments/sweeps/program.py).

One sweep (a grid, a TPE search and a halving run; tiny) runs on one device in this process and
on 8 simulated CPU devices in a subprocess; its halving run also over two processes joined with
jax.distributed on 127.0.0.1 (one device each). Each device trains its share of the trials, so
the picks, the trial-epochs and the results must be those of one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pytest

from experiments.common import cli
from experiments.distributed import multihost
from experiments.sweeps import sweep
from tests.conftest import REPO, result_line, run_in_subprocess, xla_flags
from tests.experiments.test_distributed import free_port
from tests.experiments.test_sweep import tiny_config, tiny_dataset


def sharded_config(devices: int = 0, with_tpe: bool = True,
                   with_grid: bool = True) -> ml_collections.ConfigDict:
  config = tiny_config()
  config.num_seeds, config.num_epochs, config.devices = 1, 2, devices
  config.optimizers = ml_collections.ConfigDict({
      # 8 trials in chunks of 3: on 8 devices a chunk is rounded up to 8.
      "rmsprop": {"fixed": {"eps": 1e-8},
                  "grid": {"learning_rate": [1e-3, 1e-2], "decay": [0.5, 0.8, 0.9, 0.99]}},
      # 8 -> 4 trials after the first epoch; on 8 devices the 4 are padded to 8.
      "sgd": {"grid": {"learning_rate": [0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0]},
              "halving": {"eta": 2, "rung_epochs": 1}},
  })
  if not with_grid:
    del config.optimizers["rmsprop"]
  if with_tpe:
    # Two rounds of 8: the second asked after TPE was told the first's results.
    config.optimizers.adam = {"num_trials": 16, "trials_per_round": 8,
                              "tpe": {"learning_rate": ("log_uniform", 1e-4, 1e-1)}}
  return config


def outcome(summary: dict[str, Any]) -> dict[str, Any]:
  """What must not depend on the devices: picks, trial-epochs, every trial's results."""
  def per_optimizer(field: str) -> dict[str, list[Any]]:
    return {name: [t[field] for t in summary["trials"] if t["optimizer"] == name]
            for name in summary["best"]}

  return {
      "devices": summary["devices"],
      "processes": summary["processes"],
      "best": {name: best["trial"] for name, best in summary["best"].items()},
      "best_hparams": {name: best["hparams"] for name, best in summary["best"].items()},
      "trial_epochs": summary["trial_epochs"],
      "epochs_trained": per_optimizer("epochs_trained"),
      "validation_accuracy": per_optimizer("validation_accuracy"),
      "train_loss": per_optimizer("train_loss"),
      "search": summary["search"],
  }


def eight_device_report(workdir: str) -> dict[str, Any]:
  """Run in the 8-device subprocess: the sweep on all devices, and the refused case."""
  import jax

  summary = sweep.run_sweep(sharded_config(), workdir, dataset=tiny_dataset(), progress=False)
  too_many = sharded_config(with_tpe=False)
  too_many.optimizers.rmsprop.grid.decay = [0.9, 0.99]  # 4 trials for 8 devices
  try:
    sweep.run_sweep(too_many, workdir, dataset=tiny_dataset(), progress=False)
    refusal = None
  except cli.ConfigError as error:
    refusal = str(error)
  return {"device_count": jax.device_count(), "outcome": outcome(summary), "refusal": refusal}


def two_process_worker(process_id: int, port: int, workdir: str) -> dict[str, Any]:
  # Halving alone: its first segment is a full-width sharded grid, its ranking gathers every
  # process's metrics; one optimizer keeps two processes on two cores within a minute.
  config = sharded_config(with_tpe=False, with_grid=False)
  config.distributed = ml_collections.ConfigDict({
      "coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": process_id,
      "initialization_timeout": 60,
  })
  summary = sweep.run_sweep(config, workdir, dataset=tiny_dataset(), progress=False)
  return outcome(summary)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  workdir = tmp_path_factory.mktemp("one_device")
  summary = sweep.run_sweep(sharded_config(devices=1), workdir, dataset=tiny_dataset(),
                            progress=False)
  return outcome(summary)


def assert_same_outcome(sharded: dict[str, Any], reference: dict[str, Any]) -> None:
  """Equal for every optimizer of ``sharded`` (the two-process sweep runs halving alone)."""
  for name in sharded["best"]:
    for field in ("best", "best_hparams", "trial_epochs", "epochs_trained"):
      assert sharded[field][name] == reference[field][name], (name, field)
    # Per device a narrower batch of the same runs: float rounding only.
    np.testing.assert_allclose(sharded["validation_accuracy"][name],
                               reference["validation_accuracy"][name], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(sharded["train_loss"][name], reference["train_loss"][name],
                               rtol=1e-4, err_msg=name)


def test_eight_devices_pick_what_one_device_picks(one_device, tmp_path):
  code = (
      "import json\n"
      "from tests.experiments import test_sweep_sharded as t\n"
      f"print('RESULT ' + json.dumps(t.eight_device_report({str(tmp_path)!r})))\n"
  )
  report = result_line(run_in_subprocess(code, devices=8, timeout=600))
  assert report["device_count"] == 8
  sharded = report["outcome"]
  assert sharded["devices"] == 8 and one_device["devices"] == 1
  assert set(sharded["best"]) == {"rmsprop", "sgd", "adam"}
  assert_same_outcome(sharded, one_device)
  assert sharded["search"]["sgd"]["compiled_widths"] == [8]  # 8, then 4 padded to 8
  assert one_device["search"]["sgd"]["compiled_widths"] == [8, 4]
  assert sharded["search"]["adam"] == one_device["search"]["adam"]
  assert report["refusal"] is not None and report["refusal"].startswith("devices: 8 device(s)")
  assert json.loads((tmp_path / "sweep.json").read_text())["devices"] == 8


def test_two_processes_pick_what_one_device_picks(one_device, tmp_path):
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = xla_flags(devices=1)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  for name in (multihost.ENV_COORDINATOR, multihost.ENV_NUM_PROCESSES, multihost.ENV_PROCESS_ID):
    env.pop(name, None)
  workers = []
  for process_id in range(2):
    code = (
        "import json\n"
        "from tests.experiments import test_sweep_sharded as t\n"
        f"report = t.two_process_worker({process_id}, {port}, {str(tmp_path)!r})\n"
        "print('RESULT ' + json.dumps(report), flush=True)\n"
    )
    workers.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for worker in workers:
      stdout, stderr = worker.communicate(timeout=600)
      assert worker.returncode == 0, f"{stdout[-2000:]}\n{stderr[-6000:]}"
      outputs.append(result_line(stdout))
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.communicate()
  for report in outputs:
    assert report["devices"] == 2 and report["processes"] == 2
    assert set(report["best"]) == {"sgd"}
    assert_same_outcome(report, one_device)
  written = json.loads((Path(tmp_path) / "sweep.json").read_text())  # by process 0 only
  assert written["devices"] == 2 and written["processes"] == 2
