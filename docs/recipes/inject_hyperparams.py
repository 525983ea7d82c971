"""optax.inject_hyperparams: read and change hyperparameters inside the optimizer state."""

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax

params = {"w": jnp.array([3.0, -1.0, 0.5])}


def loss_fn(params):
  return jnp.sum((params["w"] - 1.0) ** 2)


optimizer = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=0.1, decay=0.9)
state = optimizer.init(params)
print("hyperparameters in the state:", sorted(state.hyperparams))


traces = 0


@jax.jit
def train_step(params, state):
  global traces
  traces += 1  # runs only while jax.jit traces (compiles) the function
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, state = optimizer.update(grads, state, params)
  return optax.apply_updates(params, updates), state, loss


for step in range(200):
  if step == 100:  # e.g. reduce on plateau: a new value of the same dtype, no recompilation
    state.hyperparams["learning_rate"] = jnp.asarray(0.01, jnp.float32)
  params, state, loss = train_step(params, state)
print(f"learning rate now {float(state.hyperparams['learning_rate']):g}, loss {float(loss):.4f}")
print("train_step traced (compiled)", traces, "time(s)")

# The inner state is rmsprop's own, with the same tree structure, and in float32 the same bits.
plain = rmsprop_jax.rmsprop(learning_rate=0.1, decay=0.9)
plain_state = plain.init(params)
print("same state structure as rmsprop(...):",
      jax.tree.structure(state.inner_state) == jax.tree.structure(plain_state))

p_injected, s_injected = params, optimizer.init(params)
p_plain = params
for _ in range(50):
  grads = jax.grad(loss_fn)(p_injected)
  updates, s_injected = optimizer.update(grads, s_injected, p_injected)
  p_injected = optax.apply_updates(p_injected, updates)
  grads = jax.grad(loss_fn)(p_plain)
  updates, plain_state = plain.update(grads, plain_state, p_plain)
  p_plain = optax.apply_updates(p_plain, updates)
print("50 steps, bitwise equal to rmsprop(...):", bool((p_injected["w"] == p_plain["w"]).all()))

# A dtype is not a hyperparameter to inject: name it static.
bf16 = optax.inject_hyperparams(rmsprop_jax.rmsprop, static_args=("accumulator_dtype",))(
    learning_rate=1e-2, accumulator_dtype=jnp.bfloat16
)
print("bfloat16 nu:", optax.tree_utils.tree_get(bf16.init(params), "nu")["w"].dtype)
