"""Two local processes training together over the loopback interface, against one process.

Each process owns 2 simulated CPU devices; ``jax.distributed.initialize`` joins them into one
4-device job (coordinator on 127.0.0.1, a free port, Gloo collectives over TCP) with a
``data=2 x model=2`` mesh, the ``data`` axis across the processes. They train the digits MLP
for one epoch on the same global batches as a single-process run of the same config, write a
checkpoint together and each save the parameters they end with.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from experiments.common import optimizers as optimizer_lib
from experiments.distributed import checkpointing, sharding
from experiments.distributed import multihost as distributed
from experiments.distributed import train as train_distributed
from tests.conftest import REPO, result_line, tiny_config, xla_flags

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def two_process_worker(process_id: int, port: int, workdir: str) -> dict[str, Any]:
  """One of the two processes: joins the job, trains, saves its final parameters."""
  config = tiny_config()
  config.distributed.coordinator_address = f"127.0.0.1:{port}"
  config.distributed.num_processes = NUM_PROCESSES
  config.distributed.process_id = process_id
  config.distributed.initialization_timeout = 60
  config.mesh.data, config.mesh.model = NUM_PROCESSES, DEVICES_PER_PROCESS
  result = train_distributed.train_and_evaluate(config, workdir)
  params = distributed.fetch(result.state.params)
  flat = checkpointing.flatten_state(params)
  np.savez(Path(workdir) / f"params_process{process_id}.npz", **flat)
  return {
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "mesh_shape": result.mesh_shape,
      "history": result.history,
      "step_collectives": result.step_collectives,
  }


def launch_two_processes(workdir: Path, timeout: float = 300) -> list[dict[str, Any]]:
  """Starts both workers, waits for both, returns their reports (kills both on failure)."""
  port = free_port()
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(DEVICES_PER_PROCESS)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    env.pop(name, None)
  workers = []
  for process_id in range(NUM_PROCESSES):
    script = (
        "import json\n"
        "from tests.experiments import test_distributed as t\n"
        f"report = t.two_process_worker({process_id}, {port}, {str(workdir)!r})\n"
        "print('RESULT ' + json.dumps(report), flush=True)\n"
    )
    workers.append(subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ))
  outputs = []
  try:
    for worker in workers:
      stdout, stderr = worker.communicate(timeout=timeout)
      outputs.append((worker.returncode, stdout, stderr))
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.communicate()
  for process_id, (code, stdout, stderr) in enumerate(outputs):
    assert code == 0, f"process {process_id} failed ({code}):\n{stdout[-2000:]}\n{stderr[-6000:]}"
  return [result_line(stdout) for _, stdout, _ in outputs]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  workdir = tmp_path_factory.mktemp("two_processes")
  reports = launch_two_processes(workdir)
  # The reference: this (single-device) process, same config, same global batches.
  config = tiny_config()
  config.mesh.data, config.mesh.model = 1, 1
  reference = train_distributed.train_and_evaluate(
      config, tmp_path_factory.mktemp("one_process"), devices=jax.devices()[:1]
  )
  return {"workdir": workdir, "reports": reports, "reference": reference, "config": config}


def test_processes_form_one_job(two_processes: dict[str, Any]) -> None:
  reports = two_processes["reports"]
  assert [report["process_index"] for report in reports] == [0, 1]
  for report in reports:
    assert report["process_count"] == NUM_PROCESSES
    assert report["device_count"] == NUM_PROCESSES * DEVICES_PER_PROCESS
    assert report["local_device_count"] == DEVICES_PER_PROCESS
    assert report["mesh_shape"] == {"data": NUM_PROCESSES, "model": DEVICES_PER_PROCESS}
    assert report["step_collectives"]["all-reduce"] > 0


def test_processes_end_with_the_same_parameters_as_one_process(
    two_processes: dict[str, Any],
) -> None:
  workdir = two_processes["workdir"]
  per_process = [
      dict(np.load(workdir / f"params_process{index}.npz")) for index in range(NUM_PROCESSES)
  ]
  reference = checkpointing.flatten_state(jax.device_get(two_processes["reference"].state.params))
  assert set(per_process[0]) == set(per_process[1]) == set(reference)
  for key, expected in reference.items():
    # Both processes hold bitwise the same (replicated) values...
    np.testing.assert_array_equal(per_process[0][key], per_process[1][key], err_msg=key)
    # ...and match one process up to the order of the gradient sums (see test_sharding.py).
    np.testing.assert_allclose(per_process[0][key], np.asarray(expected), rtol=0, atol=1e-4,
                               err_msg=key)
  histories = [report["history"] for report in two_processes["reports"]]
  assert histories[0] == histories[1]
  assert histories[0][0]["test_loss"] == pytest.approx(
      two_processes["reference"].history[0]["test_loss"], rel=1e-4
  )


def test_two_process_checkpoint_restores_in_one_process(two_processes: dict[str, Any]) -> None:
  # The checkpoint written by both processes (each its own shards) reads back into a
  # single-device layout, with the data position of the end of the epoch.
  config = two_processes["config"]
  reference = two_processes["reference"]
  optimizer = optimizer_lib.make_optimizer("rmsprop", dict(config.optimizers.rmsprop))
  mesh = sharding.make_mesh({"data": 1, "model": 1}, jax.devices()[:1])
  abstract = jax.eval_shape(lambda: reference.state)
  shardings = sharding.train_state_shardings(optimizer, abstract, mesh)
  with checkpointing.TrainCheckpointer(two_processes["workdir"] / "checkpoints") as manager:
    restored = manager.restore_latest(checkpointing.abstract_like(abstract, shardings))
  assert restored is not None
  state, position, extra = restored
  assert position.step == reference.final_step
  assert extra["optimizer"] == "rmsprop"
  saved = np.load(two_processes["workdir"] / "params_process0.npz")
  for key, value in checkpointing.flatten_state(jax.device_get(state.params)).items():
    np.testing.assert_array_equal(value, saved[key], err_msg=key)


# ------------------------------------------------------------------------------------------------
# Settings from the config and the environment.


def test_no_settings_means_single_process() -> None:
  assert distributed.resolve_settings(None, environ={}) is None
  assert distributed.resolve_settings(
      {"coordinator_address": "", "num_processes": -1, "process_id": -1}, environ={}
  ) is None
  assert distributed.resolve_settings({"num_processes": 1}, environ={}) is None


def test_settings_from_environment_and_config_precedence() -> None:
  environ = {
      "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "3", "JAX_LOCAL_DEVICE_IDS": "0,1",
  }
  settings = distributed.resolve_settings({}, environ=environ)
  assert settings is not None
  assert (settings.coordinator_address, settings.num_processes, settings.process_id) == (
      "10.0.0.1:1234", 4, 3
  )
  assert settings.local_device_ids == (0, 1)
  settings = distributed.resolve_settings({"process_id": 1}, environ=environ)
  assert settings is not None and settings.process_id == 1


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        ({"coordinator_address": "h:1"}, {}, "num_processes, process_id not set"),
        ({}, {"JAX_NUM_PROCESSES": "two"}, r"\$JAX_NUM_PROCESSES must be an integer"),
        ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"}, {},
         r"process_id must be in \[0, num_processes=2\)"),
        ({"cpu_collectives": "nccl"}, {}, "cpu_collectives must be one of"),
        ({"coordinator": "h:1"}, {}, "unknown fields"),
        ({"num_processes": 0}, {}, "num_processes must be >= 1"),
    ],
)
def test_bad_settings_are_named(
    config: dict[str, Any], environ: dict[str, str], message: str
) -> None:
  with pytest.raises(ValueError, match=message):
    distributed.resolve_settings(config, environ=environ)


def test_auto_detect_leaves_missing_fields_to_jax() -> None:
  settings = distributed.resolve_settings({"auto_detect": True}, environ={})
  assert settings is not None
  assert settings.coordinator_address is None and settings.num_processes is None
