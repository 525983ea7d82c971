"""Sparse gradients: an embedding table over Zipf-distributed features.

Bags of Zipf-distributed feature ids, labelled by a hidden linear teacher, train an embedding
table whose rare rows get a gradient only every few hundred steps; the study records accuracy
overall and on tail-only bags, per-frequency-bucket agreement with the teacher, and how far a
dense optimizer moves a rarely visited row. Task, metrics and results: ``docs/studies.md``.

Run: ``python -m experiments.studies.sparse_features --config configs/studies/sparse_features.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from sklearn import metrics as sklearn_metrics

from experiments.common.config_schema import ConfigSchema
from experiments.common.tables import markdown_table
from experiments.studies import common

BUCKET_NAMES = ("head", "torso", "tail")


def zipf_probabilities(num_features: int, exponent: float) -> jax.Array:
  """``P(id) ∝ (id + 1)^(-exponent)`` for ids ``0 .. num_features - 1``."""
  common.check_positive_int("num_features", num_features)
  if not exponent > 0:
    raise ValueError(f"exponent must be positive, got {exponent!r}.")
  weights = jnp.arange(1, num_features + 1, dtype=jnp.float32) ** -exponent
  return weights / jnp.sum(weights)


def sample_bags(key: jax.Array, probabilities: jax.Array, batch_size: int, bag_size: int
                ) -> jax.Array:
  """Draws ``[batch_size, bag_size]`` feature ids independently from ``probabilities``."""
  common.check_positive_int("batch_size", batch_size)
  common.check_positive_int("bag_size", bag_size)
  # Inverse-CDF sampling costs O(log V) per draw; jax.random.categorical would draw V Gumbel
  # variables per id, 20000 times more random numbers than ids.
  cumulative = jnp.cumsum(probabilities)
  uniforms = jax.random.uniform(key, (batch_size, bag_size), maxval=cumulative[-1])
  ids = jnp.searchsorted(cumulative, uniforms, side="right")
  return jnp.minimum(ids, probabilities.shape[0] - 1)


def teacher_labels(teacher_weights: jax.Array, bags: jax.Array) -> jax.Array:
  """1.0 where the bag's teacher weights sum to a positive number, else 0.0."""
  return (jnp.sum(teacher_weights[bags], axis=-1) > 0).astype(jnp.float32)


def bucket_bounds(num_features: int, edges: Sequence[int]) -> list[tuple[int, int]]:
  """``[(0, e1), (e1, e2), (e2, num_features)]``: id ranges of the head, torso and tail."""
  if len(edges) != 2 or not 0 < edges[0] < edges[1] < num_features:
    raise ValueError(f"config.bucket_edges must be two increasing ids inside (0, "
                     f"{num_features}), got {tuple(edges)!r}.")
  return [(0, edges[0]), (edges[0], edges[1]), (edges[1], num_features)]


class BagClassifier(nnx.Module):
  """Mean of the bag's embeddings, read out by a linear layer into one logit."""

  def __init__(self, num_features: int, embedding_dim: int, *, rngs: nnx.Rngs) -> None:
    self.embed = nnx.Embed(num_features, embedding_dim, rngs=rngs)
    self.readout = nnx.Linear(embedding_dim, 1, rngs=rngs)

  def __call__(self, bags: jax.Array) -> jax.Array:
    return self.readout(jnp.mean(self.embed(bags), axis=-2))[..., 0]

  def feature_scores(self) -> jax.Array:
    """Each row's contribution ``u . e_f`` to the logit (up to the bag-size factor)."""
    return self.embed.embedding[...] @ self.readout.kernel[...][:, 0]


