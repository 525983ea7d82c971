"""The package reports one version: the one pip installed, and the changelog's newest."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import rmsprop_jax

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_version_matches_installed_metadata():
  assert rmsprop_jax.__version__ == importlib.metadata.version("rmsprop-jax")


def test_changelog_has_a_section_for_the_version():
  changelog = (REPO / "CHANGELOG.md").read_text()
  release = re.sub(r"\.dev\d+$", "", rmsprop_jax.__version__)
  assert re.search(rf"^## \[{re.escape(release)}\]", changelog, flags=re.M), release
