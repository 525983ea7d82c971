"""Configs hold what their job reads, and nothing else: each shipped config against its schema.

Each job declares the fields it reads in one :class:`~experiments.common.config_schema.ConfigSchema`
next to its driver; a config with a field more or less is refused before any work, in one
``error:`` line naming the field. Checked here per job: every shipped config (each ``:variant``
too) matches its schema, an extra and a missing field are refused by name, and the command line
refuses them before it creates the workdir (``--config.augment=True`` on the distributed job
included: it used to be silently ignored).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import pytest

from experiments.common.config_schema import ConfigSchema
from experiments.common.errors import ConfigError
from tests.conftest import REPO
from tests.experiments.test_cli import assert_one_line_error, run_module_in_process


def _classification() -> ConfigSchema:
  from experiments.classification import schema

  return schema.SCHEMA


def _distributed() -> ConfigSchema:
  from experiments.distributed import schema

  return schema.SCHEMA


def _study(name: str) -> Callable[[], ConfigSchema]:
  return lambda: importlib.import_module(f"experiments.studies.{name}").SCHEMA


def _benchmark() -> ConfigSchema:
  from benchmarks import schema

  return schema.SCHEMA


def _state_formats() -> ConfigSchema:
  from benchmarks import state_formats

  return state_formats.SCHEMA


def _sweeps(driver: str) -> Callable[[], ConfigSchema]:
  return lambda: importlib.import_module("experiments.sweeps.schema").SCHEMAS[
      f"experiments.sweeps.{driver}"]


# Config folder (or file) -> the schema of the job that reads it.
JOBS: dict[str, Callable[[], ConfigSchema]] = {
    "configs/classification": _classification,
    "configs/distributed": _distributed,
    "configs/studies/adding_problem.py": _study("adding_problem"),
    "configs/studies/nonstationary.py": _study("nonstationary"),
    "configs/studies/sparse_features.py": _study("sparse_features"),
    "configs/benchmarks/benchmark.py": _benchmark,
    "configs/benchmarks/state_formats.py": _state_formats,
    **{f"configs/sweeps/{name}.py": _sweeps("sweep") for name in (
        "sweep_digits", "sweep_digits_halving", "sweep_digits_random", "sweep_digits_tpe",
        "sweep_fashion_mlp")},
    "configs/sweeps/sweep_fashion_cnn.py": _sweeps("trial_loop"),
    "configs/sweeps/optuna_comparison.py": _sweeps("optuna_comparison"),
}


def variants(module: Any) -> list[str | None]:
  """The arguments ``get_config`` is shipped with: none, and ``quick`` where it takes one."""
  import inspect

  if not inspect.signature(module.get_config).parameters:
    return [None]
  found: list[str | None] = [None]
  source = inspect.getsource(module)
  found += sorted(set(re.findall(r'arg == "(\w+)"', source)))
  found += list(getattr(module, "VARIANTS", ()))
  return list(dict.fromkeys(found))


def shipped_configs() -> list[tuple[str, str | None]]:
  """``(config module, variant)`` of every config under the folders of :data:`JOBS`."""
  found = []
  for place in JOBS:
    paths = [REPO / place] if place.endswith(".py") else sorted((REPO / place).glob("*.py"))
    for path in paths:
      name = ".".join(path.relative_to(REPO).with_suffix("").parts)
      module = importlib.import_module(name)
      if hasattr(module, "get_config"):
        found += [(name, variant) for variant in variants(module)]
  return found


def schema_of(config_module: str) -> ConfigSchema:
  path = config_module.replace(".", "/")
  for place, schema in JOBS.items():
    if path + ".py" == place or path.startswith(place + "/"):
      return schema()
  raise KeyError(config_module)


def load(config_module: str, variant: str | None) -> ml_collections.ConfigDict:
  module = importlib.import_module(config_module)
  return module.get_config(variant) if variant else module.get_config()


SHIPPED = shipped_configs()


def test_every_shipped_config_is_checked() -> None:
  """Every config file under configs/ (a module with ``get_config``; helpers such as
  framework_defaults.py have none) is mapped to its job's schema: a new one must be too."""
  modules = [".".join(path.relative_to(REPO).with_suffix("").parts)
             for path in (REPO / "configs").rglob("*.py") if path.name != "__init__.py"]
  on_disk = {name for name in modules if hasattr(importlib.import_module(name), "get_config")}
  assert on_disk == {name for name, _ in SHIPPED}
  folders = {name.rsplit(".", 1)[0] for name, _ in SHIPPED}
  assert folders == {"configs.classification", "configs.distributed", "configs.studies",
                     "configs.benchmarks", "configs.sweeps"}
  assert ("configs.studies.adding_problem", "quick") in SHIPPED
  assert ("configs.benchmarks.benchmark", "quick") in SHIPPED
  assert {("configs.sweeps.optuna_comparison", variant)
          for variant in ("digits", "fashion_mlp", "quick")} <= set(SHIPPED)


@pytest.mark.parametrize(("config_module", "variant"), SHIPPED)
def test_every_shipped_config_holds_exactly_what_its_job_reads(
    config_module: str, variant: str | None) -> None:
  schema_of(config_module).check(load(config_module, variant))