def make_functions(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef,
                   optimizer: optax.GradientTransformation) -> tuple[Any, Any]:
  """Jitted ``train_chunk(state, steps)`` and ``evaluate(state, test_bags, tail_bags)``.

  Both are vmapped over the seed axis of ``state``, which holds the parameters, optimizer
  state, teacher weights and data key of each seed.
  """
  probabilities = zipf_probabilities(config.num_features, config.zipf_exponent)
  bounds = bucket_bounds(config.num_features, config.bucket_edges)

  def loss_fn(params: Any, bags: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = nnx.merge(graphdef, params)(bags)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels)), logits

  def train_step(state: dict[str, Any], _: Any) -> tuple[dict[str, Any], jax.Array]:
    key, batch_key = jax.random.split(state["key"])
    bags = sample_bags(batch_key, probabilities, config.batch_size, config.bag_size)
    labels = teacher_labels(state["teacher"], bags)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], bags, labels)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return dict(state, params=params, opt_state=opt_state, key=key), loss

  def train_chunk(state: dict[str, Any], num_steps: int) -> tuple[dict[str, Any], jax.Array]:
    return jax.lax.scan(train_step, state, None, length=num_steps)

  def evaluate(state: dict[str, Any], test_bags: jax.Array, tail_bags: jax.Array
               ) -> dict[str, jax.Array]:
    test_labels = teacher_labels(state["teacher"], test_bags)
    tail_labels = teacher_labels(state["teacher"], tail_bags)
    test_loss, test_logits = loss_fn(state["params"], test_bags, test_labels)
    _, tail_logits = loss_fn(state["params"], tail_bags, tail_labels)
    scores = nnx.merge(graphdef, state["params"]).feature_scores()
    agree = (scores > 0) == (state["teacher"] > 0)
    return {
        "test_loss": test_loss,
        "test_accuracy": jnp.mean((test_logits > 0) == (test_labels > 0.5)),
        "tail_accuracy": jnp.mean((tail_logits > 0) == (tail_labels > 0.5)),
        "sign_agreement": jnp.stack([jnp.mean(agree[low:high]) for low, high in bounds]),
        "test_logits": test_logits, "test_labels": test_labels,
        "tail_logits": tail_logits, "tail_labels": tail_labels,
        "scores": scores,
    }

  batched_chunk = jax.jit(jax.vmap(train_chunk, in_axes=(0, None)), static_argnums=1)
  batched_eval = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
  return batched_chunk, batched_eval


