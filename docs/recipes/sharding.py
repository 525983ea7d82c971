"""FSDP-style: parameters and optimizer state sharded on a device mesh; Orbax save and restore."""

import os

# Eight simulated CPU devices, so that the recipe runs anywhere; drop this on real hardware.
# (Set before JAX is imported.)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from jax.sharding import PartitionSpec as P
from jax.sharding import reshard

import rmsprop_jax

# A (data, model) mesh; its axes are Explicit (jax.make_mesh's default): shardings are part of
# the arrays' types and follow them through every operation.
mesh = jax.make_mesh((4, 2), ("data", "model"))
jax.set_mesh(mesh)

# Each weight matrix is split over both axes (FSDP over "data", tensor parallel over "model").
key_w1, key_w2, key_x = jax.random.split(jax.random.key(0), 3)
params = {
    "w1": jax.device_put(jax.random.normal(key_w1, (16, 64)) / 4.0, P("data", "model")),
    "b1": jax.device_put(jnp.zeros(64), P("model")),
    "w2": jax.device_put(jax.random.normal(key_w2, (64, 8)) / 8.0, P("model", "data")),
    "b2": jax.device_put(jnp.zeros(8), P()),
}
x = jax.device_put(jax.random.normal(key_x, (32, 16)), P("data", None))  # batch over "data"
y = jax.device_put(jnp.sin(x[:, :8]), P("data", None))


def loss_fn(params, x, y):
  w1 = reshard(params["w1"], P(None, "model"))  # all-gather over "data" just for this layer
  hidden = jnp.tanh(x @ w1 + params["b1"])
  w2 = reshard(params["w2"], P("model", None))
  out = jnp.einsum("bh,ho->bo", hidden, w2, out_sharding=P("data", None))
  return jnp.mean((out + params["b2"] - y) ** 2)


optimizer = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True)
opt_state = optimizer.init(params)  # plain init: every state leaf is sharded like its parameter


@jax.jit
def train_step(params, opt_state, x, y):
  loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


nu_at_init = optax.tree_utils.tree_get(opt_state, "nu")
for _ in range(3):
  params, opt_state, loss = train_step(params, opt_state, x, y)
print(f"loss after 3 steps: {loss:.4f}")
trace = optax.tree_utils.tree_get(opt_state, "trace")
print(f"{'leaf':<4}  {'parameter':<18}  {'nu at init':<18}  {'momentum after 3 steps':<18}")
for name in params:
  print(f"{name:<4}  {params[name].sharding.spec!s:<18}  {nu_at_init[name].sharding.spec!s:<18}  "
        f"{trace[name].sharding.spec!s}")

# Save parameters and optimizer state; restore them with the same shardings.
state = {"params": params, "opt_state": opt_state}
directory = pathlib.Path(tempfile.mkdtemp()) / "checkpoints"
with ocp.CheckpointManager(directory) as manager:
  manager.save(3, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()

# In a new process you would build the mesh, params and optimizer.init(params) the same way;
# their shapes, dtypes and shardings tell Orbax where each restored shard goes.
abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
with ocp.CheckpointManager(directory) as manager:
  restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract_state))

same = jax.tree.map(lambda a, b: a.sharding == b.sharding and bool((a == b).all()), restored, state)
print("restored bitwise, same shardings:", all(jax.tree.leaves(same)))

# Training on from the restored state gives exactly what training on without stopping gives.
params_a, opt_state_a = params, opt_state
params_b, opt_state_b = restored["params"], restored["opt_state"]
for _ in range(2):
  params_a, opt_state_a, _ = train_step(params_a, opt_state_a, x, y)
  params_b, opt_state_b, _ = train_step(params_b, opt_state_b, x, y)
print("resumed run bitwise equal:", all(jax.tree.leaves(jax.tree.map(
    lambda a, b: bool((a == b).all()), (params_a, opt_state_a), (params_b, opt_state_b)))))
