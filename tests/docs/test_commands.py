"""Every documented command names a module and a config file that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

COMMAND = re.compile(
    r"python -m (?P<module>(?:experiments|benchmarks)(?:\.[\w<>]+)+)"
    r"(?:[^\n`]*?--config[= ](?P<config>[\w/.<>]+\.py)(?::\w+)?)?"
)


def documented_files() -> list[Path]:
  files = [REPO / "README.md", REPO / "Makefile"]
  files += [path for path in (REPO / "docs").rglob("*.md")
            if not any(part.startswith("_") for part in path.relative_to(REPO).parts)]
  for folder in ("experiments", "benchmarks", "configs"):
    files += sorted((REPO / folder).rglob("*.py"))
  return files


def documented_commands() -> list[tuple[str, str, str]]:
  commands = []
  for path in documented_files():
    for match in COMMAND.finditer(path.read_text()):
      commands.append((str(path.relative_to(REPO)), match["module"], match["config"] or ""))
  return commands


COMMANDS = documented_commands()


def test_the_commands_are_found() -> None:
  modules = {module for _, module, _ in COMMANDS}
  assert {"experiments.classification.compare", "experiments.sweeps.sweep",
          "experiments.distributed.layouts", "benchmarks.update_step"} <= modules


@pytest.mark.parametrize(("source", "module", "config"), sorted(set(COMMANDS)))
def test_a_documented_command_names_an_existing_module_and_config(
    source: str, module: str, config: str
) -> None:
  if "<" in module:  # A pattern such as experiments.<job>.<module>.
    module = module.split(".<")[0]
  spec = importlib.util.find_spec(module)
  assert spec is not None and spec.origin, f"{source}: python -m {module}: no such module"
  source_text = Path(spec.origin).read_text()
  if spec.submodule_search_locations is None:
    assert "__main__" in source_text, f"{source}: {module} has no entry point"
  if config and "<" not in config:
    assert (REPO / config).is_file(), f"{source}: --config {config}: no such file"


def test_every_config_path_in_the_code_exists() -> None:
  """Default configs and hints in the code (``"configs/<job>/<name>.py"`` literals)."""
  missing = []
  for path in documented_files():
    for config in re.findall(r"\bconfigs/[\w/]+\.py\b", path.read_text()):
      if not (REPO / config).is_file():
        missing.append(f"{path.relative_to(REPO)}: {config}")
  assert missing == []
