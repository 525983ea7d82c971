"""Tune RMSprop on your own model with Optuna: a batch of trials per compiled call."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

import rmsprop_jax


# Your model, loss and data. Here: a tiny MLP, a synthetic regression problem and a held-out
# validation split the trials are judged on.
def init_params(key):
  k1, k2 = jax.random.split(key)
  return {
      "w1": jax.random.normal(k1, (8, 32)) / jnp.sqrt(8.0),
      "b1": jnp.zeros(32),
      "w2": jax.random.normal(k2, (32, 1)) / jnp.sqrt(32.0),
      "b2": jnp.zeros(1),
  }


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


key_x, key_init = jax.random.split(jax.random.key(0))
x = jax.random.normal(key_x, (320, 8))
y = jnp.sin(x[:, :1] * x[:, 1:2]) + 0.5 * x[:, 2:3]
x_train, y_train, x_valid, y_valid = x[:256], y[:256], x[256:], y[256:]

traces = 0


def train(learning_rate, decay, num_steps=300):
  """One whole training run, judged by its validation loss. Hyperparameters are traced."""
  global traces
  traces += 1
  schedule = optax.cosine_decay_schedule(learning_rate, decay_steps=num_steps)
  optimizer = rmsprop_jax.rmsprop(schedule, decay=decay)
  params = init_params(key_init)

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(loss_fn)(params, x_train, y_train)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=num_steps)
  return loss_fn(params, x_valid, y_valid)


trials_per_call, rounds = 8, 4
evaluate = jax.jit(jax.vmap(train))  # 8 trials per call, compiled once

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
for round_index in range(rounds):
  trials = [study.ask() for _ in range(trials_per_call)]  # TPE proposes a batch...
  learning_rates = [t.suggest_float("learning_rate", 1e-4, 0.3, log=True) for t in trials]
  decays = [t.suggest_float("decay", 0.5, 0.999) for t in trials]
  losses = evaluate(jnp.array(learning_rates), jnp.array(decays))  # ...one call trains it...
  for trial, loss in zip(trials, np.asarray(losses).tolist(), strict=True):
    if np.isfinite(loss):
      study.tell(trial, loss)  # ...and TPE learns from every result before the next batch.
    else:
      study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a diverged trial
  print(f"round {round_index + 1}: best validation loss so far {study.best_value:.4f}")

print(f"{len(study.trials)} trials in {rounds} calls, train traced {traces} time(s)")
best = study.best_params
print(f"best: lr {best['learning_rate']:.3g}, decay {best['decay']:.3g}, "
      f"validation loss {study.best_value:.4f}")
