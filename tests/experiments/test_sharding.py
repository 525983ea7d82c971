"""Sharded training on 8 simulated CPU devices: state layout, compiled collectives, equivalence.

The 8-device checks run in a subprocess, because ``XLA_FLAGS`` must be set before JAX starts and
the rest of the suite keeps its single device. The subprocess trains the digits MLP with
centred RMSprop with momentum (so ``nu``, ``mu`` and the momentum ``trace`` all exist) on a
``data=4 x model=2`` mesh, and once more on one device, and reports what the tests below check.
"""

from __future__ import annotations

from typing import Any

import pytest
from jax.sharding import PartitionSpec

from experiments.common import optimizers as optimizer_lib
from experiments.common.hlo import count_collectives
from experiments.distributed import sharding
from tests.conftest import MIN_SHARD_SIZE, result_line, run_in_subprocess, tiny_config


def eight_device_report(workdir: str) -> dict[str, Any]:
  """Runs inside the 8-device subprocess; returns the facts the tests check."""
  import jax
  import numpy as np
  import optax

  from experiments.classification import train
  from experiments.distributed import train as train_distributed

  assert jax.device_count() == 8, jax.devices()
  config = tiny_config()
  dataset = train.load_config_dataset(config)
  config.mesh.data, config.mesh.model = 4, 2
  sharded = train_distributed.train_and_evaluate(config, f"{workdir}/mesh", dataset=dataset)
  config.mesh.data, config.mesh.model = 1, 1
  single = train_distributed.train_and_evaluate(
      config, f"{workdir}/single", dataset=dataset, devices=jax.devices()[:1]
  )

  def specs(tree: Any) -> dict[str, str]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): str(leaf.sharding.spec)
        for path, leaf in flat
    }

  # The compiled optimizer update alone, with the state sharded like the parameters, and (as a
  # control that the check can fail) with the state replicated while the parameters are split.
  optimizer = optimizer_lib.make_optimizer("rmsprop", dict(config.optimizers.rmsprop))
  mesh = sharding.make_mesh({"data": 4, "model": 2})
  abstract_params = jax.eval_shape(lambda: sharded.state.params)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  param_shardings = sharding.parameter_shardings(abstract_params, mesh, MIN_SHARD_SIZE)
  opt_shardings = sharding.optimizer_state_shardings(
      optimizer, abstract_opt, param_shardings, mesh
  )

  def update(grads: Any, opt_state: Any, params: Any) -> Any:
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def compiled_collectives(state_shardings: Any) -> dict[str, int]:
    compiled = jax.jit(
        update,
        in_shardings=(param_shardings, state_shardings, param_shardings),
        out_shardings=(param_shardings, state_shardings),
    ).lower(abstract_params, abstract_opt, abstract_params).compile()
    text = compiled.as_text()
    assert text is not None
    return count_collectives(text)

  # Gradients: one SGD step with learning rate 1 moves every parameter by minus its gradient.
  sgd = optimizer_lib.make_optimizer("sgd", {"learning_rate": 1.0})
  spec = train.model_spec(config, dataset)
  graphdef = train.model_graphdef(spec)

  def init_sgd() -> train.TrainState:
    return train.init_train_state(spec, sgd, jax.random.key(0))

  gradients = {}
  for name, layout in (
      ("mesh", mesh), ("single", sharding.make_mesh(None, jax.devices()[:1]))
  ):
    shardings = sharding.train_state_shardings(sgd, jax.eval_shape(init_sgd), layout,
                                               MIN_SHARD_SIZE)
    state = jax.jit(init_sgd, out_shardings=shardings)()
    before = jax.device_get(state.params)
    everywhere = sharding.replicated(layout)
    new_state, _ = train_distributed.make_step_fn(graphdef, sgd, shardings, layout)(
        state,
        sharding.host_to_global(
            (dataset.train_images[:64], dataset.train_labels[:64]),
            sharding.batch_sharding(layout),
        ),
        jax.device_put(jax.random.split(jax.random.key(1), 2), everywhere),
        jax.device_put(np.int32(0), everywhere),
    )
    gradients[name] = jax.tree.map(np.subtract, before, jax.device_get(new_state.params))
  gradient_difference = max(
      float(np.max(np.abs(a - b)))
      for a, b in zip(jax.tree.leaves(gradients["mesh"]), jax.tree.leaves(gradients["single"]),
                      strict=True)
  )
  largest_gradient = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(gradients["single"]))

  replicated_state = jax.tree.map(lambda _: sharding.replicated(mesh), opt_shardings)
  sharded_params = jax.device_get(sharded.state.params)
  single_params = jax.device_get(single.state.params)
  differences = {
      path: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for (path, a), (_, b) in zip(
          jax.tree_util.tree_flatten_with_path(sharded_params)[0],
          jax.tree_util.tree_flatten_with_path(single_params)[0],
          strict=True,
      )
  }
  return {
      "mesh_shape": sharded.mesh_shape,
      "param_specs": specs(sharded.state.params),
      "opt_specs": specs(sharded.state.opt_state),
      "other_specs": specs((sharded.state.model_state, sharded.state.step)),
      "update_collectives": compiled_collectives(opt_shardings),
      "replicated_state_update_collectives": compiled_collectives(replicated_state),
      "step_collectives": sharded.step_collectives,
      "single_step_collectives": single.step_collectives,
      "max_abs_difference": {str(key): value for key, value in differences.items()},
      "gradient_difference": gradient_difference,
      "largest_gradient": largest_gradient,
      "sharded_history": sharded.history,
      "single_history": single.history,
      "steps": [sharded.final_step, single.final_step],
  }


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
  workdir = tmp_path_factory.mktemp("eight_devices")
  code = (
      "import json\n"
      "from tests.experiments import test_sharding\n"
      f"print('RESULT ' + json.dumps(test_sharding.eight_device_report({str(workdir)!r})))\n"
  )
  return result_line(run_in_subprocess(code, devices=8, timeout=400))


