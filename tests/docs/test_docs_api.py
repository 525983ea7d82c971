"""The API reference page lists every public name, so a new one cannot go undocumented."""

from __future__ import annotations

import inspect
import pathlib
import re

import rmsprop_jax
from rmsprop_jax import compat

API_PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _autosummary_entries() -> set[str]:
  entries = set()
  for block in re.findall(r"\.\. autosummary::\n(.*?)```", API_PAGE.read_text(), flags=re.S):
    entries |= {line.strip() for line in block.splitlines() if line.strip()[:1].isalpha()}
  return entries


def test_every_public_name_has_a_page():
  public = {name for name in rmsprop_jax.__all__ if name != "compat"}
  presets = {
      f"compat.{name}" for name, obj in vars(compat).items()
      if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == compat.__name__
  }
  assert "compat.pytorch_rmsprop" in presets
  assert _autosummary_entries() == public | presets
