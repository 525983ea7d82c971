"""Non-stationary objectives: online regression on a teacher that drifts and jumps.

A student tracks a teacher network whose weights drift (AR(1)) and jump, with its output scale,
every ``config.segment_length`` steps; the study records the tracking error on a fixed probe set
(average regret), and per jump the post-change error, the settled error and the recovery time,
for RMSprop at three decays against SGD, momentum and Adam. Task, metrics and results:
``docs/studies.md``.

Run: ``python -m experiments.studies.nonstationary --config configs/studies/nonstationary.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments.common.config_schema import ConfigSchema
from experiments.common.tables import markdown_table
from experiments.studies import common

Teacher = dict[str, jax.Array]


def input_scales(input_dim: int, scale_range: float) -> jax.Array:
  """Per-coordinate input standard deviations, log-spaced in ``[1/scale_range, scale_range]``."""
  common.check_positive_int("input_dim", input_dim)
  if not scale_range >= 1.0:
    raise ValueError(f"scale_range must be >= 1, got {scale_range!r}.")
  return jnp.logspace(-1.0, 1.0, input_dim) ** jnp.log10(scale_range)


def sample_teacher(key: jax.Array, input_dim: int, hidden_size: int,
                   output_scale_range: float) -> Teacher:
  """A fresh teacher: Gaussian weights and a log-uniform output scale in ``[1/r, r]``."""
  hidden_key, output_key, scale_key = jax.random.split(key, 3)
  log_range = jnp.log(output_scale_range)
  return {
      "hidden": jax.random.normal(hidden_key, (input_dim, hidden_size)),
      "output": jax.random.normal(output_key, (hidden_size,)),
      "scale": jnp.exp(jax.random.uniform(scale_key, (), minval=-log_range, maxval=log_range)),
  }


def drift_teacher(key: jax.Array, teacher: Teacher, drift: float) -> Teacher:
  """One step of the variance-preserving random walk ``sqrt(1 - d^2) theta + d xi``."""
  hidden_key, output_key = jax.random.split(key)
  keep = jnp.sqrt(1.0 - drift**2)
  return {
      "hidden": keep * teacher["hidden"]
                + drift * jax.random.normal(hidden_key, teacher["hidden"].shape),
      "output": keep * teacher["output"]
                + drift * jax.random.normal(output_key, teacher["output"].shape),
      "scale": teacher["scale"],
  }


def teacher_output(teacher: Teacher, inputs: jax.Array, scales: jax.Array) -> jax.Array:
  """``scale * v . tanh(W^T (x / s) / sqrt(d)) / sqrt(h)``: order-``scale`` outputs."""
  whitened = inputs / scales
  hidden = jnp.tanh(whitened @ teacher["hidden"] / jnp.sqrt(inputs.shape[-1]))
  return teacher["scale"] * hidden @ teacher["output"] / jnp.sqrt(teacher["output"].shape[0])


def next_teacher(key: jax.Array, teacher: Teacher, step: jax.Array,
                 config: ml_collections.ConfigDict) -> Teacher:
  """The teacher for ``step``: a fresh draw when ``step`` starts a segment, else a drift step."""
  jump_key, drift_key = jax.random.split(key)
  jumped = sample_teacher(jump_key, config.input_dim, config.teacher_hidden_size,
                          config.output_scale_range)
  drifted = drift_teacher(drift_key, teacher, config.drift)
  is_jump = jnp.logical_and(step > 0, step % config.segment_length == 0)
  return jax.tree.map(lambda new, old: jnp.where(is_jump, new, old), jumped, drifted)


def teacher_stream(key: jax.Array, config: ml_collections.ConfigDict, num_steps: int) -> Teacher:
  """The teachers of ``num_steps`` consecutive steps, stacked (for tests and plots)."""
  init_key, stream_key = jax.random.split(key)
  first = sample_teacher(init_key, config.input_dim, config.teacher_hidden_size,
                         config.output_scale_range)

  def step(carry: tuple[Teacher, jax.Array], index: jax.Array) -> tuple[Any, Teacher]:
    teacher, key = carry
    key, teacher_key = jax.random.split(key)
    teacher = jax.lax.cond(index == 0, lambda: teacher,
                           lambda: next_teacher(teacher_key, teacher, index, config))
    return (teacher, key), teacher

  _, teachers = jax.lax.scan(step, (first, stream_key), jnp.arange(num_steps))
  return teachers


class Student(nnx.Module):
  """A one-hidden-layer tanh network, wider than the teacher so that it can track it."""

  def __init__(self, input_dim: int, hidden_size: int, *, rngs: nnx.Rngs) -> None:
    self.hidden = nnx.Linear(input_dim, hidden_size, rngs=rngs)
    self.output = nnx.Linear(hidden_size, 1, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return self.output(jnp.tanh(self.hidden(inputs)))[:, 0]


def make_train_chunk(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef,
                     optimizer: optax.GradientTransformation) -> Any:
  """Returns ``train_chunk(state, steps)``, jitted and vmapped over seeds.

  ``steps`` holds the global step indices of the chunk; each ``train_step`` moves the teacher,
  draws a batch, records the tracking error of the current student and updates it.
  """
  scales = input_scales(config.input_dim, config.input_scale_range)

  def loss_fn(params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean((nnx.merge(graphdef, params)(inputs) - targets) ** 2)

  def train_step(state: dict[str, Any], step: jax.Array) -> tuple[dict[str, Any], Any]:
    key, teacher_key, input_key, noise_key = jax.random.split(state["key"], 4)
    teacher = jax.lax.cond(step == 0, lambda: state["teacher"],
                           lambda: next_teacher(teacher_key, state["teacher"], step, config))
    inputs = jax.random.normal(input_key, (config.batch_size, config.input_dim)) * scales
    clean = teacher_output(teacher, inputs, scales)
    targets = clean + config.noise_std * jax.random.normal(noise_key, clean.shape)
    grads = jax.grad(loss_fn)(state["params"], inputs, targets)
    # The error is measured on a fixed probe set rather than on the 8-example batch, whose
    # ratio of means would be too noisy to read recovery times from.
    probe_teacher = teacher_output(teacher, state["probe"], scales)
    probe_student = nnx.merge(graphdef, state["params"])(state["probe"])
    tracking_error = jnp.mean((probe_student - probe_teacher) ** 2)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = dict(state, params=optax.apply_updates(state["params"], updates),
                     opt_state=opt_state, teacher=teacher, key=key)
    return new_state, {
        "tracking_error": tracking_error,
        "normalized_error": tracking_error / jnp.mean(probe_teacher**2),
    }

  def train_chunk(state: dict[str, Any], steps: jax.Array) -> tuple[dict[str, Any], Any]:
    return jax.lax.scan(train_step, state, steps)

  return jax.jit(jax.vmap(train_chunk, in_axes=(0, None)))


def initial_state(config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation,
                  seed: int) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """Seed ``seed``'s student, optimizer state, probe set, first teacher and data key."""
  graphdef, params = nnx.split(
      Student(config.input_dim, config.student_hidden_size, rngs=nnx.Rngs(seed)))
  scales = input_scales(config.input_dim, config.input_scale_range)
  teacher_key, data_key, probe_key = jax.random.split(jax.random.key(seed + 1_000_003), 3)
  return graphdef, {
      "params": params, "opt_state": optimizer.init(params),
      "probe": jax.random.normal(probe_key, (config.probe_size, config.input_dim)) * scales,
      "teacher": sample_teacher(teacher_key, config.input_dim, config.teacher_hidden_size,
                                config.output_scale_range),
      "key": data_key,
  }


