"""Helpers the test modules share: the repository root, subprocess runs, the tiny train config.

Tests that need several (simulated) devices or a fresh process run code in a subprocess, because
``XLA_FLAGS`` must be set before JAX starts and the rest of the suite keeps one CPU device.

One persistent JAX compilation cache serves the whole run: the pytest-xdist workers and every
subprocess they start inherit ``JAX_COMPILATION_CACHE_DIR``, so a training step that several
tests (or several command-line runs) compile is compiled once. XLA's flags and the device count
are part of the cache's key, so a run under ``--xla_cpu_max_isa=AVX`` never loads another ISA's
kernels, and a loaded executable computes the same bits as a fresh compile. The folder is a new
temporary one per run, removed at the end; set ``JAX_COMPILATION_CACHE_DIR`` yourself to keep
one between runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

# Set before JAX is imported anywhere in this process (the doctests import the library later);
# xdist's workers are started after this module is imported in the controller and inherit it.
_OWN_CACHE_DIR: str | None = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="rmsprop_jax_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE_DIR
# Programs that compile in under half a second are cheaper to compile again than to store
# (storing every one measured no faster here: `make test` 757 s against 708 s on 2 cores).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


# The property tests (tests/rmsprop_jax/test_core_reference.py) compile one program per example:
# 25 examples in `make test`, 8 in the fast lane (`make test-fast` passes
# --hypothesis-profile=fast).
_PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("suite", _PROPERTY_SETTINGS, max_examples=25)
settings.register_profile("fast", _PROPERTY_SETTINGS, max_examples=8)
settings.load_profile("suite")


# The longest modules under `make test` (seconds of test time each, from its --durations on a
# 2-core AMD EPYC), run first: pytest-xdist's --dist loadscope (--no-loadscope-reorder) hands
# modules out in collection order to whichever worker is free, so a long module left to the
# end would run alone while the other workers wait. Longest first keeps the workers' loads even.
# Modules not listed follow in their usual order; a stale entry only changes the order.
LONGEST_MODULES = (
    "tests/rmsprop_jax/test_formats.py",               # 79
    "tests/experiments/test_studies.py",               # 61
    "tests/experiments/test_checkpointing.py",         # 50
    "tests/docs/test_docs_recipes.py",                 # 46
    "tests/experiments/test_experiments.py",           # 45
    "tests/experiments/test_sweep_sharded.py",         # 44
    "tests/experiments/test_sweep.py",                 # 43
    "tests/experiments/test_cli.py",                   # 37
    "tests/experiments/test_fashion_mnist.py",         # 35
    "tests/rmsprop_jax/test_core_optax_alias_suite.py",  # 30
    "tests/experiments/test_sharding.py",              # 28
    "tests/rmsprop_jax/test_formats_sharding.py",      # 26
    "tests/experiments/test_benchmark.py",             # 25
    "tests/experiments/test_distributed.py",           # 21
    "tests/rmsprop_jax/test_core_parity.py",           # 18
    "tests/experiments/test_sweep_halving.py",         # 17
    "tests/rmsprop_jax/test_formats_bitsandbytes.py",  # 15
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
  rank = {module: index for index, module in enumerate(LONGEST_MODULES)}
  # A stable sort on the module alone: each module's tests stay together and in their order.
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_unconfigure(config: pytest.Config) -> None:
  if _OWN_CACHE_DIR is not None:
    shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)
# Parameters with fewer elements stay whole on every device in the tiny config's mesh.
MIN_SHARD_SIZE = 256


def xla_flags(devices: int | None = None) -> str:
  """``XLA_FLAGS`` for a subprocess: the test process's own, with ``devices`` simulated devices.

  The parent's flags (``--xla_cpu_max_isa`` above all) are kept, so that a subprocess compiles
  the kernels the test process compiles (a bitwise comparison with it then holds by
  construction, and a run under ``XLA_FLAGS=--xla_cpu_max_isa=AVX`` tests AVX kernels
  throughout); only the device count is replaced (dropped when ``devices`` is None).
  """
  kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
          if not flag.startswith("--xla_force_host_platform_device_count=")]
  if devices is not None:
    kept.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(kept)


def run_in_subprocess(code: str, *, devices: int, timeout: float, cwd: Path = REPO) -> str:
  """Runs ``code`` in a fresh interpreter with ``devices`` simulated CPU devices; its stdout."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(devices)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  completed = subprocess.run(
      [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
      timeout=timeout,
  )
  assert completed.returncode == 0, (
      f"subprocess failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
      f"{completed.stderr[-6000:]}"
  )
  return completed.stdout


def run_module_in_process(module: str, *args: str) -> subprocess.CompletedProcess[str]:
  """``python -m module args`` run in this process: its exit code and what it printed.

  The flags the entry point defines are removed afterwards, so the next call defines them anew.
  """
  from absl import app, flags  # app first: the flags it defines on import must stay defined

  del app
  defined_before = set(flags.FLAGS)
  argv_before, stdout, stderr = sys.argv, io.StringIO(), io.StringIO()
  sys.argv = [module, *args]
  returncode = 0
  try:
    with (contextlib.chdir(REPO), contextlib.redirect_stdout(stdout),
          contextlib.redirect_stderr(stderr), warnings.catch_warnings()):
      warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules"
      warnings.simplefilter("ignore", DeprecationWarning)  # the editable install's loader
      runpy.run_module(module, run_name="__main__", alter_sys=False)
  except SystemExit as exit_:
    returncode = exit_.code if isinstance(exit_.code, int) else 1
  finally:
    sys.argv = argv_before
    for name in set(flags.FLAGS) - defined_before:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
  return subprocess.CompletedProcess([module, *args], returncode, stdout.getvalue(),
                                     stderr.getvalue())


def result_line(stdout: str) -> Any:
  """The JSON after the ``RESULT`` marker a subprocess printed."""
  lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
  assert lines, f"no RESULT line in:\n{stdout[-3000:]}"
  return json.loads(lines[-1][len("RESULT "):])


def tiny_config() -> Any:
  """The digits MLP with centred RMSprop and momentum, one epoch, no checkpoints."""
  from configs.distributed import digits_distributed

  config = digits_distributed.get_config()
  # Pinned here so that changes to configs/classification/digits.py do not move the tests' step
  # counts.
  config.dataset = "digits"
  config.batch_size = 64
  config.seed = 0
  config.lr_schedule = "constant"
  config.optimizer = "rmsprop"
  config.tuned_from = ""
  config.model = "mlp"
  config.model_kwargs = {"hidden_sizes": (64, 32), "dropout_rate": 0.1}
  config.num_epochs = 1
  config.checkpoint_every = 0
  config.resume = False
  config.optimizers.rmsprop = {
      "learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8, "centered": True, "momentum": 0.9
  }
  config.mesh.min_shard_size = MIN_SHARD_SIZE
  return config
