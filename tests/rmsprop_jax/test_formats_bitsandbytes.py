"""formats.bitsandbytes_int8 against live bitsandbytes.optim.RMSprop8bit (CPU tensors).

Tolerances are bitsandbytes' own for its 8-bit optimizers (tests/test_optim.py): the state
within atol 3e-3 / rtol 1e-3, the parameters' mean absolute error below 6e-5 over 50 steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rmsprop_jax import compat, formats

# Left out of `make test-fast`: 50 steps of bitsandbytes' CPU optimizer on up to 4.2M entries.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bnb():
  # Imported when a test runs, not at collection: bitsandbytes takes seconds to import, and
  # every pytest-xdist worker collects this module (test-fast deselects it).
  pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[test]')")
  return pytest.importorskip("bitsandbytes")


def test_dynamic_map_is_bitsandbytes_signed_map(bnb):
  # bitsandbytes builds it with torch.linspace, whose vectorised float32 steps depend on the
  # CPU's vector width: equal to an ulp (42 of 256 values differ by one ulp on AVX2).
  expected = bnb.functional.create_dynamic_map(signed=True).numpy()
  np.testing.assert_allclose(formats.bitsandbytes_dynamic_map(), np.sort(expected), rtol=3e-7)


@pytest.mark.parametrize("columns", [32, 1024, 4097])
def test_rmsprop8bit_matches_bitsandbytes(bnb, columns):
  import torch

  generator = torch.Generator().manual_seed(columns)
  shape = (1024, columns)
  p0 = torch.randn(shape, generator=generator) * 0.1
  torch_param = torch.nn.Parameter(p0.clone())
  reference = bnb.optim.RMSprop8bit([torch_param], lr=1e-3, alpha=0.9, eps=1e-8)
  optimizer = compat.bitsandbytes_rmsprop8bit(lr=1e-3, alpha=0.9, eps=1e-8)
  params = jnp.asarray(p0.numpy())
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  errors = []
  for _ in range(50):
    grad = torch.randn(shape, generator=generator) * 0.01
    torch_param.grad = grad.clone()
    reference.step()
    params, state = step(params, state, jnp.asarray(grad.numpy()))
    errors.append(float(np.mean(np.abs(np.asarray(params) - torch_param.detach().numpy()))))
  assert max(errors) < 6e-5, errors[-5:]

  torch_state = reference.state[torch_param]
  nu = optax.tree_utils.tree_get(state, "nu")
  if columns * 1024 >= 4096:
    assert isinstance(nu, formats.BitsandbytesInt8Leaf)
    torch_nu = bnb.functional.dequantize_blockwise(
        torch_state["state1"], absmax=torch_state["absmax1"], code=torch_state["qmap1"],
        blocksize=256).numpy()
    np.testing.assert_allclose(
        np.asarray(formats.bitsandbytes_int8().decode(nu, jnp.float32)), torch_nu,
        atol=3e-3, rtol=1e-3)
    # nu is ~1e-4 here, so bitsandbytes' atol says little: its relative error too.
    ours = np.asarray(formats.bitsandbytes_int8().decode(nu, jnp.float32))
    relative = np.abs(ours / np.where(torch_nu > 0, torch_nu, 1.0) - 1)[torch_nu > 0]
    print("median relative nu difference", np.median(relative))
    assert np.median(relative) < 0.01
    # Codes are not compared one by one: bitsandbytes' CPU quantizer finds the code with an
    # approximate table search (BinSearch's Direct2), which picks a farther code for about 2 %
    # of the entries (e.g. 2.1e-5 for 2.1e-6); formats.bitsandbytes_int8 rounds to nearest.
    agreement = np.mean(np.asarray(nu.bnb_codes) == torch_state["state1"].numpy())
    assert agreement > 0.9
