"""Recurrent networks: an LSTM on the adding problem, trained by SGD, momentum, Adam and RMSprop.

The adding problem (Hochreiter & Schmidhuber, 1997) asks a recurrent network to read a sequence
of pairs ``(value_t, marker_t)``, with ``value_t ~ U[0, 1]`` and exactly two markers set (one in
each half of the sequence, the common variant of Le et al., 2015), and to output the sum of the
two marked values after the last step. Predicting the mean 1 gives the trivial mean squared error
``Var(U + U') = 2/12 ≈ 0.167``; an MSE below 0.01 is the usual success threshold. The difficulty
grows with the sequence length ``T`` because the error signal must travel back ``T/2`` steps or
more.

Every step draws a fresh batch, so the training loss is an unbiased estimate of the test error;
the reported curve is nevertheless the MSE on a fixed evaluation set, evaluated every
``config.eval_every`` steps. The global gradient norm is recorded at every step, before any
clipping, to show how each optimizer copes with the exploding and vanishing gradients of
recurrent training.

Run: ``python -m experiments.studies.adding_problem --config configs/studies/adding_problem.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments.common.config_schema import ConfigSchema
from experiments.common.tables import markdown_table
from experiments.studies import common

TRIVIAL_MSE = 2.0 / 12.0  # predicting 1 for a sum of two independent U[0, 1] values


def adding_problem_batch(
    key: jax.Array, batch_size: int, sequence_length: int
) -> tuple[jax.Array, jax.Array]:
  """Draws a batch of the adding problem.

  Args:
    key: PRNG key.
    batch_size: number of sequences.
    sequence_length: ``T >= 2``; one marker falls uniformly in ``[0, T//2)``, the other in
      ``[T//2, T)``.

  Returns:
    ``inputs`` of shape ``[batch_size, T, 2]`` (value, marker) and ``targets`` of shape
    ``[batch_size]``, the sum of the two marked values.
  """
  if sequence_length < 2:
    raise ValueError(f"sequence_length must be at least 2, got {sequence_length!r}.")
  common.check_positive_int("batch_size", batch_size)
  value_key, first_key, second_key = jax.random.split(key, 3)
  values = jax.random.uniform(value_key, (batch_size, sequence_length))
  half = sequence_length // 2
  first = jax.random.randint(first_key, (batch_size,), 0, half)
  second = jax.random.randint(second_key, (batch_size,), half, sequence_length)
  markers = jax.nn.one_hot(first, sequence_length) + jax.nn.one_hot(second, sequence_length)
  inputs = jnp.stack([values, markers], axis=-1)
  targets = jnp.sum(values * markers, axis=-1)
  return inputs, targets


class AddingRNN(nnx.Module):
  """A single-layer LSTM (or GRU) whose last hidden state is read out by a linear layer."""

  def __init__(self, hidden_size: int, *, cell: str = "lstm", forget_bias: float = 1.0,
               rngs: nnx.Rngs) -> None:
    if cell == "lstm":
      # The fused cell computes all four gates with one matrix product per step, which on a
      # CPU is several times faster than ``nnx.LSTMCell``'s eight products; the function is
      # the same. Its gates are laid out [input, forget, candidate, output].
      recurrent_cell: nnx.OptimizedLSTMCell | nnx.GRUCell = nnx.OptimizedLSTMCell(
          2, hidden_size, rngs=rngs
      )
      # A positive forget-gate bias lets memory persist from the start (Gers et al., 2000;
      # Jozefowicz et al., 2015); without it the LSTM first has to learn not to forget.
      bias = recurrent_cell.dense_h.bias
      assert bias is not None  # dense_h is built with use_bias=True
      bias[...] = bias[...].at[hidden_size:2 * hidden_size].set(forget_bias)
    elif cell == "gru":
      recurrent_cell = nnx.GRUCell(2, hidden_size, rngs=rngs)
    else:
      raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}.")
    self.cell = recurrent_cell
    self.cell_type = cell
    self.hidden_size = hidden_size
    self.readout = nnx.Linear(hidden_size, 1, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Maps ``inputs`` of shape ``[batch, T, 2]`` to predictions of shape ``[batch]``."""
    zeros = jnp.zeros((inputs.shape[0], self.hidden_size), inputs.dtype)
    # The carry starts at zero; it is built here rather than by ``cell.initialize_carry``,
    # which draws from the module's RNG stream and so cannot run under jit/vmap of a merged
    # model.
    carry: Any = (zeros, zeros) if self.cell_type == "lstm" else zeros

    def step(carry: Any, inputs_t: jax.Array) -> tuple[Any, None]:
      carry, _ = self.cell(carry, inputs_t)
      return carry, None

    carry, _ = jax.lax.scan(step, carry, jnp.swapaxes(inputs, 0, 1))
    last_hidden = carry[1] if self.cell_type == "lstm" else carry
    return self.readout(last_hidden)[:, 0]


def build_model(config: ml_collections.ConfigDict, seed: int) -> AddingRNN:
  """The study's model, initialised from ``seed``."""
  return AddingRNN(
      config.hidden_size, cell=config.cell, forget_bias=config.forget_bias, rngs=nnx.Rngs(seed),
  )


def make_train_functions(
    config: ml_collections.ConfigDict,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    sequence_length: int,
) -> tuple[Any, Any]:
  """Returns jitted ``train_chunk`` and ``eval_step``, both vmapped over the seed axis.

  ``train_chunk(state, num_steps)`` runs ``num_steps`` steps of ``train_step`` with
  ``jax.lax.scan`` and returns the new state and the per-step loss and gradient norm.
  """

  def loss_fn(params: Any, rest: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params, rest)
    return jnp.mean((model(inputs) - targets) ** 2)

  def train_step(state: dict[str, Any], _: Any) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    key, batch_key = jax.random.split(state["key"])
    inputs, targets = adding_problem_batch(batch_key, config.batch_size, sequence_length)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], state["rest"], inputs, targets)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = dict(state, params=params, opt_state=opt_state, key=key)
    return new_state, {"loss": loss, "grad_norm": common.global_norm(grads)}

  def train_chunk(state: dict[str, Any], num_steps: int) -> tuple[dict[str, Any], Any]:
    return jax.lax.scan(train_step, state, None, length=num_steps)

  def eval_step(state: dict[str, Any], inputs: jax.Array, targets: jax.Array) -> jax.Array:
    return loss_fn(state["params"], state["rest"], inputs, targets)

  batched_chunk = jax.jit(jax.vmap(train_chunk, in_axes=(0, None)), static_argnums=1)
  batched_eval = jax.jit(jax.vmap(eval_step, in_axes=(0, None, None)))
  return batched_chunk, batched_eval


