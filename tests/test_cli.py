"""The entry points' handling of user mistakes: one ``error:`` line, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import cli
from tests.conftest import REPO


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
        ("experiments.sweep", "configs/sweep_digts.py"),
        ("experiments.train_distributed", "configs/digits_distributed.py.bak"),
        ("experiments.studies.nonstationary", "configs/nonstationery.py:quick"),
    ],
)
def test_a_missing_config_file_is_one_line(module: str, config: str) -> None:
  completed = run_module(module, f"--config={config}")
  assert_one_line_error(completed, "no such file", "configs/digits.py")


def test_a_variant_the_config_does_not_have_is_one_line() -> None:
  completed = run_module("experiments.train_distributed", "--config", "configs/digits.py:quick")
  assert_one_line_error(completed, "takes no ':quick' variant", "--config.<field>=<value>")


def test_a_workdir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
  not_a_folder = tmp_path / "results.txt"
  not_a_folder.write_text("")
  completed = run_module("experiments.studies.nonstationary",
                         "--config=configs/nonstationary.py:quick", f"--workdir={not_a_folder}")
  assert_one_line_error(completed, "is a file")


def test_config_argument_is_found_in_both_spellings() -> None:
  assert cli.config_argument(["--config=a.py:quick", "--workdir=x"]) == "a.py:quick"
  assert cli.config_argument(["--workdir", "x", "--config", "b.py"]) == "b.py"
  assert cli.config_argument(["--workdir=x"]) is None