def test_digits_holds_no_data_file_fields_and_fashion_mnist_does() -> None:
  from configs.classification import digits, fashion_mnist

  assert "data_dir" not in digits.get_config()
  assert {"data_dir", "verify_checksums"} <= set(fashion_mnist.get_config())


def _first_config(place: str) -> tuple[str, str | None]:
  path = place.replace("/", ".").removesuffix(".py")
  return next(entry for entry in SHIPPED if entry[0] == path or entry[0].startswith(path + "."))


@pytest.mark.parametrize("place", list(JOBS))
def test_an_extra_or_missing_field_is_refused_by_name(place: str) -> None:
  config_module, variant = _first_config(place)
  schema = JOBS[place]()
  config = load(config_module, variant)
  config.no_such_field = 1
  with pytest.raises(ConfigError, match=r"\['no_such_field'\] not read by"):
    schema.check(config)
  config = load(config_module, variant)
  field = schema.fields[-1]
  del config[field]
  with pytest.raises(ConfigError, match=rf"no field\(s\) \['{field}'\]"):
    schema.check(config)


def test_a_nested_field_and_a_conditional_field_are_checked() -> None:
  from configs.classification import digits, fashion_mnist
  from configs.distributed import digits_distributed

  config = digits_distributed.get_config()
  config.mesh.replicas = 2
  with pytest.raises(ConfigError, match=r"config\.mesh: field\(s\) \['replicas'\]"):
    _distributed().check(config)
  config = digits.get_config()
  config.data_dir = ""
  with pytest.raises(ConfigError, match=r"\['data_dir'\] not read by .*only when the data set"):
    _classification().check(config)
  config = fashion_mnist.get_config()
  del config["verify_checksums"]
  with pytest.raises(ConfigError, match=r"no field\(s\) \['verify_checksums'\].*for this config"):
    _classification().check(config)


# One command per job: the mistake is one error line naming the field, and no workdir is made.
COMMANDS = [
    ("experiments.distributed.train", ["--config.augment=True"], "augment"),
    ("experiments.distributed.train", ["--config.mesh.replicas=2"], "replicas"),
    ("experiments.classification.compare",
     ["--config=configs/classification/digits.py", "--config.data_dir=/data"], "data_dir"),
    ("experiments.studies.nonstationary",
     ["--config=configs/studies/nonstationary.py:quick", "--config.num_epochs=3"], "num_epochs"),
    ("benchmarks.update_step",
     ["--config=configs/benchmarks/benchmark.py:quick", "--config.num_seeds=2"], "num_seeds"),
    ("experiments.sweeps.sweep",
     ["--config=configs/sweeps/sweep_digits.py", "--config.data_dir=/data"], "data_dir"),
    ("experiments.sweeps.trial_loop",
     ["--config=configs/sweeps/sweep_fashion_cnn.py", "--config.optimizer=sgd"], "optimizer"),
]


@pytest.mark.parametrize(("module", "arguments", "field"), COMMANDS)
def test_the_command_line_refuses_a_field_the_job_does_not_read(
    tmp_path: Path, module: str, arguments: list[str], field: str) -> None:
  workdir = tmp_path / "run"
  completed = run_module_in_process(module, *arguments, f"--workdir={workdir}")
  assert_one_line_error(completed, field)
  assert not workdir.exists()


def test_a_config_file_with_an_extra_field_is_one_line_before_any_work(tmp_path: Path) -> None:
  config_file = tmp_path / "extra.py"
  config_file.write_text(
      "from configs.studies import adding_problem\n\n\n"
      "def get_config():\n"
      "  config = adding_problem.get_config('quick')\n"
      "  config.learning_rate = 0.1\n"
      "  return config\n"
  )
  workdir = tmp_path / "run"
  completed = run_module_in_process("experiments.studies.adding_problem", f"--config={config_file}",
                         f"--workdir={workdir}")
  assert_one_line_error(completed, "['learning_rate'] not read by experiments.studies")
  assert not workdir.exists()


def test_a_sweep_config_file_with_a_field_more_or_less_is_refused(tmp_path: Path) -> None:
  """A sweep config carrying a comparison's field (or missing one the sweep reads) is one error
  line, before the data is loaded or the workdir made."""
  for name, edit, message in (
      ("extra", "config.target_accuracy = 0.98",
       "['target_accuracy'] not read by experiments.sweeps.sweep"),
      ("missing", "del config['chunk_size']",
       "no field(s) ['chunk_size'], which experiments.sweeps.sweep reads"),
  ):
    config_file = tmp_path / f"{name}.py"
    config_file.write_text(
        "from configs.sweeps import sweep_digits\n\n\n"
        "def get_config():\n"
        "  config = sweep_digits.get_config()\n"
        f"  {edit}\n"
        "  return config\n"
    )
    workdir = tmp_path / f"run_{name}"
    completed = run_module_in_process("experiments.sweeps.sweep", f"--config={config_file}",
                                      f"--workdir={workdir}")
    assert_one_line_error(completed, message)
    assert not workdir.exists()
