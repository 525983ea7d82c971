"""Imports run one way: library <- experiments.common <- jobs; benchmarks beside, never beneath.

Every module of ``experiments/`` and ``benchmarks/`` is parsed (not imported), and every import
in it counts, at module level or inside a function (a lazy import hides a dependency, it does not
remove it). The rules:

* the library (``rmsprop_jax``) imports nothing of the experiments, benchmarks or configs;
* ``experiments.common`` imports no job package and nothing of ``benchmarks``;
* no experiment imports ``benchmarks``;
* the modules' import graph has no cycle, and neither has the graph of the job packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO

LIBRARY = "rmsprop_jax"
COMMON = "experiments.common"
ROOTS = ("experiments", "benchmarks", "configs", LIBRARY)


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
  """Dotted name -> file of every module under ``root``'s ``packages``."""
  modules = {}
  for package in packages:
    for path in sorted((root / package).rglob("*.py")):
      parts = list(path.relative_to(root).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      modules[".".join(parts)] = path
  return modules


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
  """The known modules ``name`` imports anywhere in its file (``from a import b`` counts as
  ``a.b`` when that is a module, else as ``a``)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found: set[str] = set()

  def add(target: str) -> None:
    while target and target not in known:
      target = target.rpartition(".")[0]
    if target and target != name:
      found.add(target)

  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
      for alias in node.names:
        full = f"{base}.{alias.name}"
        add(full if full in known else base)
  return found


def import_graph(root: Path) -> dict[str, set[str]]:
  """Module -> the modules of :data:`ROOTS` it imports."""
  known = module_names(root, ROOTS)
  return {name: imports_of(name, path, known) for name, path in known.items()}


def job_of(module: str) -> str | None:
  """``experiments.<job>`` of a job module; ``None`` for common and everything else."""
  parts = module.split(".")
  if parts[0] != "experiments" or len(parts) < 2 or module.startswith(COMMON):
    return None
  return ".".join(parts[:2])


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
  """Every import that goes the wrong way, as ``"importer -> imported"``."""
  bad = []
  for module, targets in graph.items():
    for target in sorted(targets):
      if module.split(".")[0] == LIBRARY and target.split(".")[0] != LIBRARY:
        bad.append(f"{module} -> {target} (the library imports no experiment)")
      elif module.startswith(COMMON) and (job_of(target) or target.startswith("benchmarks")):
        bad.append(f"{module} -> {target} (experiments.common imports no job)")
      elif module.startswith("experiments") and target.startswith("benchmarks"):
        bad.append(f"{module} -> {target} (no experiment imports benchmarks)")
  return bad


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
  """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done.
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 1:
        return [*path[path.index(target):], target]
      if target not in state and (cycle := visit(target)) is not None:
        return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)) is not None:
      return cycle
  return None


def job_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
  """Job package -> the other job packages its modules import."""
  jobs: dict[str, set[str]] = {}
  for module, targets in graph.items():
    if (job := job_of(module)) is not None:
      jobs.setdefault(job, set()).update(
          other for target in targets if (other := job_of(target)) not in (None, job))
  return jobs


GRAPH = import_graph(REPO)


def test_every_module_is_walked() -> None:
  assert {"experiments.common.cli", "experiments.classification.train",
          "experiments.distributed.train", "benchmarks.update_step",
          "experiments.common.hlo"} <= set(GRAPH)
  # Function-level imports count: the benchmark's lazy import of the classification steps.
  assert any(target.startswith("experiments.classification")
             for target in GRAPH["benchmarks.update_step"])


def test_no_import_goes_the_wrong_way() -> None:
  assert layer_violations(GRAPH) == []


def test_no_import_cycle_between_modules() -> None:
  assert find_cycle(GRAPH) is None


def test_no_import_cycle_between_jobs() -> None:
  assert find_cycle(job_graph(GRAPH)) is None


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
  """A tree with an upward import (common -> job), a benchmark import and a lazy cycle."""
  files = {
      "experiments/__init__.py": "",
      "experiments/common/__init__.py": "",
      "experiments/common/cli.py": "def f():\n  from experiments.jobA import train\n",
      "experiments/jobA/__init__.py": "",
      "experiments/jobA/train.py": "from . import metrics\nimport benchmarks.bench\n",
      "experiments/jobA/metrics.py": "def g():\n  from experiments.jobA.train import x\n",
      "benchmarks/__init__.py": "",
      "benchmarks/bench.py": "import numpy\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  return tmp_path


def test_the_checks_catch_upward_imports_and_lazy_cycles(bad_tree: Path) -> None:
  graph = import_graph(bad_tree)
  assert graph["experiments.jobA.train"] == {"experiments.jobA.metrics", "benchmarks.bench"}
  assert layer_violations(graph) == [
      "experiments.common.cli -> experiments.jobA.train (experiments.common imports no job)",
      "experiments.jobA.train -> benchmarks.bench (no experiment imports benchmarks)",
  ]
  cycle = find_cycle(graph)
  assert cycle is not None and cycle[0] == cycle[-1]
  assert set(cycle) == {"experiments.jobA.train", "experiments.jobA.metrics"}
  del graph["experiments.jobA.metrics"]
  assert find_cycle(graph) is None
