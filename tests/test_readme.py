"""The README's quick start runs as printed and trains."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


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
