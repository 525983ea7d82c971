"""The entry points' handling of user mistakes: one ``error:`` line, exit code 2, no traceback.

Mistakes found before any work run the entry point in this process
(:func:`tests.conftest.run_module_in_process`: the module's ``__main__`` block, as ``python -m``
runs it, in milliseconds instead of a fresh interpreter's seconds); a few tests per entry point
still start a real ``python -m`` process, so that the one-line error is checked end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.common import cli
from tests.conftest import REPO, run_module_in_process


def run_module(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def assert_one_line_error(completed: subprocess.CompletedProcess[str], *fragments: str) -> None:
  assert completed.returncode == 2, completed.stderr[-2000:]
  assert "Traceback" not in completed.stderr
  errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, completed.stderr[-2000:]
  for fragment in fragments:
    assert fragment in errors[0]


@pytest.mark.parametrize(
    ("module", "config"),
    [
        ("experiments.sweeps.sweep", "configs/sweep_digts.py"),
        ("experiments.distributed.train", "configs/distributed/digits_distributed.py.bak"),
        ("experiments.studies.nonstationary", "configs/nonstationery.py:quick"),
    ],
)
def test_a_missing_config_file_is_one_line(module: str, config: str) -> None:
  completed = run_module(module, f"--config={config}")
  assert_one_line_error(completed, "no such file", "configs/classification/digits.py")


def test_a_variant_the_config_does_not_have_is_one_line() -> None:
  completed = run_module("experiments.distributed.train", "--config",
                         "configs/classification/digits.py:quick")
  assert_one_line_error(completed, "takes no ':quick' variant", "--config.<field>=<value>")


def test_a_workdir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
  not_a_folder = tmp_path / "results.txt"
  not_a_folder.write_text("")
  completed = run_module("experiments.studies.nonstationary",
                         "--config=configs/studies/nonstationary.py:quick",
                         f"--workdir={not_a_folder}")
  assert_one_line_error(completed, "is a file")


def test_config_argument_is_found_in_both_spellings() -> None:
  assert cli.config_argument(["--config=a.py:quick", "--workdir=x"]) == "a.py:quick"
  assert cli.config_argument(["--workdir", "x", "--config", "b.py"]) == "b.py"
  assert cli.config_argument(["--workdir=x"]) is None


# ------------------------------------------------------------------------------------------------
# The comparison: the whole config is checked before any training.


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("--config.optimizer=rmsprp", ("config.optimizer='rmsprp'",)),
        ("--config.optimizers.sgd.learning_rate=-1", ("optimizers.sgd.learning_rate", "-1")),
        ("--config.optimizers.rmsprop.decay=1.5", ("config.optimizers.rmsprop", "decay")),
        ("--config.optimizers.rmsprop.learning_rate=-1",
         ("config.optimizers.rmsprop", "learning_rate")),
        ("--config.batch_size=0", ("config.batch_size must be a whole number >= 1",)),
        ("--config.batch_size=100000", ("config.batch_size=100000 is larger than the 1437",)),
        ("--config.tuned_from=runs/no_such_sweep/sweep.json", ("no such file", "make sweep")),
        ("--config.lr_schedule=cosin", ("config.lr_schedule must be one of",)),
    ],
)
def test_comparison_config_mistakes_are_one_line_before_training(
    tmp_path: Path, override: str, fragments: tuple[str, ...]
) -> None:
  completed = run_module_in_process("experiments.classification.compare",
                         "--config=configs/classification/digits.py", override,
                         f"--workdir={tmp_path / 'run'}")
  assert_one_line_error(completed, *fragments)
  assert not (tmp_path / "run").exists()  # Nothing was trained or written.


def test_a_misspelt_optimizer_name_is_an_error_not_a_dropped_optimizer(tmp_path: Path) -> None:
  config_file = tmp_path / "typo.py"
  config_file.write_text(
      "from configs.classification import digits\n\n\n"
      "def get_config():\n"
      "  config = digits.get_config()\n"
      "  config.optimizers.rmsprp = config.optimizers.rmsprop\n"
      "  del config.optimizers['rmsprop']\n"
      "  return config\n"
  )
  completed = run_module_in_process("experiments.classification.compare", f"--config={config_file}",
                         f"--workdir={tmp_path / 'run'}")
  assert_one_line_error(completed, "unknown optimizer(s) ['rmsprp']")


def test_a_workdir_with_other_files_is_not_replaced(tmp_path: Path) -> None:
  (tmp_path / "notes.txt").write_text("mine")
  completed = run_module_in_process("experiments.classification.compare",
                         "--config=configs/classification/digits.py",
                         f"--workdir={tmp_path}")
  assert_one_line_error(completed, "not a comparison's")
  assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failed_comparison_leaves_the_previous_run_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
  from configs.classification import digits
  from experiments.classification import compare, train

  workdir = tmp_path / "digits"
  workdir.mkdir()
  (workdir / "summary.json").write_text('{"previous": true}')
  (workdir / "rmsprop").mkdir()
  real = train.train_and_evaluate
  calls = []

  def fail_on_the_second(config, *args, **kwargs):
    calls.append(config.optimizer)
    if len(calls) == 2:
      raise RuntimeError("interrupted")
    return real(config, *args, **kwargs)

  monkeypatch.setattr(train, "train_and_evaluate", fail_on_the_second)
  config = digits.get_config()
  config.num_epochs, config.num_seeds = 1, 1
  with pytest.raises(RuntimeError, match="interrupted"):
    compare.run_comparison(config, workdir, progress=False)
  assert (workdir / "summary.json").read_text() == '{"previous": true}'
  assert sorted(path.name for path in workdir.iterdir()) == ["rmsprop", "summary.json"]
  assert [path.name for path in tmp_path.iterdir()] == ["digits"]  # No partial folder left.


def test_train_alone_trains_config_optimizer(tmp_path: Path) -> None:
  completed = run_module(
      "experiments.classification.train", "--config=configs/classification/digits.py",
      "--config.optimizer=rmsprop",
      "--config.num_epochs=1", "--config.num_seeds=1", f"--workdir={tmp_path / 'run'}",
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert "rmsprop on digits: test accuracy" in completed.stdout
  assert (tmp_path / "run" / "summary.json").is_file()
  assert "Unable to initialize backend" not in completed.stderr


def classification_configs() -> list[str]:
  """Configs of classification.compare / .train (every job's: test_config_schema.py)."""
  import importlib

  names = []
  for folder in ("classification",):
    for path in sorted((REPO / "configs" / folder).glob("*.py")):
      module = importlib.import_module(f"configs.{folder}.{path.stem}")
      if hasattr(module, "get_config"):
        assert "optimizer" in module.get_config()
        names.append(f"{folder}.{path.stem}")
  return names


CLASSIFICATION_CONFIGS = classification_configs()


def test_the_classification_configs_are_found() -> None:
  assert {"classification.digits", "classification.fashion_mnist_cnn_cpu_tuned"} <= set(
      CLASSIFICATION_CONFIGS)


@pytest.mark.parametrize("name", CLASSIFICATION_CONFIGS)
def test_every_classification_config_holds_every_field_the_code_reads(name: str) -> None:
  import importlib

  from experiments.classification import schema

  config = importlib.import_module(f"configs.{name}").get_config()
  schema.SCHEMA.check(config)
  config.tuned_from = ""  # The sweep result may not exist yet; its own check is tested above.
  schema.check_config(config)


def test_a_config_without_a_field_is_one_line(tmp_path: Path) -> None:
  config_file = tmp_path / "short.py"
  config_file.write_text(
      "from configs.classification import digits\n\n\n"
      "def get_config():\n"
      "  config = digits.get_config()\n"
      "  del config['scan_unroll']\n"
      "  return config\n"
  )
  completed = run_module_in_process("experiments.classification.compare", f"--config={config_file}",
                         f"--workdir={tmp_path / 'run'}")
  assert_one_line_error(completed, "no field(s) ['scan_unroll']")
