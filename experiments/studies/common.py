"""Pieces the three studies share: optimizers from configs, seed stacking, the chunked training
loop, outputs, entry point.

Every study compares optimizers over several seeds. One training run is a pure function of a
random key, so the seeds of one optimizer are trained together by ``jax.vmap`` inside a single
compiled program; the steps are a ``jax.lax.scan`` cut into chunks so that a progress bar can
advance and evaluations can run between chunks. A study's ``run_optimizer`` builds the seeds'
states with :func:`init_seed_states` and trains them with :func:`train_in_chunks`; its own code
is the data, the model, the chunk function and the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from experiments.common import cli
from experiments.common import hardware as hardware_lib
from experiments.common import optimizers as optimizer_lib
from experiments.common.config_schema import ConfigSchema
from experiments.common.serialization import to_jsonable
from experiments.common.tables import markdown_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be chosen first

OPTIMIZER_KINDS = optimizer_lib.OPTIMIZERS

# Keys every summary.json carries, whatever the study; tests check them.
SUMMARY_KEYS = ("study", "config", "hardware", "wall_time_s", "seeds", "optimizers", "plots")


def make_optimizer(spec: Mapping[str, Any]) -> optax.GradientTransformation:
  """Builds the optimizer a study's config entry describes (:func:`.optimizers.make_optimizer`).

  ``spec["kind"]`` names the optimizer (one of :data:`OPTIMIZER_KINDS`); an optional
  ``clip_norm`` clips the global gradient norm first; every other key is a hyperparameter of
  that optimizer, and an unknown one is an error (the one factory's rule).

  Args:
    spec: a mapping (``ConfigDict`` or ``dict``) with ``kind`` and ``learning_rate``.

  Returns:
    An optax gradient transformation.
  """
  hparams = dict(spec)
  kind = hparams.pop("kind", None)
  if kind not in OPTIMIZER_KINDS:
    raise ValueError(f"spec['kind'] must be one of {OPTIMIZER_KINDS}, got {kind!r}.")
  clip_norm = hparams.pop("clip_norm", None)
  optimizer = optimizer_lib.make_optimizer(kind, hparams)
  if clip_norm is not None:
    if not clip_norm > 0:
      raise ValueError(f"spec['clip_norm'] must be positive or None, got {clip_norm!r}.")
    optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
  return optimizer


def describe_optimizer(spec: Mapping[str, Any]) -> str:
  """A one-line human-readable description of an optimizer spec, for tables."""
  details = ", ".join(f"{key}={value}" for key, value in dict(spec).items() if key != "kind")
  return f"{spec['kind']}({details})"


def display_name(spec: Mapping[str, Any]) -> str:
  """The legend label of an optimizer spec: its kind, and what sets an RMSprop variant apart.

  >>> display_name({"kind": "rmsprop", "learning_rate": 0.01, "decay": 0.999, "centered": True})
  'RMSprop (decay 0.999, centered)'
  """
  spec = dict(spec)
  name = optimizer_lib.OPTIMIZER_LABELS[spec["kind"]]
  if spec["kind"] != "rmsprop":
    return name
  details = [f"decay {spec.get('decay', 0.9):g}"]
  details += [label for key, label in (("centered", "centered"), ("bias_correction", "debiased"),
                                       ("eps_in_sqrt", "eps in sqrt"), ("nesterov", "Nesterov"))
              if spec.get(key)]
  if spec.get("momentum") is not None:
    details.append(f"momentum {spec['momentum']:g}")
  return f"{name} ({', '.join(details)})"


def check_seeds(num_seeds: int) -> None:
  """Raises ``ValueError`` unless ``num_seeds`` is a positive integer."""
  if not isinstance(num_seeds, int) or num_seeds < 1:
    raise ValueError(f"config.num_seeds must be a positive integer, got {num_seeds!r}.")


def check_positive_int(name: str, value: Any) -> None:
  """Raises ``ValueError`` naming ``name`` unless ``value`` is a positive integer."""
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def stack_trees(trees: Sequence[Any]) -> Any:
  """Stacks identically structured pytrees along a new leading (seed) axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def global_norm(tree: Any) -> jax.Array:
  """The Euclidean norm of all leaves of ``tree`` taken together."""
  return optax.tree.norm(tree)


def chunk_sizes(num_steps: int, chunk: int) -> list[int]:
  """Splits ``num_steps`` into chunks of ``chunk`` steps (the last one may be shorter)."""
  check_positive_int("num_steps", num_steps)
  check_positive_int("chunk", chunk)
  sizes = [chunk] * (num_steps // chunk)
  if num_steps % chunk:
    sizes.append(num_steps % chunk)
  return sizes


def seed_list(config: ml_collections.ConfigDict) -> list[int]:
  """The run's seeds: ``config.num_seeds`` consecutive integers from ``config.seed``."""
  return [config.seed + offset for offset in range(config.num_seeds)]


def init_seed_states(
    seeds: Sequence[int], init_seed: Callable[[int], tuple[nnx.GraphDef, dict[str, Any]]],
) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """Builds each seed's training state with ``init_seed`` and stacks them along a seed axis.

  Returns the model's graph definition (the same for every seed) and the stacked state.
  """
  if not seeds:
    raise ValueError("seeds is empty: nothing to train.")
  built = [init_seed(seed) for seed in seeds]
  return built[0][0], stack_trees([state for _, state in built])


def to_numpy(tree: Any) -> Any:
  """``tree`` with every leaf converted to a NumPy array."""
  return jax.tree.map(np.asarray, tree)


@dataclasses.dataclass
class ChunkedRun:
  """The result of :func:`train_in_chunks`; every array has the seed axis first.

  Attributes:
    state: the seed-stacked state after the last chunk.
    steps: the step count before the first chunk (0) and after each chunk.
    outputs: ``train_chunk``'s per-step outputs, concatenated over chunks along axis 1.
    evaluations: ``evaluate``'s results (NumPy pytrees) at ``steps``; empty without ``evaluate``.
  """

  state: Any
  steps: np.ndarray
  outputs: Any
  evaluations: list[Any]


def train_in_chunks(
    train_chunk: Callable[[Any, Any], tuple[Any, Any]],
    state: Any,
    sizes: Sequence[int],
    description: str,
    *,
    chunk_argument: Callable[[int, int], Any] | None = None,
    evaluate: Callable[[Any], Any] | None = None,
    postfix: Callable[[Any], Mapping[str, str]] | None = None,
) -> ChunkedRun:
  """Runs ``train_chunk`` once per entry of ``sizes`` behind a tqdm bar and collects its outputs.

  Args:
    train_chunk: ``(state, argument) -> (state, per-step outputs)``, a study's jitted,
      seed-vmapped ``jax.lax.scan``.
    state: the seed-stacked initial state.
    sizes: the chunks' numbers of steps, e.g. from :func:`chunk_sizes`.
    description: the progress bar's label.
    chunk_argument: ``(first step, size) -> argument`` of ``train_chunk``; the size by default.
    evaluate: ``state -> metrics``, run before the first chunk and after each one.
    postfix: ``latest metrics -> {name: text}`` shown on the progress bar.

  Returns:
    The final state, the evaluation steps, the concatenated outputs and the evaluations.
  """
  if not sizes:
    raise ValueError("sizes is empty: nothing to train.")
  steps, outputs = [0], []
  evaluations = [] if evaluate is None else [to_numpy(evaluate(state))]
  with tqdm(total=sum(sizes), desc=description, leave=False) as progress:
    for size in sizes:
      argument = size if chunk_argument is None else chunk_argument(steps[-1], size)
      state, chunk_outputs = train_chunk(state, argument)
      outputs.append(to_numpy(chunk_outputs))
      steps.append(steps[-1] + size)
      if evaluate is not None:
        evaluations.append(to_numpy(evaluate(state)))
      progress.update(size)
      if postfix is not None and evaluations:
        progress.set_postfix(**postfix(evaluations[-1]))
  concatenated = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *outputs)
  return ChunkedRun(state=state, steps=np.asarray(steps), outputs=concatenated,
                    evaluations=evaluations)


def mean_std(values: Any) -> dict[str, float]:
  """Mean and (population) standard deviation over seeds, as floats for JSON."""
  array = np.asarray(values, dtype=np.float64)
  return {"mean": float(np.mean(array)), "std": float(np.std(array))}


def format_mean_std(stats: Mapping[str, float], digits: int = 3) -> str:
  """``"mean ± std"`` with ``digits`` significant digits; ``n/a`` for a NaN mean."""
  if stats["mean"] is None or math.isnan(stats["mean"]):
    return "n/a"
  if abs(stats["mean"]) >= 100:  # step counts: whole numbers read better than 1.1e+03
    return f"{stats['mean']:.0f} ± {stats['std']:.0f}"
  return f"{stats['mean']:.{digits}g} ± {stats['std']:.{digits - 1}g}"


def first_step_below(steps: np.ndarray, curve: np.ndarray, threshold: float) -> float:
  """The first step at which ``curve`` drops below ``threshold``; NaN if it never does."""
  below = np.nonzero(np.asarray(curve) < threshold)[0]
  return float(steps[below[0]]) if below.size else math.nan


def run_record(study: str, config: ml_collections.ConfigDict, stopwatch: Stopwatch
               ) -> dict[str, Any]:
  """The keys every summary.json starts with: study, config, hardware, times and seeds."""
  wall_time = stopwatch.seconds()
  return {
      "study": study,
      "config": config,
      "hardware": hardware_lib.describe(),
      "wall_time_s": wall_time,
      "cpu_time_s": stopwatch.cpu_seconds(),
      "seeds": seed_list(config),
  }


def seeds_note(num_seeds: int) -> str:
  """The summaries' note on how seeds are aggregated in tables and plots."""
  return f"{num_seeds} seeds (tables: mean ± std; plots: mean, min-max range shaded)"


def timing_note(summary: Mapping[str, Any]) -> str:
  """The summaries' sentence on wall time, CPU time and the machine, from a :func:`run_record`."""
  return (f"Wall time {summary['wall_time_s']:.0f} s (CPU time {summary['cpu_time_s']:.0f} s) "
          f"on {hardware_lib.summary_line(summary['hardware'])}.")


def optimizer_table(optimizers: Mapping[str, Mapping[str, Any]]) -> str:
  """A Markdown table of the optimizers' names and specs."""
  return markdown_table(["name", "optimizer"],
                        [[name, describe_optimizer(spec)] for name, spec in optimizers.items()])


def plot_links(plots: Sequence[str]) -> str:
  """Markdown image links to the plots, one a line."""
  return "\n".join(f"![{plot}]({plot})" for plot in plots)


def write_outputs(workdir: str, summary: Mapping[str, Any], markdown: str) -> None:
  """Writes ``summary.json`` and ``summary.md`` into ``workdir``."""
  missing = [key for key in SUMMARY_KEYS if key not in summary]
  if missing:
    raise ValueError(f"summary is missing the keys {missing}.")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "summary.json"), "w") as handle:
    json.dump(to_jsonable(summary), handle, indent=2, allow_nan=False)
  with open(os.path.join(workdir, "summary.md"), "w") as handle:
    handle.write(markdown.rstrip() + "\n")


