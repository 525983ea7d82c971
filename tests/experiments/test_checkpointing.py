"""Exact checkpoint-resume with Orbax, and detection of damaged checkpoints.

The resume tests train the digits MLP (dropout on, centred RMSprop with momentum) for one epoch
of 22 steps, once straight through and once stopped after 11 steps (checkpoints every 5 steps
and at the stop), then resumed in a fresh Python process. Parameters, batch-norm state,
optimizer state and step must come out bitwise identical. The unit tests damage checkpoints on
disk the ways storage does (changed bytes, a lost file, an interrupted write) and check that the
damage is reported with the checkpoint's name and that the previous good one is used or named.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.classification import train
from experiments.common import optimizers as optimizer_lib
from experiments.distributed import checkpointing
from experiments.distributed import train as train_distributed
from experiments.distributed.checkpointing import (
  CheckpointCorruptedError,
  CheckpointFallbackWarning,
  DataPosition,
  TrainCheckpointer,
)
from tests.conftest import (
    REPO,
    result_line,
    run_in_subprocess,
    run_module_in_process,
    tiny_config,
    xla_flags,
)

TOTAL_STEPS = 22  # One epoch of the digits training set at batch 64.
STOP_STEP = 11
SAVE_EVERY = 5


def resume_config(**overrides: Any) -> Any:
  config = tiny_config()
  config.checkpoint_every = SAVE_EVERY
  config.resume = True
  config.async_checkpointing = True
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def restore_final(workdir: Path, like: Any) -> tuple[dict[str, np.ndarray], DataPosition]:
  """The newest checkpoint of a run, as host arrays keyed by path (no sharding needed)."""
  with TrainCheckpointer(workdir / "checkpoints") as manager:
    restored = manager.restore_latest(jax.eval_shape(lambda: like))
  assert restored is not None
  state, position, _ = restored
  return checkpointing.flatten_state(jax.device_get(state)), position


def damage_largest_array_file(step_directory: Path) -> Path:
  """Overwrites 8 bytes in the middle of the biggest array data file of a checkpoint."""
  files = [Path(name) for name in glob.glob(str(step_directory / "state" / "**" / "*"),
                                            recursive=True) if os.path.isfile(name)]
  target = max(files, key=lambda path: path.stat().st_size)
  data = bytearray(target.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 8] = bytes(8) if data[middle:middle + 8] != bytes(8) else b"\xff" * 8
  target.write_bytes(bytes(data))
  return target


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  """A straight run, and a run stopped after STOP_STEP steps (its workdir is copied by tests)."""
  straight_dir = tmp_path_factory.mktemp("straight")
  straight = train_distributed.train_and_evaluate(resume_config(resume=False), straight_dir)
  stopped_dir = tmp_path_factory.mktemp("stopped")
  stopped = train_distributed.train_and_evaluate(
      resume_config(stop_after_steps=STOP_STEP), stopped_dir
  )
  return {
      "straight": straight, "straight_dir": straight_dir, "stopped": stopped,
      "stopped_dir": stopped_dir,
  }


def copy_run(source: Path, destination: Path) -> Path:
  shutil.copytree(source / "checkpoints", destination / "checkpoints")
  return destination


def assert_bitwise_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
  assert set(actual) == set(expected)
  for key in expected:
    assert actual[key].dtype == expected[key].dtype, key
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_stopped_run_saved_periodically_and_at_the_stop(runs: dict[str, Any]) -> None:
  stopped = runs["stopped"]
  assert (stopped.start_step, stopped.final_step, stopped.total_steps) == (0, STOP_STEP, 22)
  with TrainCheckpointer(runs["stopped_dir"] / "checkpoints") as manager:
    assert manager.all_steps() == [5, 10, STOP_STEP]
  # The straight run kept the newest three and wrote the last step.
  with TrainCheckpointer(runs["straight_dir"] / "checkpoints") as manager:
    assert manager.all_steps() == [15, 20, TOTAL_STEPS]


def test_resume_in_a_fresh_process_is_bitwise_identical(
    runs: dict[str, Any], tmp_path: Path
) -> None:
  workdir = copy_run(runs["stopped_dir"], tmp_path / "resumed")
  code = (
      "import json\n"
      "from tests.experiments import test_checkpointing as t\n"
      "from experiments.distributed import train as train_distributed\n"
      f"result = train_distributed.train_and_evaluate(t.resume_config(), {str(workdir)!r})\n"
      "print('RESULT ' + json.dumps([result.start_step, result.final_step]))\n"
  )
  start, final = result_line(run_in_subprocess(code, devices=1, timeout=300))
  assert (start, final) == (STOP_STEP, TOTAL_STEPS)
  straight_state = runs["straight"].state
  resumed, position = restore_final(workdir, straight_state)
  expected = checkpointing.flatten_state(jax.device_get(straight_state))
  assert position == DataPosition.at(TOTAL_STEPS, steps_per_epoch=22, batch_size=64, seed=0)
  assert_bitwise_equal(resumed, expected)
  # Every part of the state is covered: parameters, optimizer buffers and counters, step.
  assert any(key.startswith("opt_state/") and "/nu/" in key for key in resumed)
  assert any(key.startswith("opt_state/") and "/mu/" in key for key in resumed)
  assert any(key.startswith("opt_state/") and "/trace/" in key for key in resumed)
  assert int(resumed["step"]) == TOTAL_STEPS


def test_corrupted_newest_checkpoint_falls_back_and_stays_exact(
    runs: dict[str, Any], tmp_path: Path
) -> None:
  workdir = copy_run(runs["stopped_dir"], tmp_path / "damaged")
  damage_largest_array_file(workdir / "checkpoints" / str(STOP_STEP))
  with pytest.warns(CheckpointFallbackWarning, match=rf"corrupted checkpoint\(s\) \[{STOP_STEP}\]"):
    result = train_distributed.train_and_evaluate(resume_config(), workdir)
  assert (result.start_step, result.final_step) == (10, TOTAL_STEPS)
  assert_bitwise_equal(
      checkpointing.flatten_state(jax.device_get(result.state)),
      checkpointing.flatten_state(jax.device_get(runs["straight"].state)),
  )
  # The damaged directory was moved aside, and step 11 was not saved again (not a multiple of 5).
  moved = (workdir / "checkpoints" / "corrupted").iterdir()
  assert [path.name.split("-")[0] for path in moved] == [str(STOP_STEP)]


def test_trainer_takes_the_steps_of_train_py(runs: dict[str, Any]) -> None:
  # The sharded trainer runs train.train_step batch by batch; train.py's train_epoch scans the
  # same step over the same permutation and keys. The two are different compiled programs, and
  # XLA may order a reduction differently in each (it does not on every CPU and release), so
  # they are compared as test_sharding compares two layouts of the same run: integers exactly,
  # floats to 1e-4 after these 22 steps. Control: another epoch key (another data order and
  # dropout) moves the weights by far more.
  config = resume_config()
  dataset = train.load_config_dataset(config)
  spec = train.model_spec(config, dataset)
  optimizer = optimizer_lib.make_optimizer(
      "rmsprop", dict(config.optimizers.rmsprop), total_steps=TOTAL_STEPS
  )
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  epoch_key = jax.random.split(data_key, config.num_epochs)[0]
  epoch = jax.jit(functools.partial(
      train.train_epoch, train.model_graphdef(spec), optimizer, batch_size=config.batch_size
  ))
  initial = train.init_train_state(spec, optimizer, init_key)
  state, _ = epoch(initial, dataset.train_images, dataset.train_labels, epoch_key)
  scanned = checkpointing.flatten_state(jax.device_get(state))
  other_order, _ = epoch(initial, dataset.train_images, dataset.train_labels,
                         jax.random.fold_in(epoch_key, 1))
  other = checkpointing.flatten_state(jax.device_get(other_order))
  assert max(float(np.max(np.abs(other[key] - value))) for key, value in scanned.items()
             if key.startswith("params/")) > 1e-2
  stepped = checkpointing.flatten_state(jax.device_get(runs["straight"].state))
  assert set(stepped) == set(scanned)
  for key, value in scanned.items():
    assert stepped[key].dtype == value.dtype, key
    if np.issubdtype(value.dtype, np.floating):
      np.testing.assert_allclose(stepped[key], value, rtol=0, atol=1e-4, err_msg=key)
    else:
      np.testing.assert_array_equal(stepped[key], value, err_msg=key)


def test_resume_refuses_a_different_data_order(runs: dict[str, Any], tmp_path: Path) -> None:
  workdir = copy_run(runs["stopped_dir"], tmp_path / "other_order")
  message = "written with batch_size=64, but this run has batch_size=32"
  with pytest.raises(ValueError, match=message):
    train_distributed.train_and_evaluate(resume_config(batch_size=32), workdir)


# ------------------------------------------------------------------------------------------------
# The checkpointer on a small state.


def small_state(offset: float = 0.0) -> dict[str, Any]:
  return {
      "params": {"w": jnp.arange(6000.0, dtype=jnp.float32).reshape(60, 100) / 7 + offset,
                 "b": jnp.full((100,), 0.5 + offset, jnp.bfloat16)},
      "count": jnp.int32(3),
  }


def position(step: int) -> DataPosition:
  return DataPosition.at(step, steps_per_epoch=10, batch_size=4, seed=1)


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> Path:
  directory = tmp_path / "checkpoints"
  with TrainCheckpointer(directory, save_every=2) as manager:
    assert not manager.save(small_state(1.0), position(1))  # Not due: 1 % 2 != 0.
    assert manager.save(small_state(2.0), position(2), extra={"optimizer": "rmsprop"})
    assert manager.save(small_state(4.0), position(4))
  return directory


def abstract_small() -> Any:
  return jax.eval_shape(small_state)


def test_round_trip_is_bitwise(two_checkpoints: Path) -> None:
  with TrainCheckpointer(two_checkpoints) as manager:
    assert manager.all_steps() == [2, 4]
    state, where, extra = manager.restore_step(2, abstract_small())
  assert where == position(2) and extra == {"optimizer": "rmsprop"}
  assert_bitwise_equal(
      checkpointing.flatten_state(jax.device_get(state)),
      checkpointing.flatten_state(jax.device_get(small_state(2.0))),
  )


def test_changed_bytes_are_detected_and_previous_checkpoint_used(two_checkpoints: Path) -> None:
  damage_largest_array_file(two_checkpoints / "4")
  with TrainCheckpointer(two_checkpoints) as manager:
    damaged = r"checkpoints/4.*(checksums|cannot be read)"
    with pytest.raises(CheckpointCorruptedError, match=damaged):
      manager.restore_step(4, abstract_small())
    with pytest.warns(CheckpointFallbackWarning, match=r"\[4\] and resumed from step 2"):
      restored = manager.restore_latest(abstract_small())
    assert restored is not None and restored[1].step == 2
    # The bad step was moved aside, so the resumed run can write step 4 again.
    assert manager.all_steps() == [2]
    assert manager.save(small_state(4.0), position(4), force=True)
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4]


def test_without_fallback_the_error_names_bad_and_good_checkpoints(two_checkpoints: Path) -> None:
  damage_largest_array_file(two_checkpoints / "4")
  with TrainCheckpointer(two_checkpoints) as manager:
    with pytest.raises(CheckpointCorruptedError) as raised:
      manager.restore_latest(abstract_small(), fallback=False)
  message = str(raised.value)
  assert f"{two_checkpoints / '4'}" in message
  assert f"newest good checkpoint is {two_checkpoints / '2'} (step 2)" in message


def test_checksums_catch_changes_that_still_decode(two_checkpoints: Path) -> None:
  # Simulate a change the codec cannot notice: the stored checksum of one array no longer fits.
  import json

  meta_file = two_checkpoints / "4" / checkpointing.META_ITEM / "metadata"
  meta = json.loads(meta_file.read_text())
  meta["fingerprint"]["params/w"][0] ^= 1
  meta_file.write_text(json.dumps(meta))
  with TrainCheckpointer(two_checkpoints) as manager:
    with pytest.raises(CheckpointCorruptedError, match=r"1 array\(s\) fail their checksums.*w"):
      manager.restore_step(4, abstract_small())


def test_missing_file_is_detected(two_checkpoints: Path) -> None:
  (two_checkpoints / "4" / "state" / "_METADATA").unlink()
  with TrainCheckpointer(two_checkpoints) as manager:
    with pytest.raises(CheckpointCorruptedError, match=r"checkpoints/4 cannot be read"):
      manager.restore_step(4, abstract_small())


def test_interrupted_write_is_never_a_checkpoint(two_checkpoints: Path) -> None:
  # A crash during a write leaves Orbax's temporary directory, with whatever was written so far.
  partial = two_checkpoints / "6.orbax-checkpoint-tmp-1764080000"
  shutil.copytree(two_checkpoints / "4", partial)
  (partial / "commit_success.txt").unlink(missing_ok=True)
  shutil.rmtree(partial / "meta")
  with TrainCheckpointer(two_checkpoints) as manager:
    assert manager.latest_step() == 4
    restored = manager.restore_latest(abstract_small())
  assert restored is not None and restored[1].step == 4


def test_all_checkpoints_damaged_lists_each(two_checkpoints: Path) -> None:
  for step in ("2", "4"):
    damage_largest_array_file(two_checkpoints / step)
  with TrainCheckpointer(two_checkpoints) as manager:
    listing = r"no usable checkpoint(.|\n)*step 4(.|\n)*step 2"
    with pytest.raises(CheckpointCorruptedError, match=listing):
      manager.restore_latest(abstract_small())


def test_empty_directory_restores_nothing(tmp_path: Path) -> None:
  with TrainCheckpointer(tmp_path / "none") as manager:
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      assert manager.restore_latest(abstract_small()) is None


def test_data_position() -> None:
  assert DataPosition.at(23, steps_per_epoch=10, batch_size=4, seed=1) == DataPosition(
      23, 2, 3, 10, 4, 1
  )
  stored = DataPosition.at(23, steps_per_epoch=10, batch_size=4, seed=1)
  with pytest.raises(ValueError, match="written with seed=1, but this run has seed=2"):
    stored.check_same_order(DataPosition.at(23, steps_per_epoch=10, batch_size=4, seed=2))
  with pytest.raises(ValueError, match="inconsistent"):
    DataPosition(23, 0, 0, 10, 4, 1).check_same_order(stored)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"save_every": -1}, "save_every must be >= 0"),
        ({"max_to_keep": 1}, "max_to_keep must be >= 2"),
    ],
)
def test_bad_checkpointer_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
  with pytest.raises(ValueError, match=message):
    TrainCheckpointer(tmp_path, **kwargs)


def test_a_different_state_structure_is_not_called_corruption(two_checkpoints: Path) -> None:
  other = {"params": {"w": jnp.zeros((60, 100))}, "count": jnp.int32(0)}
  with TrainCheckpointer(two_checkpoints) as manager:
    with pytest.raises(ValueError, match=r"checkpoints/4 holds the state of a different model"):
      manager.restore_latest(jax.eval_shape(lambda: other))


# ------------------------------------------------------------------------------------------------
# A real kill -9 mid-epoch, then the same command again, as a user would run it.

KILL_CONFIG = '''
from tests.conftest import tiny_config


def get_config():
  config = tiny_config()
  config.num_epochs = 4  # 88 steps of 22 per epoch.
  config.checkpoint_every = 9  # Step 27 is a checkpoint in the middle of epoch 2.
  config.resume = True
  return config
'''
KILL_AT_CHECKPOINT = 27


def train_command(config_file: Path, workdir: Path, *overrides: str) -> list[str]:
  return [
      sys.executable, "-m", "experiments.distributed.train", "--config", str(config_file),
      "--workdir", str(workdir), *overrides,
  ]


def subprocess_env() -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices=1))
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
  """An uninterrupted run, and a run killed with SIGKILL after a mid-epoch checkpoint, rerun."""
  root = tmp_path_factory.mktemp("kill")
  config_file = root / "kill_config.py"
  config_file.write_text(KILL_CONFIG)
  straight, killed = root / "straight", root / "killed"
  subprocess.run(train_command(config_file, straight), env=subprocess_env(), cwd=REPO,
                 check=True, capture_output=True, timeout=600)
  process = subprocess.Popen(train_command(config_file, killed), env=subprocess_env(), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = killed / "checkpoints" / str(KILL_AT_CHECKPOINT)
  deadline = time.monotonic() + 600
  while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert not (killed / "summary.json").exists()
  rerun = subprocess.run(train_command(config_file, killed), env=subprocess_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  return {"config": config_file, "straight": straight, "killed": killed}


def test_kill_9_mid_epoch_then_rerun_has_the_whole_history(
    killed_and_rerun: dict[str, Path],
) -> None:
  straight = json.loads((killed_and_rerun["straight"] / "summary.json").read_text())
  resumed = json.loads((killed_and_rerun["killed"] / "summary.json").read_text())
  assert KILL_AT_CHECKPOINT <= resumed["start_step"] < 88
  assert resumed["start_step"] % 22 != 0  # Resumed mid-epoch.
  assert (resumed["final_step"], straight["final_step"]) == (88, 88)
  assert [record["epoch"] for record in resumed["history"]] == [1, 2, 3, 4]
  # Every number of every epoch, the interrupted epoch's train loss and accuracy included.
  assert resumed["history"] == straight["history"]


DISAGREEING_OVERRIDES = [
    ("--config.num_epochs=2", "written with num_epochs=4, but config.num_epochs=2"),
    ("--config.optimizers.rmsprop.learning_rate=0.01",
     "learning_rate=0.001, but config.optimizers.rmsprop.learning_rate=0.01"),
    ("--config.optimizers.rmsprop.decay=0.95",
     "decay=0.9, but config.optimizers.rmsprop.decay=0.95"),
]


@pytest.mark.parametrize(("override", "message"), DISAGREEING_OVERRIDES)
def test_a_config_that_disagrees_with_the_checkpoint_stops_in_one_line(
    killed_and_rerun: dict[str, Path], override: str, message: str
) -> None:
  workdir = killed_and_rerun["killed"]
  summary_before = (workdir / "summary.json").read_text()
  # The first case as a real `python -m` process; the others run the same entry point in this
  # process (tests/conftest.py's run_module_in_process), seconds faster.
  command = train_command(killed_and_rerun["config"], workdir, override)
  if override == DISAGREEING_OVERRIDES[0][0]:
    completed = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True,
                               text=True, timeout=600)
  else:
    completed = run_module_in_process(*command[2:])
  assert completed.returncode == 2
  assert "Traceback" not in completed.stderr
  errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], completed.stderr[-2000:]
  assert "--config.resume=False" in errors[0]
  # The finished run's report is left as it was.
  assert (workdir / "summary.json").read_text() == summary_before


def test_run_progress_round_trips_bitwise() -> None:
  steps: list[dict[str, Any]] = [
      {"loss": np.float32(0.1 * k + 1 / 3), "accuracy": np.float32(k / 7)} for k in range(5)
  ]
  progress = train_distributed.RunProgress(
      history=[{"step": 22, "epoch": 1, "train_loss": 0.5}], epoch_steps=list(steps)
  )
  restored = train_distributed.RunProgress.from_json(json.loads(json.dumps(progress.to_json())))
  assert restored.history == progress.history
  for before, after in zip(steps, restored.epoch_steps, strict=True):
    for name in before:
      assert after[name].dtype == np.float32
      assert after[name].tobytes() == np.asarray(before[name]).tobytes()
  assert train_distributed.RunProgress.from_json(None) == train_distributed.RunProgress()
