"""State formats: how closely each tracks float32 state, and the memory each saves.

Two measurements of the formats of :mod:`rmsprop_jax.formats` (results in ``docs/memory.md``):

* **Tracking**: a noisy gradient stream ``g_t = s * (1 + noise * z_t)`` (``config.shape``
  entries, per-entry scales ``s`` over ``config.scale_decades`` decades, ``z_t`` standard
  normal) runs ``config.num_steps`` steps of ``scale_by_rmsprop`` at each decay through float32
  state and through each format, side by side in one ``lax.scan``; the last step's
  ``|update / float32 update - 1|`` over all entries gives a median and a 90th percentile.
  The live ``bitsandbytes.optim.RMSprop8bit`` (and ``torch.optim.RMSprop``, float32, as the
  harness's control) run on the same stream, CPU tensors, parameters reset to 0 before each step
  so that ``-p / lr`` is the update exactly.
* **Memory**: bytes per parameter of each format's state (every leaf's ``nbytes``) and the
  compiled train step's ``memory_analysis()`` (arguments, outputs, aliased donations,
  temporaries) for DeepOBS's 2c2d CNN (the experiments' train step) and a GPT-2-shaped tree of
  over 100M parameters (quadratic loss), lowered from ``jax.ShapeDtypeStruct``s and compiled,
  never run. ``optax.sgd`` (no state) is the baseline: peak minus its peak is what the
  optimizer costs.

Writes ``summary.json``, ``summary.md`` and ``tracking.png`` to the workdir.

Usage::

  python -m benchmarks.state_formats [--config configs/benchmarks/state_formats.py[:quick]]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import optax

import rmsprop_jax
from experiments.common import cli
from experiments.common import hardware as hardware_lib
from experiments.common.config_schema import ConfigSchema
from experiments.common.tables import markdown_table
from rmsprop_jax import formats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be chosen first

# The formats measured, by name; None is float32 state (the library's default).
FORMATS: dict[str, Any] = {
    "float32": None,
    "bfloat16 nearest": formats.bfloat16("nearest"),
    "bfloat16 stochastic": formats.bfloat16("stochastic"),
    "int8 nearest": formats.int8(rounding="nearest"),
    "int8 stochastic": formats.int8(rounding="stochastic"),
    "factored": formats.factored(),
    "bitsandbytes_int8": formats.bitsandbytes_int8(),
}
LIVE_BITSANDBYTES = "bitsandbytes RMSprop8bit (live)"
LIVE_TORCH = "torch.optim.RMSprop float32 (control)"
STREAMS = ("iid", "rank1")
PROGRAMS = ("cnn_2c2d", "transformer", "transformer_update")

SCHEMA = ConfigSchema(
    job="benchmarks.state_formats",
    fields=(
        "name", "parts", "formats", "shape", "scale_decades", "noise", "num_steps", "decays",
        "eps", "streams", "include_torch", "memory_programs", "cnn_batch_size", "transformer",
        "seed",
    ),
    example="configs/benchmarks/state_formats.py",
)


def _check_config(config: ml_collections.ConfigDict) -> None:
  for name in config.formats:
    if name not in FORMATS:
      raise ValueError(f"config.formats has an unknown format {name!r}; known: {tuple(FORMATS)}.")
  for part in config.parts:
    if part not in ("tracking", "memory"):
      raise ValueError(f"config.parts has an unknown part {part!r}; known: tracking, memory.")
  for stream in config.streams:
    if stream not in STREAMS:
      raise ValueError(f"config.streams has an unknown stream {stream!r}; known: {STREAMS}.")
  for program in config.memory_programs:
    if program not in PROGRAMS:
      raise ValueError(f"config.memory_programs has an unknown program {program!r}; known: "
                       f"{PROGRAMS}.")


# ----------------------------------------------------------------------------------------------
# Tracking.


def gradient_scales(stream: str, shape: tuple[int, int], decades: float, key: jax.Array):
  """Per-entry scales ``s`` spanning ``decades`` decades: i.i.d. log-uniform, or rank 1."""
  rows, columns = shape
  if stream == "iid":
    return 10.0 ** (decades * (jax.random.uniform(key, shape) - 0.5))
  row_key, column_key = jax.random.split(key)
  r = 10.0 ** (decades / 2 * (jax.random.uniform(row_key, (rows, 1)) - 0.5))
  c = 10.0 ** (decades / 2 * (jax.random.uniform(column_key, (1, columns)) - 0.5))
  return r * c


def gradient_at(scales: jax.Array, noise: float, key: jax.Array, step: jax.Array) -> jax.Array:
  """``g_t = s * (1 + noise * z_t)``, ``z_t`` drawn from ``fold_in(key, step)``."""
  z = jax.random.normal(jax.random.fold_in(key, step), scales.shape)
  return scales * (1.0 + noise * z)


def relative_errors(update: np.ndarray, reference: np.ndarray) -> dict[str, float]:
  """Median and 90th percentile of ``|update / reference - 1|`` over all entries."""
  error = np.abs(np.asarray(update, np.float64) / np.asarray(reference, np.float64) - 1.0)
  return {"median": float(np.median(error)), "p90": float(np.percentile(error, 90))}


def track_format(fmt: Any, decay: float, eps: float, scales: jax.Array, noise: float,
                 key: jax.Array, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """The last step's updates of float32 state and of ``fmt`` on the same stream."""
  reference = rmsprop_jax.scale_by_rmsprop(decay, eps)
  tested = rmsprop_jax.scale_by_rmsprop(decay, eps, accumulator_dtype=fmt)

  @jax.jit
  def run(scales):
    def step(carry, t):
      reference_state, tested_state = carry
      g = gradient_at(scales, noise, key, t)
      reference_update, reference_state = reference.update(g, reference_state)
      tested_update, tested_state = tested.update(g, tested_state)
      return (reference_state, tested_state), (reference_update, tested_update)

    carry = (reference.init(scales), tested.init(scales))
    carry, _ = jax.lax.scan(lambda c, t: (step(c, t)[0], None), carry,
                            jnp.arange(num_steps - 1))
    _, updates = step(carry, jnp.int32(num_steps - 1))
    return updates

  reference_update, tested_update = jax.block_until_ready(run(scales))
  return np.asarray(reference_update), np.asarray(tested_update)


