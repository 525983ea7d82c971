"""optax's own alias test suite, read from the installed wheel, with rmsprop_jax.rmsprop in it.

``optax/_src/alias_test.py`` runs every optax optimizer through the same battery (convergence,
extra arguments, ``inject_hyperparams``, dtypes, ``lax.cond`` stability, ``MultiSteps``). Here
its ``AliasTest`` methods run unchanged, over optax's own grid of targets and dtypes, with
``rmsprop_jax.rmsprop`` (under the configurations below) where the suite asks for ``rmsprop``.
Nothing is copied: the file is loaded from the installed optax at test time.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import unittest
from typing import Any

import optax
import pytest

import rmsprop_jax

# Left out of `make test-fast`: optax's whole AliasTest grid, 36 cases (~60 s of CPU).
pytestmark = pytest.mark.slow

ALIAS_TEST = os.path.join(os.path.dirname(optax.__file__), "_src", "alias_test.py")
METHODS = (
    "test_optimization",
    "test_optimizers_accept_extra_args",
    "test_optimizers_can_be_wrapped_in_inject_hyperparams",
    "test_preserve_dtype",
    "test_state_shape_dtype_shard_stability",
    "test_gradient_accumulation",
)
CONFIGS = {
    "plain": {"learning_rate": 5e-3},
    "momentum": {"learning_rate": 5e-3, "momentum": 0.9},
    "nesterov": {"learning_rate": 5e-3, "momentum": 0.9, "nesterov": True},
    "centered": {"learning_rate": 5e-3, "centered": True},
    "eps_in_sqrt_bias_correction": {
        "learning_rate": 5e-3, "eps_in_sqrt": True, "bias_correction": True,
    },
    "initial_scale": {"learning_rate": 5e-3, "initial_scale": 1.0},
}


def load_alias_test() -> Any:
  if not os.path.exists(ALIAS_TEST):
    pytest.skip(f"the installed optax {optax.__version__} wheel ships no {ALIAS_TEST}")
  try:
    spec = importlib.util.spec_from_file_location("optax_alias_test", ALIAS_TEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except ImportError as error:  # it imports scikit-learn and scipy
    pytest.skip(f"optax's alias_test.py needs {error.name}")
  return module


def rmsprop_cases(module: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
  """Per method: (generated name, parameters) of optax's first ``rmsprop`` entry, every grid point.

  absl's ``parameterized`` expands each method into ``name0``, ``name1``, ... whose closure holds
  the parameters; the ``rmsprop`` ones (without momentum: the configs below add it) are kept.
  """
  cases: dict[str, list[tuple[str, dict[str, Any]]]] = {method: [] for method in METHODS}
  for name, generated in vars(module.AliasTest).items():
    original = getattr(generated, "__wrapped__", None)
    if original is None or getattr(original, "__name__", None) not in cases:
      continue
    params = inspect.getclosurevars(generated).nonlocals.get("testcase_params")
    if isinstance(params, dict) and params.get("opt_name") == "rmsprop" and (
        "momentum" not in params.get("opt_kwargs", {})
    ):
      cases[original.__name__].append((name, params))
  return cases


def shape_change(module: Any) -> str | None:
  """What in optax's file no longer has the shape this test relies on, or None.

  The test reaches into the file's internals (``AliasTest``, ``_get_opt``, the closures absl
  leaves); a new optax release may reshape them without any change users see, so such a change
  skips the test, naming what moved, rather than failing it.
  """
  if not isinstance(getattr(module, "AliasTest", None), type):
    return "it defines no AliasTest class"
  if not callable(getattr(module, "_get_opt", None)):
    return "it has no _get_opt(test_case, opt_name) to route 'rmsprop' through"
  missing = [method for method, found in rmsprop_cases(module).items() if not found]
  if missing:
    return f"no parameterized rmsprop cases were found for {missing}"
  return None


@pytest.fixture(scope="module")
def suite():
  module = load_alias_test()
  problem = shape_change(module)
  if problem is not None:
    pytest.skip(f"optax {optax.__version__}'s _src/alias_test.py changed shape: {problem}")
  return module, rmsprop_cases(module)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("config", CONFIGS)
def test_optax_alias_suite_passes_with_rmsprop_jax(suite, monkeypatch, method, config):
  module, cases = suite
  original_get_opt = module._get_opt

  def get_opt(test_case, opt_name):
    return rmsprop_jax.rmsprop if opt_name == "rmsprop" else original_get_opt(test_case, opt_name)

  monkeypatch.setattr(module, "_get_opt", get_opt)
  for generated_name, params in cases[method]:
    test_case = module.AliasTest(generated_name)
    test_method = getattr(module.AliasTest, generated_name).__wrapped__
    params = dict(params, opt_kwargs=CONFIGS[config])
    try:
      test_method(test_case, **params)
    except unittest.SkipTest:
      continue
    except Exception as error:
      grid = {k: getattr(v, "__name__", v) for k, v in params.items()}
      raise AssertionError(f"optax's AliasTest.{method} failed at {grid}") from error


def test_a_reshaped_optax_file_is_named_not_failed():
  class Reshaped:  # as if a release renamed _get_opt
    AliasTest = unittest.TestCase

  assert "_get_opt" in str(shape_change(Reshaped))
  assert "AliasTest" in str(shape_change(type("Empty", (), {})))