def initial_state(config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation,
                  seed: int) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """Seed ``seed``'s model (parameters and the rest), optimizer state and batch key."""
  graphdef, params, rest = cast(  # two filters: exactly three parts
      tuple[nnx.GraphDef, nnx.State, nnx.State],
      nnx.split(build_model(config, seed), nnx.Param, ...),
  )
  return graphdef, {"params": params, "rest": rest, "opt_state": optimizer.init(params),
                    "key": jax.random.key(seed)}


def run_optimizer(
    config: ml_collections.ConfigDict, spec: Mapping[str, Any], sequence_length: int,
    description: str,
) -> dict[str, np.ndarray]:
  """Trains ``config.num_seeds`` models with one optimizer; returns curves of shape [seeds, ...].

  Seed ``s`` initialises the model from ``config.seed + s`` and draws its batches from the same
  number, so every optimizer sees the same initialisations and the same data stream.
  """
  optimizer = common.make_optimizer(spec)
  graphdef, state = common.init_seed_states(
      common.seed_list(config), functools.partial(initial_state, config, optimizer))
  train_chunk, eval_step = make_train_functions(config, graphdef, optimizer, sequence_length)
  eval_inputs, eval_targets = adding_problem_batch(
      jax.random.key(config.eval_seed), config.eval_size, sequence_length
  )
  run = common.train_in_chunks(
      train_chunk, state, common.chunk_sizes(config.num_steps, config.eval_every), description,
      evaluate=lambda state: eval_step(state, eval_inputs, eval_targets),
      postfix=lambda mse: {"mse": f"{float(np.mean(mse)):.4f}"},
  )
  return {
      "eval_steps": run.steps,
      "eval_mse": np.stack(run.evaluations, axis=1),
      "train_loss": run.outputs["loss"],
      "grad_norm": run.outputs["grad_norm"],
  }