def track_torch(kind: str, decay: float, eps: float, scales: jax.Array, noise: float,
                key: jax.Array, num_steps: int) -> np.ndarray:
  """The last update of ``bitsandbytes`` RMSprop8bit or ``torch.optim.RMSprop`` on the stream.

  The parameter is set to 0 before each step and lr is 1, so the update is ``-p`` exactly.
  """
  import torch

  parameter = torch.nn.Parameter(torch.zeros(tuple(scales.shape)))
  optimizer: Any
  if kind == "bitsandbytes":
    import bitsandbytes

    optimizer = bitsandbytes.optim.RMSprop8bit([parameter], lr=1.0, alpha=decay, eps=eps)
  else:
    optimizer = torch.optim.RMSprop([parameter], lr=1.0, alpha=decay, eps=eps)
  draw = jax.jit(lambda t: gradient_at(scales, noise, key, t))
  for t in range(num_steps):
    with torch.no_grad():
      parameter.zero_()
    parameter.grad = torch.from_numpy(np.array(draw(jnp.int32(t))))
    optimizer.step()
  return -parameter.detach().numpy().copy()


def available(module: str) -> bool:
  try:
    __import__(module)
  except ImportError:
    return False
  return True


def run_tracking(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{stream: {decay: {name: {"median", "p90"}}}}`` and the seconds each run took."""
  key = jax.random.PRNGKey(config.seed)
  scale_key, noise_key = jax.random.split(key)
  num_rows, num_columns = (int(size) for size in config.shape)
  shape = (num_rows, num_columns)
  live = []
  if config.include_torch and available("torch"):
    live.append((LIVE_TORCH, "torch"))
    if available("bitsandbytes"):
      live.append((LIVE_BITSANDBYTES, "bitsandbytes"))
  results: dict[str, Any] = {}
  seconds: dict[str, float] = {}
  for stream in config.streams:
    scales = gradient_scales(stream, shape, config.scale_decades, scale_key)
    # The rank-1 stream is there for the factored format; the others are measured on "iid".
    names = [n for n in config.formats if n != "float32" and (stream == "iid" or n == "factored")]
    per_decay: dict[str, Any] = {}
    for decay in config.decays:
      rows: dict[str, Any] = {}
      reference = None
      for name in names:
        start = time.perf_counter()
        reference, update = track_format(FORMATS[name], decay, config.eps, scales, config.noise,
                                         noise_key, config.num_steps)
        seconds[f"{stream} {decay} {name}"] = time.perf_counter() - start
        rows[name] = relative_errors(update, reference)
      if stream == "iid":
        if reference is None:
          reference, _ = track_format(None, decay, config.eps, scales, config.noise, noise_key,
                                      config.num_steps)
        for name, kind in live:
          start = time.perf_counter()
          update = track_torch(kind, decay, config.eps, scales, config.noise, noise_key,
                               config.num_steps)
          seconds[f"{stream} {decay} {name}"] = time.perf_counter() - start
          rows[name] = relative_errors(update, reference)
      per_decay[str(decay)] = rows
    results[stream] = per_decay
  return {"errors": results, "seconds": seconds, "live": [name for name, _ in live]}


def plot_tracking(tracking: Mapping[str, Any], decays: Sequence[float], workdir: str) -> str:
  """Median (bar) and 90th percentile (whisker) per format and decay, log scale, iid stream."""
  errors = tracking["errors"]["iid"]
  names = list(errors[str(decays[0])])
  figure, axis = plt.subplots(figsize=(9, 4.2))
  width = 0.8 / len(decays)
  for index, decay in enumerate(decays):
    rows = errors[str(decay)]
    x = np.arange(len(names)) + (index - (len(decays) - 1) / 2) * width
    median = np.array([rows[n]["median"] for n in names])
    p90 = np.array([rows[n]["p90"] for n in names])
    axis.bar(x, median, width, label=f"decay {decay}: median", alpha=0.85)
    axis.errorbar(x, median, yerr=[np.zeros_like(p90), p90 - median], fmt="none", ecolor="k",
                  elinewidth=0.8, capsize=2)
  axis.set_yscale("log")
  axis.set_xticks(np.arange(len(names)))
  axis.set_xticklabels([n.replace(" (", "\n(").replace("torch.optim.", "torch ") for n in names],
                      fontsize=7, rotation=25, ha="right")
  axis.set_ylabel("|update / float32 update - 1|\n(bar: median, whisker: 90th pct.)")
  axis.grid(True, axis="y", which="both", alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  path = os.path.join(workdir, "tracking.png")
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


# ----------------------------------------------------------------------------------------------
# Memory.


def transformer_shapes(layers: int, width: int, mlp: int, vocab: int,
                       positions: int) -> dict[str, tuple[int, ...]]:
  """GPT-2's leaves: embeddings, per layer two layer norms, attention and MLP with biases."""
  shapes: dict[str, tuple[int, ...]] = {"token_embedding": (vocab, width),
                                        "position_embedding": (positions, width)}
  for layer in range(layers):
    prefix = f"layer{layer:02d}_"
    shapes.update({
        prefix + "ln1_scale": (width,), prefix + "ln1_bias": (width,),
        prefix + "qkv_kernel": (width, 3 * width), prefix + "qkv_bias": (3 * width,),
        prefix + "proj_kernel": (width, width), prefix + "proj_bias": (width,),
        prefix + "ln2_scale": (width,), prefix + "ln2_bias": (width,),
        prefix + "mlp_in_kernel": (width, mlp), prefix + "mlp_in_bias": (mlp,),
        prefix + "mlp_out_kernel": (mlp, width), prefix + "mlp_out_bias": (width,),
    })
  shapes.update({"final_ln_scale": (width,), "final_ln_bias": (width,)})
  return shapes


def optimizers(names: Sequence[str]) -> dict[str, optax.GradientTransformation]:
  """``optax.sgd`` (no state, the baseline) and rmsprop_jax.rmsprop with each format."""
  result = {"optax.sgd (no state)": optax.sgd(1e-3)}
  for name in names:
    result[name] = rmsprop_jax.rmsprop(1e-3, accumulator_dtype=FORMATS[name])
  return result


def _analysis(compiled: Any) -> dict[str, int]:
  memory = compiled.memory_analysis()
  found = {key: int(getattr(memory, f"{key}_size_in_bytes"))
           for key in ("argument", "output", "alias", "temp", "generated_code")}
  # Donated arguments alias outputs: counted once.
  found["peak"] = found["argument"] + found["output"] - found["alias"] + found["temp"]
  return found


def cnn_program(optimizer: optax.GradientTransformation, batch_size: int) -> tuple[Any, Any]:
  """The experiments' train step of DeepOBS's 2c2d (32/64 channels, dense 1024), abstract."""
  from experiments.classification import model_spec, steps

  spec = model_spec.ModelSpec.create("2c2d", (28, 28, 1), 10)
  graphdef = model_spec.model_graphdef(spec)
  key = jax.random.PRNGKey(0)
  state = jax.eval_shape(lambda: steps.init_train_state(spec, optimizer, key))
  batch = (jax.ShapeDtypeStruct((batch_size, 28, 28, 1), jnp.float32),
           jax.ShapeDtypeStruct((batch_size,), jnp.int32))
  step = jax.jit(lambda state, batch, rng: steps.train_step(graphdef, optimizer, state, batch, rng),
                 donate_argnums=(0,))
  return step.lower(state, batch, key).compile(), state.params


def tree_program(optimizer: optax.GradientTransformation, shapes: Mapping[str, tuple[int, ...]]):
  """A full step of a quadratic loss on an abstract tree: backward, update, apply; donated."""
  params = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in shapes.items()}
  opt_state = jax.eval_shape(optimizer.init, params)

  def step(params, opt_state):
    grads = jax.grad(lambda p: 0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p)))(
        params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state).compile(), params


