"""Every code example of the documentation site runs, and prints what its page says.

Each recipe is a program ``docs/recipes/<name>.py`` that its page includes with
``literalinclude``, followed by a block captioned ``Output of <name>.py``. The test runs the
program in a fresh interpreter (on the CPU, one device unless the recipe asks for more) and
compares its stdout with that block, read from the page so that the page cannot drift. The
``python`` blocks of the other pages are executed too.

A recipe whose printed numbers come from a training run (chaotic in its last digits: another
CPU's kernels add in another order) is listed in ``RELATIVE_TOLERANCE``; its page says so, and
its numbers are compared to that tolerance while every other character must match. The recipes
run with the test's own ``XLA_FLAGS`` but for a simulated device count (so CI's run under
``XLA_FLAGS=--xla_cpu_max_isa=AVX`` checks the pages as an older CPU prints them).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import xla_flags

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
RECIPES = DOCS / "recipes"
OUTPUT_BLOCK = re.compile(
    r"```\{code-block\} text\n:caption: Output of (\S+\.py)\n\n(.*?)```", re.S
)
INCLUDE = re.compile(r"```\{literalinclude\} (\S+\.py)\n")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# Recipes that print the result of a training run: the tolerance their page states.
RELATIVE_TOLERANCE = {"one_byte.py": 0.02, "optuna_sweep.py": 0.1, "sweep.py": 0.1}


def _expected_outputs() -> dict[str, str]:
  outputs: dict[str, str] = {}
  for page in sorted(RECIPES.glob("*.md")):
    text = page.read_text()
    for program, output in OUTPUT_BLOCK.findall(text):
      assert program not in outputs, f"two output blocks for {program}"
      assert re.search(rf"```\{{literalinclude\}} {re.escape(program)}\n", text), (
          f"{page.name} shows the output of {program} but does not include it"
      )
      outputs[program] = output
  return outputs


EXPECTED = _expected_outputs()
PROGRAMS = sorted(path.name for path in RECIPES.glob("*.py"))


def test_every_recipe_program_is_on_a_page_with_its_output():
  included = {name for page in RECIPES.glob("*.md") for name in INCLUDE.findall(page.read_text())}
  assert PROGRAMS, "no recipes found"
  assert set(PROGRAMS) == included == set(EXPECTED)


def _normalized(text: str) -> str:
  return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _matches(actual: str, expected: str, rtol: float) -> bool:
  """Equal text, numbers within ``rtol`` of the page's (every number, when ``rtol`` is 0)."""
  if rtol == 0:
    return actual == expected
  actual_numbers, expected_numbers = NUMBER.findall(actual), NUMBER.findall(expected)
  return (
      NUMBER.sub("#", actual).split() == NUMBER.sub("#", expected).split()
      and len(actual_numbers) == len(expected_numbers)
      and all(
          abs(float(a) - float(e)) <= rtol * abs(float(e))
          for a, e in zip(actual_numbers, expected_numbers, strict=True)
      )
  )


def _recipe_environment() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
  env["XLA_FLAGS"] = xla_flags()
  env["JAX_PLATFORMS"] = "cpu"
  return env


def test_tolerant_recipes_say_so_on_their_page():
  for program in RELATIVE_TOLERANCE:
    page = next(page for page in RECIPES.glob("*.md") if f"Output of {program}" in page.read_text())
    assert f"to {RELATIVE_TOLERANCE[program] * 100:g} %" in page.read_text(), page.name


def test_number_tolerant_comparison():
  assert _matches("lr 0.1  0.0110\nbest 3", "lr 0.1  0.0109\nbest 3", rtol=0.1)
  assert not _matches("lr 0.1  0.0150", "lr 0.1  0.0109", rtol=0.1)
  assert not _matches("lr 0.1  0.0110 x", "lr 0.1  0.0110", rtol=0.1)
  assert not _matches("best: lr 0.01", "best: lr 0.03", rtol=0.0)


@pytest.mark.parametrize("program", PROGRAMS)
def test_recipe_prints_what_its_page_shows(program, tmp_path):
  completed = subprocess.run(
      [sys.executable, str(RECIPES / program)], cwd=tmp_path, env=_recipe_environment(),
      capture_output=True, text=True, timeout=300,
  )
  assert completed.returncode == 0, f"{program} failed:\n{completed.stderr[-5000:]}"
  assert _matches(
      _normalized(completed.stdout), _normalized(EXPECTED[program]),
      RELATIVE_TOLERANCE.get(program, 0.0),
  ), f"{program} printed:\n{completed.stdout}"


@pytest.mark.parametrize("page", ["index.md", "api.md", "conventions.md", "guarantees.md"])
def test_python_blocks_on_the_pages_run(page):
  """Snippets may use jax, jnp, optax and rmsprop_jax without importing them."""
  import jax
  import jax.numpy as jnp
  import optax

  import rmsprop_jax

  blocks = re.findall(r"^( *)```python\n(.*?)^\1```", (DOCS / page).read_text(), flags=re.S | re.M)
  for number, (_, block) in enumerate(blocks):
    block = textwrap.dedent(block)
    namespace = {"jax": jax, "jnp": jnp, "optax": optax, "rmsprop_jax": rmsprop_jax}
    exec(compile(block, f"docs/{page} block {number}", "exec"), namespace)