def summarize_run(config: ml_collections.ConfigDict, curves: Mapping[str, np.ndarray]
                  ) -> dict[str, Any]:
  """Per-optimizer numbers: final MSE, steps to success, gradient-norm statistics."""
  steps = curves["eval_steps"]
  steps_to_success = [
      common.first_step_below(steps, seed_curve, config.success_mse)
      for seed_curve in curves["eval_mse"]
  ]
  reached = [value for value in steps_to_success if not np.isnan(value)]
  grad_norm = curves["grad_norm"]
  tenth = max(1, grad_norm.shape[1] // 10)
  return {
      "final_eval_mse": common.mean_std(curves["eval_mse"][:, -1]),
      "best_eval_mse": common.mean_std(curves["eval_mse"].min(axis=1)),
      "steps_to_success_per_seed": steps_to_success,
      "seeds_reaching_success": len(reached),
      "steps_to_success": common.mean_std(reached) if reached else
                          {"mean": float("nan"), "std": float("nan")},
      "grad_norm_first_tenth": common.mean_std(grad_norm[:, :tenth].mean(axis=1)),
      "grad_norm_last_tenth": common.mean_std(grad_norm[:, -tenth:].mean(axis=1)),
      "grad_norm_max": common.mean_std(grad_norm.max(axis=1)),
      "diverged_seeds": int(np.sum(~np.isfinite(curves["eval_mse"][:, -1]))),
  }


def smooth(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
  """Means over consecutive windows of the last axis; returns (window-end steps, means)."""
  window = max(1, min(window, values.shape[-1]))
  usable = values.shape[-1] // window * window
  means = values[..., :usable].reshape(*values.shape[:-1], -1, window).mean(axis=-1)
  return np.arange(1, means.shape[-1] + 1) * window, means


def make_plots(config: ml_collections.ConfigDict, results: Mapping[int, Mapping[str, Any]],
               workdir: str) -> list[str]:
  """MSE against steps and gradient norm against steps, one panel per sequence length."""
  lengths = list(results)
  figure, axes = common.plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4),
                                     squeeze=False)
  for axis, length in zip(axes[0], lengths, strict=True):
    for name, curves in results[length].items():
      common.plot_mean_and_range(axis, curves["eval_steps"], curves["eval_mse"], name)
    axis.axhline(TRIVIAL_MSE, color="gray", linestyle=":", label="trivial (0.167)")
    axis.axhline(config.success_mse, color="black", linestyle="--",
                 label=f"success ({config.success_mse})")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("evaluation MSE")
    axis.set_title(f"adding problem, T = {length} ({config.cell.upper()} {config.hidden_size})")
    axis.legend(fontsize=8)
  mse_plot = common.save_figure(figure, workdir, "adding_mse.png")

  figure, axes = common.plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4),
                                     squeeze=False)
  for axis, length in zip(axes[0], lengths, strict=True):
    for name, curves in results[length].items():
      steps, means = smooth(curves["grad_norm"], config.eval_every)
      common.plot_mean_and_range(axis, steps, means, name)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel(f"gradient norm (mean over {config.eval_every} steps)")
    axis.set_title(f"gradient norm, T = {length}")
    axis.legend(fontsize=8)
  grad_plot = common.save_figure(figure, workdir, "adding_grad_norm.png")
  return [mse_plot, grad_plot]