def update_program(optimizer: optax.GradientTransformation, shapes: Mapping[str, tuple[int, ...]]):
  r"""The optimizer's step alone on an abstract tree: gradients in, update, apply; donated.

  The gradients are an argument, as a model's backward pass leaves them (written out by its
  matrix products), so the temporaries are the optimizer's own. In :func:`tree_program`'s
  quadratic loss the gradient is the parameter itself (:math:`\partial_x \tfrac12 x^2 = x`):
  a format whose encoding reads the gradient in a pass of its own (the 8-bit formats') then
  needs a copy of the donated parameters, which the update overwrites in place.
  """
  params = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in shapes.items()}
  opt_state = jax.eval_shape(optimizer.init, params)

  def step(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, params).compile(), params


def run_memory(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Per program: parameter count and per optimizer its state bytes and compiled memory."""
  results: dict[str, Any] = {}
  for program in config.memory_programs:
    entries: dict[str, Any] = {}
    num_params = 0
    for name, optimizer in optimizers(config.formats).items():
      start = time.perf_counter()
      if program == "cnn_2c2d":
        compiled, params = cnn_program(optimizer, config.cnn_batch_size)
      elif program == "transformer":
        compiled, params = tree_program(optimizer, transformer_shapes(**config.transformer))
      else:
        compiled, params = update_program(optimizer, transformer_shapes(**config.transformer))
      num_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
      state = jax.eval_shape(optimizer.init, params)
      entries[name] = {"state_bytes": formats.state_nbytes(state), **_analysis(compiled),
                       "compile_s": time.perf_counter() - start}
    results[program] = {"num_params": int(num_params), "optimizers": entries}
  return results


# ----------------------------------------------------------------------------------------------
# Report.


def _percent(value: float) -> str:
  return f"{100 * value:.2g} %" if value < 0.1 else f"{100 * value:.0f} %"


def markdown_report(summary: Mapping[str, Any]) -> str:
  """The tables of ``summary.md``."""
  config = summary["config"]
  lines = ["# State formats: tracking and memory", "",
           f"Machine: {hardware_lib.summary_line(summary['hardware'])}. Load average at start: "
           f"{summary['hardware']['load_average_at_start']}. XLA_FLAGS: "
           f"{summary['xla_flags'] or '(none)'}. Wall time {summary['wall_time_s']:.0f} s.", ""]
  if "tracking" in summary:
    errors = summary["tracking"]["errors"]
    decays = [str(d) for d in config["decays"]]
    rows_of: dict[str, list[str]] = {}
    for stream, per_decay in errors.items():
      for decay in decays:
        for name, value in per_decay[decay].items():
          label = name if stream == "iid" else f"{name} ({stream} scales)"
          rows_of.setdefault(label, []).append(
              f"{_percent(value['median'])} / {_percent(value['p90'])}")
    shape = config["shape"]
    lines += [f"Tracking: {shape[0]}x{shape[1]} entries, scales over {config['scale_decades']:g} "
              f"decades, noise {config['noise']:g}, {config['num_steps']} steps; "
              "|update / float32 update - 1| at the last step, median / 90th percentile:", ""]
    lines.append(markdown_table(["state", *[f"decay {d}" for d in decays]],
                                [[label, *cells] for label, cells in rows_of.items()],
                                align=["left"] + ["right"] * len(decays)))
    lines.append("")
  if "memory" in summary:
    for program, found in summary["memory"].items():
      n = found["num_params"]
      lines += [f"Memory, {program} ({n:,} parameters; bytes per parameter; peak = arguments + "
                "outputs - aliased + temporaries):", ""]
      baseline = found["optimizers"]["optax.sgd (no state)"]["peak"]
      rows = []
      for name, entry in found["optimizers"].items():
        rows.append([name, f"{entry['state_bytes'] / n:.3f}", f"{entry['argument'] / n:.2f}",
                     f"{entry['temp'] / n:.2f}", f"{entry['peak'] / n:.2f}",
                     f"{(entry['peak'] - baseline) / n:.2f}", f"{entry['peak'] / 2**20:.1f}"])
      lines.append(markdown_table(
          ["optimizer", "state", "arguments", "temporaries", "peak", "peak - SGD's",
           "peak MiB"], rows, align=["left"] + ["right"] * 6))
      lines.append("")
  lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in summary["plots"]]
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the parts of ``config.parts``; writes ``summary.json``, ``summary.md`` and the plot."""
  _check_config(config)
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  summary: dict[str, Any] = {"config": config.to_dict(), "hardware": hardware_lib.describe(),
                             "xla_flags": os.environ.get("XLA_FLAGS", ""), "plots": []}
  if "tracking" in config.parts:
    summary["tracking"] = run_tracking(config)
    if "iid" in summary["tracking"]["errors"]:
      summary["plots"].append(plot_tracking(summary["tracking"], config.decays, workdir))
  if "memory" in config.parts:
    summary["memory"] = run_memory(config)
  summary["wall_time_s"] = time.perf_counter() - start
  with open(os.path.join(workdir, "summary.json"), "w") as handle:
    json.dump(summary, handle, indent=2)
  with open(os.path.join(workdir, "summary.md"), "w") as handle:
    handle.write(markdown_report(summary))
  return summary


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m benchmarks.state_formats [--config configs/benchmarks/state_formats.py]``."""

  def job(config: ml_collections.ConfigDict, workdir: str) -> None:
    summary = run(config, workdir)
    print(open(os.path.join(workdir, "summary.md")).read())
    print(f"wrote {workdir}/summary.json, summary.md in {summary['wall_time_s']:.1f} s")

  cli.run_job(job, default_config="configs/benchmarks/state_formats.py", schema=SCHEMA, argv=argv)


if __name__ == "__main__":
  main()
