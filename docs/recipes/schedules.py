"""A learning-rate schedule: any optax schedule, or your own function of the step."""

import jax.numpy as jnp
import optax

import rmsprop_jax

schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=1e-2, warmup_steps=10, decay_steps=100, end_value=1e-4
)
# bias_correction makes nu exactly g^2 for a constant gradient, so |update| is the learning rate.
optimizer = rmsprop_jax.rmsprop(schedule, bias_correction=True)

params = jnp.zeros(1)
grads = jnp.ones(1)
state = optimizer.init(params)
for step in range(101):
  updates, state = optimizer.update(grads, state, params)
  if step in (0, 5, 10, 50, 100):
    print(f"step {step:3d}: schedule {schedule(step):.6f}, |update| {-updates[0]:.6f}")


# Your own schedule: a function of the step count (an int32 scalar, traced under jit).
def step_decay(count):
  return 1e-2 * 0.5 ** (count // 30)  # halve every 30 steps


optimizer = rmsprop_jax.rmsprop(step_decay, bias_correction=True)
state = optimizer.init(params)
sizes = []
for _ in range(61):
  updates, state = optimizer.update(grads, state, params)
  sizes.append(float(-updates[0]))
print("step decay at steps 0, 30, 60:", [round(sizes[i], 6) for i in (0, 30, 60)])