# Every field the study reads (the workdir's default reads ``name``); the command line refuses a
# config with a field more or less.
SCHEMA = ConfigSchema(
    job="experiments.studies.adding_problem",
    fields=(
        "name", "cell", "hidden_size", "forget_bias", "sequence_lengths", "batch_size",
        "num_steps", "eval_every", "eval_size", "eval_seed", "success_mse", "num_seeds",
        "seed", "optimizers",
    ),
    example="configs/studies/adding_problem.py",
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects configurations that cannot run, naming the offending field."""
  common.check_seeds(config.num_seeds)
  for field in ("num_steps", "eval_every", "batch_size", "eval_size", "hidden_size"):
    common.check_positive_int(f"config.{field}", config[field])
  for length in config.sequence_lengths:
    if not isinstance(length, int) or length < 2:
      raise ValueError(f"config.sequence_lengths must hold integers >= 2, got {length!r}.")
  if not config.optimizers:
    raise ValueError("config.optimizers is empty: nothing to compare.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every optimizer on every sequence length and writes the outputs to ``workdir``."""
  check_config(config)
  stopwatch = common.Stopwatch()
  results: dict[int, dict[str, Any]] = {}
  for length in config.sequence_lengths:
    results[length] = {}
    for name, spec in config.optimizers.items():
      results[length][name] = run_optimizer(config, spec, length, f"T={length} {name}")

  optimizers: dict[str, Any] = {
      name: {"spec": spec.to_dict(), "by_length": {}} for name, spec in config.optimizers.items()
  }
  rows = []
  for length in config.sequence_lengths:
    for name in config.optimizers.keys():
      numbers = summarize_run(config, results[length][name])
      optimizers[name]["by_length"][str(length)] = numbers
      rows.append([
          length, name, common.format_mean_std(numbers["final_eval_mse"]),
          common.format_mean_std(numbers["best_eval_mse"]),
          f"{numbers['seeds_reaching_success']}/{config.num_seeds}",
          common.format_mean_std(numbers["steps_to_success"]),
          common.format_mean_std(numbers["grad_norm_first_tenth"]),
          common.format_mean_std(numbers["grad_norm_last_tenth"]),
          common.format_mean_std(numbers["grad_norm_max"]),
      ])
  plots = make_plots(config, results, workdir)
  summary = {
      **common.run_record("adding_problem", config, stopwatch),
      "optimizers": optimizers,
      "plots": plots,
      "curves": {
          str(length): {
              name: {"eval_steps": curves["eval_steps"], "eval_mse": curves["eval_mse"]}
              for name, curves in by_name.items()
          }
          for length, by_name in results.items()
      },
  }
  header = ["T", "optimizer", "final MSE", "best MSE", "seeds < " + str(config.success_mse),
            "steps to MSE < " + str(config.success_mse), "grad norm, first 10%",
            "grad norm, last 10%", "max grad norm"]
  markdown = "\n\n".join([
      f"# Adding problem: {config.cell.upper()} with {config.hidden_size} units",
      f"{common.seeds_note(config.num_seeds)}, {config.num_steps} steps of batch "
      f"{config.batch_size}, evaluation on {config.eval_size} fixed sequences every "
      f"{config.eval_every} steps; trivial MSE {TRIVIAL_MSE:.3f}. Steps to success average the "
      f"seeds that reached it. {common.timing_note(summary)}",
      markdown_table(header, rows),
      common.optimizer_table(config.optimizers),
      common.plot_links(plots),
  ])
  common.write_outputs(workdir, summary, markdown)
  return summary


if __name__ == "__main__":
  common.run_main(train_and_evaluate, "configs/studies/adding_problem.py", SCHEMA)