def evaluation_sets(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """The Zipf test bags and the tail test bags (uniform over the tail's ids), fixed per config."""
  test_key, tail_key = jax.random.split(jax.random.key(config.eval_seed))
  probabilities = zipf_probabilities(config.num_features, config.zipf_exponent)
  test_bags = sample_bags(test_key, probabilities, config.eval_size, config.bag_size)
  tail_low = bucket_bounds(config.num_features, config.bucket_edges)[-1][0]
  tail_bags = jax.random.randint(tail_key, (config.eval_size, config.bag_size), tail_low,
                                 config.num_features)
  return test_bags, tail_bags


def initial_state(config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation,
                  seed: int) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """Seed ``seed``'s classifier, optimizer state, teacher weights and data key."""
  graphdef, params = nnx.split(
      BagClassifier(config.num_features, config.embedding_dim, rngs=nnx.Rngs(seed)))
  teacher_key, data_key = jax.random.split(jax.random.key(seed + 1_000_003))
  return graphdef, {"params": params, "opt_state": optimizer.init(params),
                    "teacher": jax.random.normal(teacher_key, (config.num_features,)),
                    "key": data_key}


def run_optimizer(config: ml_collections.ConfigDict, spec: Mapping[str, Any], description: str
                  ) -> dict[str, Any]:
  """Trains ``config.num_seeds`` seeds with one optimizer; curves have shape [seeds, evals].

  Seed ``s`` fixes the initialisation, the teacher's weights and the training stream, so every
  optimizer learns the same task from the same start.
  """
  optimizer = common.make_optimizer(spec)
  graphdef, state = common.init_seed_states(
      common.seed_list(config), functools.partial(initial_state, config, optimizer))
  train_chunk, evaluate = make_functions(config, graphdef, optimizer)
  test_bags, tail_bags = evaluation_sets(config)
  run = common.train_in_chunks(
      train_chunk, state, common.chunk_sizes(config.num_steps, config.eval_every), description,
      evaluate=lambda state: evaluate(state, test_bags, tail_bags),
      postfix=lambda metrics: {"acc": f"{float(np.mean(metrics['test_accuracy'])):.3f}"},
  )
  curve_names = ("test_loss", "test_accuracy", "tail_accuracy", "sign_agreement")
  curves = {name: np.stack([metrics[name] for metrics in run.evaluations], axis=1)
            for name in curve_names}
  return {"steps": run.steps, "train_loss": run.outputs, **curves,
          "final": run.evaluations[-1], "teacher": np.asarray(run.state["teacher"])}


def rare_row_movement(spec: Mapping[str, Any], gaps: Sequence[int], num_periods: int
                      ) -> np.ndarray:
  """How far one scalar parameter moves per gradient it receives, in units of the learning rate.

  The parameter receives gradient 1 on steps ``0, G, 2G, ...`` and exactly 0 otherwise, as an
  embedding row of a feature seen every ``G`` steps does under a dense optimizer. The run lasts
  ``num_periods * max(gaps)`` steps; the movement ``sum |Δθ|`` over the last ``max(gaps)``
  steps, divided by the number of gradients received in them and by the learning rate, is the
  steady-state movement per visit. All gaps run in one vmapped program.
  """
  optimizer = common.make_optimizer(spec)
  longest = max(gaps)
  total_steps = num_periods * longest

  def movement(gap: jax.Array) -> jax.Array:
    params = jnp.zeros(())
    state = optimizer.init(params)

    def step(carry: tuple[jax.Array, Any], t: jax.Array) -> tuple[Any, jax.Array]:
      params, state = carry
      grad = jnp.where(t % gap == 0, 1.0, 0.0)
      updates, state = optimizer.update(grad, state, params)
      return (params + updates, state), jnp.abs(updates)

    _, moves = jax.lax.scan(step, (params, state), jnp.arange(total_steps))
    visits = jnp.sum(jnp.arange(total_steps - longest, total_steps) % gap == 0)
    return jnp.sum(moves[-longest:]) / visits / spec["learning_rate"]

  return np.asarray(jax.jit(jax.vmap(movement))(jnp.asarray(gaps)))


def summarize_run(config: ml_collections.ConfigDict, result: Mapping[str, Any]
                  ) -> dict[str, Any]:
  """Final metrics per optimizer, mean ± std over seeds, with sklearn's AUC and correlations."""
  final = result["final"]
  bounds = bucket_bounds(config.num_features, config.bucket_edges)
  numbers: dict[str, Any] = {
      "final_test_loss": common.mean_std(final["test_loss"]),
      "final_test_accuracy": common.mean_std(final["test_accuracy"]),
      "final_tail_accuracy": common.mean_std(final["tail_accuracy"]),
      "test_auc": common.mean_std([
          sklearn_metrics.roc_auc_score(labels, logits)
          for labels, logits in zip(final["test_labels"], final["test_logits"], strict=True)]),
      "tail_auc": common.mean_std([
          sklearn_metrics.roc_auc_score(labels, logits)
          for labels, logits in zip(final["tail_labels"], final["tail_logits"], strict=True)]),
      "steps_to_90_percent_accuracy": _steps_to(result["steps"], result["test_accuracy"], 0.9),
      "buckets": {},
  }
  for index, (name, (low, high)) in enumerate(zip(BUCKET_NAMES, bounds, strict=True)):
    correlations = [np.corrcoef(scores[low:high], teacher[low:high])[0, 1]
                    for scores, teacher in zip(final["scores"], result["teacher"], strict=True)]
    numbers["buckets"][name] = {
        "sign_agreement": common.mean_std(final["sign_agreement"][:, index]),
        "score_teacher_correlation": common.mean_std(correlations),
    }
  return numbers


def _steps_to(steps: np.ndarray, accuracy: np.ndarray, level: float) -> dict[str, Any]:
  """Mean ± std over the seeds that reach ``level``, and how many did."""
  # "Accuracy reaches `level`" is "minus accuracy falls below minus `level`".
  reached = [common.first_step_below(steps, -curve, -level) for curve in accuracy]
  reached = [value for value in reached if not np.isnan(value)]
  stats = common.mean_std(reached) if reached else {"mean": float("nan"), "std": float("nan")}
  return {**stats, "seeds_reaching": len(reached)}


def expected_visits(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Mean number of training examples that contain a row, per bucket, over the whole run."""
  probabilities = np.asarray(zipf_probabilities(config.num_features, config.zipf_exponent))
  draws = config.num_steps * config.batch_size * config.bag_size
  bounds = bucket_bounds(config.num_features, config.bucket_edges)
  return {name: float(np.mean(probabilities[low:high]) * draws)
          for name, (low, high) in zip(BUCKET_NAMES, bounds, strict=True)}


def make_plots(config: ml_collections.ConfigDict, results: Mapping[str, Mapping[str, Any]],
               movement: Mapping[str, np.ndarray], workdir: str) -> list[str]:
  """Loss and accuracy against steps, per-bucket sign agreement, rare-row movement."""
  figure, axes = common.plt.subplots(1, 3, figsize=(16, 4))
  for name, result in results.items():
    style = "--" if name.startswith("rmsprop_") else "-"
    label = common.display_name(config.optimizers[name])
    for axis, key in zip(axes, ("test_loss", "test_accuracy", "tail_accuracy"), strict=True):
      common.plot_mean_and_range(axis, result["steps"], result[key], label, linestyle=style)
  for axis, label in zip(axes, ("test loss (Zipf bags)", "test accuracy (Zipf bags)",
                                "accuracy on tail-only bags"), strict=True):
    axis.set_xlabel("step")
    axis.set_ylabel(label)
  axes[0].set_yscale("log")
  # In the accuracy panel's empty lower right: in the tail panel it would cover the top curves.
  axes[1].legend(fontsize=8, ncol=2, loc="lower right")
  curves_plot = common.save_figure(figure, workdir, "sparse_curves.png")

  figure, axes = common.plt.subplots(1, 3, figsize=(16, 4), sharey=True)
  visits = expected_visits(config)
  for index, (axis, bucket) in enumerate(zip(axes, BUCKET_NAMES, strict=True)):
    for name, result in results.items():
      style = "--" if name.startswith("rmsprop_") else "-"
      common.plot_mean_and_range(axis, result["steps"], result["sign_agreement"][:, :, index],
                                 common.display_name(config.optimizers[name]), linestyle=style)
    axis.set_title(f"{bucket} rows (≈{visits[bucket]:.3g} examples per row in the run)")
    axis.set_xlabel("step")
  axes[0].set_ylabel("sign agreement of u·e_f with teacher w_f")
  axes[2].legend(fontsize=7, ncol=2)
  buckets_plot = common.save_figure(figure, workdir, "sparse_buckets.png")

  figure, axis = common.plt.subplots(figsize=(6.5, 4))
  for name, moves in movement.items():
    axis.plot(config.movement_gaps, moves, marker="o",
              label=common.display_name(config.optimizers[name]))
  axis.set_xscale("log")
  axis.set_yscale("log")
  axis.set_xlabel("steps between the row's gradients (G)")
  axis.set_ylabel("movement per gradient received / learning rate")
  axis.legend(fontsize=7)
  movement_plot = common.save_figure(figure, workdir, "sparse_rare_row_movement.png")
  return [curves_plot, buckets_plot, movement_plot]


# Every field the study reads (the workdir's default reads ``name``); the command line refuses a
# config with a field more or less.
SCHEMA = ConfigSchema(
    job="experiments.studies.sparse_features",
    fields=(
        "name", "num_features", "zipf_exponent", "bag_size", "embedding_dim",
        "bucket_edges", "batch_size", "num_steps", "eval_every", "eval_size", "eval_seed",
        "num_seeds", "seed", "movement_gaps", "movement_periods", "optimizers",
    ),
    example="configs/studies/sparse_features.py",
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects configurations that cannot run, naming the offending field."""
  common.check_seeds(config.num_seeds)
  for field in ("num_steps", "eval_every", "batch_size", "bag_size", "eval_size",
                "num_features", "embedding_dim", "movement_periods"):
    common.check_positive_int(f"config.{field}", config[field])
  bucket_bounds(config.num_features, config.bucket_edges)
  if not config.optimizers:
    raise ValueError("config.optimizers is empty: nothing to compare.")
  for gap in config.movement_gaps:
    common.check_positive_int("config.movement_gaps entries", gap)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every optimizer and the rare-row measurement; writes the outputs to ``workdir``."""
  check_config(config)
  stopwatch = common.Stopwatch()
  results = {}
  for name, spec in config.optimizers.items():
    results[name] = run_optimizer(config, spec, name)
  movement = {name: rare_row_movement(spec, config.movement_gaps, config.movement_periods)
              for name, spec in config.optimizers.items()}
  summaries = {name: summarize_run(config, result) for name, result in results.items()}
  plots = make_plots(config, results, movement, workdir)
  visits = expected_visits(config)
  summary = {
      **common.run_record("sparse_features", config, stopwatch),
      "expected_examples_per_row": visits,
      "optimizers": {
          name: {"spec": config.optimizers[name].to_dict(), **numbers,
                 "rare_row_movement": dict(zip([str(gap) for gap in config.movement_gaps],
                                               movement[name].tolist(), strict=True))}
          for name, numbers in summaries.items()},
      "plots": plots,
  }
  header = ["optimizer", "test loss", "test accuracy", "test AUC", "tail accuracy", "tail AUC",
            "steps to 90% acc."]
  rows = [[name, common.format_mean_std(numbers["final_test_loss"]),
           common.format_mean_std(numbers["final_test_accuracy"]),
           common.format_mean_std(numbers["test_auc"]),
           common.format_mean_std(numbers["final_tail_accuracy"]),
           common.format_mean_std(numbers["tail_auc"]),
           f"{common.format_mean_std(numbers['steps_to_90_percent_accuracy'])} "
           f"({numbers['steps_to_90_percent_accuracy']['seeds_reaching']}/{config.num_seeds})"]
          for name, numbers in summaries.items()]
  bucket_header = ["optimizer"] + [f"{bucket}: sign agreement / correlation"
                                   for bucket in BUCKET_NAMES]
  bucket_rows = [[name] + [
      f"{common.format_mean_std(numbers['buckets'][bucket]['sign_agreement'])} / "
      f"{common.format_mean_std(numbers['buckets'][bucket]['score_teacher_correlation'])}"
      for bucket in BUCKET_NAMES] for name, numbers in summaries.items()]
  movement_header = ["optimizer"] + [f"G={gap}" for gap in config.movement_gaps]
  movement_rows = [[name] + [f"{value:.3g}" for value in moves]
                   for name, moves in movement.items()]
  bounds = bucket_bounds(config.num_features, config.bucket_edges)
  markdown = "\n\n".join([
      "# Sparse gradients: an embedding table over Zipf-distributed features",
      f"{common.seeds_note(config.num_seeds)}; {config.num_features} features, Zipf exponent "
      f"{config.zipf_exponent}, bags of {config.bag_size}, batch {config.batch_size}, "
      f"{config.num_steps} steps, embedding dimension {config.embedding_dim}. Buckets by id: "
      + ", ".join(f"{name} [{low}, {high}) ≈{visits[name]:.3g} examples per row"
                  for name, (low, high) in zip(BUCKET_NAMES, bounds, strict=True))
      + f". {common.timing_note(summary)}",
      markdown_table(header, rows),
      "## How well each frequency bucket was learned",
      markdown_table(bucket_header, bucket_rows),
      "## Movement of a row per gradient it receives, in learning rates",
      markdown_table(movement_header, movement_rows),
      common.optimizer_table(config.optimizers),
      common.plot_links(plots),
  ])
  common.write_outputs(workdir, summary, markdown)
  return summary


if __name__ == "__main__":
  common.run_main(train_and_evaluate, "configs/studies/sparse_features.py", SCHEMA)