def test_parameters_split_over_model_axis(eight_devices: dict[str, Any]) -> None:
  assert eight_devices["mesh_shape"] == {"data": 4, "model": 2}
  specs = eight_devices["param_specs"]
  # Large kernels are split over `model`, small biases stay whole.
  assert specs["hidden/0/kernel/value"] == str(PartitionSpec(None, "model"))
  assert specs["hidden/1/kernel/value"] == str(PartitionSpec("model", None))
  assert specs["hidden/0/bias/value"] == str(PartitionSpec())


def test_optimizer_state_follows_parameter_sharding(eight_devices: dict[str, Any]) -> None:
  params = eight_devices["param_specs"]
  followed = {"nu": 0, "mu": 0, "trace": 0}
  for path, spec in eight_devices["opt_specs"].items():
    parts = path.split("/")
    mirrored = [name for name in followed if name in parts]
    if mirrored:
      param_path = "/".join(parts[parts.index(mirrored[0]) + 1:])
      assert spec == params[param_path], (path, spec, params[param_path])
      followed[mirrored[0]] += 1
    else:
      assert spec == str(PartitionSpec()), (path, spec)  # Counters are replicated.
  # Every buffer mirrors every parameter leaf.
  assert followed == {name: len(params) for name in followed}
  assert set(eight_devices["other_specs"].values()) == {str(PartitionSpec())}


def test_optimizer_update_has_no_collectives(eight_devices: dict[str, Any]) -> None:
  # RMSprop is elementwise: with state and parameters split alike, each shard updates locally.
  assert eight_devices["update_collectives"]["all-gather"] == 0
  assert sum(eight_devices["update_collectives"].values()) == 0
  # Control: a replicated state next to split parameters forces gathers, so the check can fail.
  assert eight_devices["replicated_state_update_collectives"]["all-gather"] > 0


def test_training_step_reduces_gradients_across_devices(eight_devices: dict[str, Any]) -> None:
  assert eight_devices["step_collectives"]["all-reduce"] > 0
  assert sum(eight_devices["single_step_collectives"].values()) == 0


def test_sharded_gradients_match_single_device(eight_devices: dict[str, Any]) -> None:
  # The sharded step computes the same gradient up to float32 rounding of the reductions.
  assert eight_devices["largest_gradient"] > 1e-2
  assert eight_devices["gradient_difference"] < 1e-6 * max(1.0, eight_devices["largest_gradient"])


def test_sharded_run_matches_single_device_run(eight_devices: dict[str, Any]) -> None:
  # Same batches, keys, dropout masks and initial weights; only the order of the floating-point
  # sums in the gradient reduction differs, and RMSprop's division by sqrt(nu) amplifies such
  # differences for small gradients (measured: at most 2.6e-5 on weights of size ~0.5).
  assert eight_devices["steps"][0] == eight_devices["steps"][1] > 0
  for path, difference in eight_devices["max_abs_difference"].items():
    assert difference < 1e-4, (path, difference)
  sharded, single = eight_devices["sharded_history"], eight_devices["single_history"]
  assert len(sharded) == len(single) == 1
  for key in ("train_loss", "test_loss"):
    assert sharded[0][key] == pytest.approx(single[0][key], rel=1e-4)
  assert sharded[0]["test_accuracy"] == pytest.approx(single[0]["test_accuracy"], abs=0.01)


# ------------------------------------------------------------------------------------------------
# Single-device unit tests of the layout rules.


def test_mesh_shape_fills_data_axis() -> None:
  assert sharding.mesh_shape(None, 8) == (8, 1)
  assert sharding.mesh_shape({"model": 2}, 8) == (4, 2)
  assert sharding.mesh_shape({"data": 2, "model": 4}, 8) == (2, 4)


@pytest.mark.parametrize(
    ("mesh_config", "message"),
    [
        ({"model": 3}, "config.mesh.model=3 does not divide"),
        ({"data": 3, "model": 2}, "must equal the number of devices"),
        ({"model": 0}, "config.mesh.model must be >= 1"),
        ({"rows": 2}, "unknown fields"),
    ],
)
def test_mesh_shape_rejects_bad_config(mesh_config: dict[str, int], message: str) -> None:
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(mesh_config, 8)


def test_partition_rule() -> None:
  spec = sharding.parameter_partition_spec
  assert spec((64, 128), 2, 256) == PartitionSpec(None, "model")  # Largest dimension.
  assert spec((128, 64), 2, 256) == PartitionSpec("model", None)
  assert spec((64, 64), 2, 256) == PartitionSpec(None, "model")  # Ties: the last.
  assert spec((3, 3, 16, 32), 4, 256) == PartitionSpec(None, None, None, "model")
  assert spec((10,), 2, 256) == PartitionSpec()  # Too small to split.
  assert spec((33, 35), 2, 256) == PartitionSpec()  # No divisible dimension.
  assert spec((64, 128), 1, 256) == PartitionSpec()  # No model axis.


def test_count_collectives_reads_hlo() -> None:
  text = """
    %all-reduce-start = f32[10] all-reduce-start(f32[10] %p), replica_groups={}
    %all-reduce-done = f32[10] all-reduce-done(f32[10] %all-reduce-start)
    %g = f32[20] all-gather(f32[10] %x), dimensions={0}
    %r = f32[10] add(f32[10] %a, f32[10] %b)
  """
  counts = count_collectives(text)
  assert counts["all-reduce"] == 1
  assert counts["all-gather"] == 1
  assert counts["reduce-scatter"] == 0
