"""The README's quick start runs as printed and trains."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_quick_start_runs_and_fits_a_line():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  namespace: dict = {}
  exec(compile(blocks[0], "README quick start", "exec"), namespace)
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
  y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3
  params, opt_state = namespace["params"], namespace["opt_state"]
  for _ in range(600):
    params, opt_state, loss = namespace["train_step"](params, opt_state, x, y)
  assert float(loss) < 1e-4
  assert abs(float(params["b"][0]) - 0.3) < 1e-2


def test_layout_names_every_package_and_only_existing_ones():
  """The README's Layout block: each folder it names exists, and each job package is named."""
  block = re.search(r"## Layout\n\n```text\n(.*?)```", README.read_text(), flags=re.S)
  assert block, "README has no Layout block"
  named = {line.split()[0].rstrip("/") for line in block.group(1).splitlines()
           if line.strip() and not line.startswith(" ")}
  repo = README.parent
  for folder in named:
    if "<" not in folder:
      assert (repo / folder).is_dir(), f"README Layout names {folder}/, which does not exist"
  packages = {str(path.parent.relative_to(repo)) for path in repo.glob("experiments/*/__init__.py")}
  assert packages <= named, f"README Layout misses {sorted(packages - named)}"