def run_optimizer(config: ml_collections.ConfigDict, spec: Mapping[str, Any],
                  description: str) -> dict[str, np.ndarray]:
  """Runs one optimizer on ``config.num_seeds`` seeds; returns per-step curves [seeds, steps].

  Seed ``s`` fixes both the student's initialisation and the teacher's trajectory, so all
  optimizers face the same sequence of teachers and batches.
  """
  optimizer = common.make_optimizer(spec)
  graphdef, state = common.init_seed_states(
      common.seed_list(config), functools.partial(initial_state, config, optimizer))
  train_chunk = make_train_chunk(config, graphdef, optimizer)
  # One chunk per segment: the chunk length is fixed, so the program compiles once.
  sizes = common.chunk_sizes(config.num_segments * config.segment_length, config.segment_length)
  run = common.train_in_chunks(
      train_chunk, state, sizes, description,
      chunk_argument=lambda start, size: jnp.arange(start, start + size),
  )
  return dict(run.outputs)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing moving average along the last axis (shorter windows at the start)."""
  cumulative = np.cumsum(values, axis=-1)
  shifted = np.concatenate(
      [np.zeros_like(cumulative[..., :window]), cumulative[..., :-window]], axis=-1
  )[..., : values.shape[-1]]
  counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
  return (cumulative - shifted) / counts


def segment_statistics(normalized_error: np.ndarray, config: ml_collections.ConfigDict
                       ) -> dict[str, np.ndarray]:
  """Post-change error, settled error and recovery time per seed and jump.

  Args:
    normalized_error: ``[seeds, num_segments * K]`` per-step normalized tracking error.
    config: the study's config (segment length, window, recovery threshold).

  Returns:
    Arrays of shape ``[seeds, num_segments - 1]``, one column per jump (segment 0 starts from
    the initialisation, not from a change, and is left out). Recovery times that never happen
    within the segment are ``K``; ``recovered`` says which did.
  """
  length, window = config.segment_length, config.window
  seeds = normalized_error.shape[0]
  segments = normalized_error.reshape(seeds, config.num_segments, length)[:, 1:]
  smoothed = moving_average(segments, window)
  below = smoothed < config.recovery_threshold
  # A moving average over fewer than `window` steps is too noisy to call a recovery.
  below[..., : window - 1] = False
  recovered = below.any(axis=-1)
  recovery = np.where(recovered, below.argmax(axis=-1) + 1, length)
  return {
      "post_change_error": segments[..., :window].mean(axis=-1),
      "settled_error": segments[..., -window:].mean(axis=-1),
      "recovery_steps": recovery.astype(np.float64),
      "recovered": recovered,
  }


def summarize_run(curves: Mapping[str, np.ndarray], config: ml_collections.ConfigDict
                  ) -> dict[str, Any]:
  """Average regret, normalized error and the per-jump statistics, mean ± std over seeds."""
  stats = segment_statistics(curves["normalized_error"], config)
  finite = np.all(np.isfinite(curves["tracking_error"]), axis=1)
  return {
      "average_regret": common.mean_std(curves["tracking_error"].mean(axis=1)),
      "mean_normalized_error": common.mean_std(curves["normalized_error"].mean(axis=1)),
      "post_change_error": common.mean_std(stats["post_change_error"].mean(axis=1)),
      "settled_error": common.mean_std(stats["settled_error"].mean(axis=1)),
      "recovery_steps": common.mean_std(stats["recovery_steps"].mean(axis=1)),
      "fraction_recovered": float(stats["recovered"].mean()),
      "diverged_seeds": int(np.sum(~finite)),
  }


def make_plots(config: ml_collections.ConfigDict, results: Mapping[str, Mapping[str, Any]],
               summaries: Mapping[str, Mapping[str, Any]], workdir: str) -> list[str]:
  """Error against steps, error against steps since a change, and the decay trade-off."""
  window = config.window
  figure, axis = common.plt.subplots(figsize=(11, 4))
  for name, curves in results.items():
    smoothed = moving_average(curves["normalized_error"], window)
    common.plot_mean_and_range(axis, np.arange(smoothed.shape[1]), smoothed,
                               common.display_name(config.optimizers[name]))
  for jump in range(1, config.num_segments):
    axis.axvline(jump * config.segment_length, color="gray", linewidth=0.5)
  axis.set_yscale("log")
  axis.set_xlabel("step (gray lines: teacher jumps)")
  axis.set_ylabel(f"normalized tracking error ({window}-step mean)")
  axis.set_title(f"Tracking a teacher that jumps every {config.segment_length} steps "
                 f"(mean over {config.num_seeds} seeds, range shaded)")
  # Beside the panel: every part of the curves matters (the jumps and the settled error).
  axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  timeline = common.save_figure(figure, workdir, "nonstationary_error.png")

  figure, axis = common.plt.subplots(figsize=(6.5, 4))
  for name, curves in results.items():
    seeds = curves["normalized_error"].shape[0]
    segments = curves["normalized_error"].reshape(seeds, config.num_segments, -1)[:, 1:]
    profile = moving_average(segments.mean(axis=1), max(1, window // 4))
    common.plot_mean_and_range(axis, np.arange(profile.shape[1]), profile,
                               common.display_name(config.optimizers[name]))
  axis.axhline(config.recovery_threshold, color="black", linestyle="--",
               label=f"recovery threshold {config.recovery_threshold}")
  axis.set_yscale("log")
  axis.set_xlabel("steps since the teacher jumped")
  axis.set_ylabel("normalized tracking error (mean over jumps)")
  axis.set_title("Recovery after a jump")
  axis.legend(fontsize=8)
  recovery = common.save_figure(figure, workdir, "nonstationary_recovery.png")

  rmsprop_names = [name for name in summaries
                   if config.optimizers[name].kind == "rmsprop"]
  plots = [timeline, recovery]
  if len(rmsprop_names) > 1:  # the trade-off needs at least two horizons to compare
    decays = [config.optimizers[name].decay for name in rmsprop_names]
    horizons = [1.0 / (1.0 - decay) for decay in decays]
    figure, (left, right) = common.plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, label in ((left, "recovery_steps", "recovery time (steps)"),
                             (right, "settled_error", "settled normalized error")):
      means = [summaries[name][key]["mean"] for name in rmsprop_names]
      stds = [summaries[name][key]["std"] for name in rmsprop_names]
      axis.errorbar(horizons, means, yerr=stds, marker="o", capsize=3)
      axis.set_xscale("log")
      axis.set_xlabel("RMSprop averaging horizon 1/(1 - decay), steps")
      axis.set_ylabel(label)
      for horizon, mean, decay in zip(horizons, means, decays, strict=True):
        axis.annotate(f"decay {decay}", (horizon, mean), fontsize=8,
                      textcoords="offset points", xytext=(4, 4))
    plots.append(common.save_figure(figure, workdir, "nonstationary_decay_tradeoff.png"))
  return plots


# Every field the study reads (the workdir's default reads ``name``); the command line refuses a
# config with a field more or less.
SCHEMA = ConfigSchema(
    job="experiments.studies.nonstationary",
    fields=(
        "name", "input_dim", "input_scale_range", "teacher_hidden_size",
        "student_hidden_size", "output_scale_range", "noise_std", "drift", "segment_length",
        "num_segments", "batch_size", "probe_size", "window", "recovery_threshold",
        "num_seeds", "seed", "optimizers",
    ),
    example="configs/studies/nonstationary.py",
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects configurations that cannot run, naming the offending field."""
  common.check_seeds(config.num_seeds)
  for field in ("num_segments", "segment_length", "batch_size", "input_dim",
                "teacher_hidden_size", "student_hidden_size", "window", "probe_size"):
    common.check_positive_int(f"config.{field}", config[field])
  if config.num_segments < 2:
    raise ValueError(f"config.num_segments must be >= 2 to have a jump, got "
                     f"{config.num_segments}.")
  if config.window > config.segment_length:
    raise ValueError(f"config.window ({config.window}) must not exceed config.segment_length "
                     f"({config.segment_length}).")
  if not 0.0 <= config.drift < 1.0:
    raise ValueError(f"config.drift must be in [0, 1), got {config.drift!r}.")
  if not config.optimizers:
    raise ValueError("config.optimizers is empty: nothing to compare.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every optimizer, writes summary.json, summary.md and the plots to ``workdir``."""
  check_config(config)
  stopwatch = common.Stopwatch()
  results = {name: run_optimizer(config, spec, name)
             for name, spec in config.optimizers.items()}
  summaries = {name: summarize_run(curves, config) for name, curves in results.items()}
  plots = make_plots(config, results, summaries, workdir)
  summary = {
      **common.run_record("nonstationary", config, stopwatch),
      "optimizers": {name: {"spec": config.optimizers[name].to_dict(), **numbers}
                     for name, numbers in summaries.items()},
      "plots": plots,
  }
  header = ["optimizer", "average regret", "mean normalized error",
            f"post-change error (first {config.window})",
            f"settled error (last {config.window})",
            f"recovery steps (to < {config.recovery_threshold})", "jumps recovered"]
  rows = [[name, common.format_mean_std(numbers["average_regret"]),
           common.format_mean_std(numbers["mean_normalized_error"]),
           common.format_mean_std(numbers["post_change_error"]),
           common.format_mean_std(numbers["settled_error"]),
           common.format_mean_std(numbers["recovery_steps"]),
           f"{numbers['fraction_recovered']:.0%}"]
          for name, numbers in summaries.items()]
  markdown = "\n\n".join([
      "# Non-stationary regression: tracking a drifting, jumping teacher",
      f"{common.seeds_note(config.num_seeds)}; {config.num_segments} segments of "
      f"{config.segment_length} steps, batch {config.batch_size}, drift {config.drift} per "
      f"step, output scale log-uniform in [1/{config.output_scale_range}, "
      f"{config.output_scale_range}]. Per-jump numbers leave out the first segment. Recovery "
      f"times that never happen count as {config.segment_length}. "
      f"{common.timing_note(summary)}",
      markdown_table(header, rows),
      common.optimizer_table(config.optimizers),
      common.plot_links(plots),
  ])
  common.write_outputs(workdir, summary, markdown)
  return summary


if __name__ == "__main__":
  common.run_main(train_and_evaluate, "configs/studies/nonstationary.py", SCHEMA)