def plot_mean_and_range(
    axis: plt.Axes,
    steps: np.ndarray,
    curves: np.ndarray,
    label: str,
    *,
    color: Any = None,
    linestyle: str = "-",
) -> None:
  """Plots the mean over seeds (axis 0 of ``curves``) and shades the seeds' min-max range.

  The range rather than ±1 std is shaded because most plots have a log axis, on which
  ``mean - std`` is often negative.
  """
  curves = np.asarray(curves, dtype=np.float64)
  (line,) = axis.plot(steps, curves.mean(axis=0), label=label, color=color, linestyle=linestyle,
                      linewidth=1.2)
  axis.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=line.get_color(),
                    alpha=0.15, linewidth=0)


def save_figure(figure: plt.Figure, workdir: str, filename: str) -> str:
  """Saves ``figure`` as a PNG in ``workdir``, closes it and returns the file name."""
  os.makedirs(workdir, exist_ok=True)
  figure.tight_layout()
  figure.savefig(os.path.join(workdir, filename), dpi=110)
  plt.close(figure)
  return filename


class Stopwatch:
  """Wall-clock and CPU time since construction, for the summaries.

  Both are reported because the machine the numbers come from is shared: wall time then
  overstates the cost of a run, while the process's CPU time does not.
  """

  def __init__(self) -> None:
    self.start = time.perf_counter()
    self.cpu_start = time.process_time()

  def seconds(self) -> float:
    return time.perf_counter() - self.start

  def cpu_seconds(self) -> float:
    return time.process_time() - self.cpu_start


def run_main(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], Mapping[str, Any]],
    default_config: str,
    schema: ConfigSchema,
) -> None:
  """The command line every study shares: :func:`experiments.common.cli.run_job` over
  ``train_and_evaluate`` (``--config configs/studies/<study>.py[:quick]``, ``--workdir``); a
  config must hold exactly the fields of the study's ``schema``."""

  def study(config: ml_collections.ConfigDict, workdir: str) -> None:
    summary = train_and_evaluate(config, workdir)
    print(f"wrote {workdir}/summary.json, summary.md and {len(summary['plots'])} plots "
          f"in {summary['wall_time_s']:.1f} s")

  cli.run_job(study, default_config=default_config, schema=schema)
