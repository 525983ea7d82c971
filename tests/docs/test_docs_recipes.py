"""Every code example of the documentation site runs, and prints what its page says.

Each recipe is a program ``docs/recipes/<name>.py`` that its page includes with
``literalinclude``, followed by a block captioned ``Output of <name>.py``. The test runs the
program in a fresh interpreter (on the CPU, one device unless the recipe asks for more) and
compares its stdout with that block, read from the page so that the page cannot drift. The
``python`` blocks of the other pages are executed too.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
RECIPES = DOCS / "recipes"
OUTPUT_BLOCK = re.compile(
    r"```\{code-block\} text\n:caption: Output of (\S+\.py)\n\n(.*?)```", re.S
)
INCLUDE = re.compile(r"```\{literalinclude\} (\S+\.py)\n")


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


@pytest.mark.parametrize("program", PROGRAMS)
def test_recipe_prints_what_its_page_shows(program, tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
  env["JAX_PLATFORMS"] = "cpu"
  completed = subprocess.run(
      [sys.executable, str(RECIPES / program)], cwd=tmp_path, env=env, capture_output=True,
      text=True, timeout=300,
  )
  assert completed.returncode == 0, f"{program} failed:\n{completed.stderr[-5000:]}"
  assert _normalized(completed.stdout) == _normalized(EXPECTED[program]), (
      f"{program} printed:\n{completed.stdout}"
  )


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
