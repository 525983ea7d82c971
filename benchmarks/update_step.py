"""Update-step speed, optimizer-state memory and compile time of RMSprop implementations.

Paired rounds in random order over rmsprop_jax's variants, optax and PyTorch, on one-leaf and
ResNet-50-shaped trees; the method, the byte accounting and the results are in
``docs/benchmarks.md``. Writes ``benchmark.json``, ``benchmark.md`` and PNG plots.

Usage::

  python -m benchmarks.update_step [--config configs/benchmarks/benchmark.py:quick] [--workdir DIR]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

# PyTorch's OpenMP threads otherwise spin for a while after each parallel loop, stealing the
# cores from whichever JAX step runs next in the round; it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

import rmsprop_jax
from experiments.common import cli
from experiments.common import hardware as hardware_lib
from experiments.common.hlo import count_passes
from experiments.common.tables import markdown_table
from rmsprop_jax import formats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be chosen first

TREE_SHAPES = ("one_leaf", "resnet50")

# Every implementation, and the one it is compared with (None: no paired reference).
REFERENCE_OF = {
    "rmsprop_jax": "optax.rmsprop",
    "rmsprop_jax centered": "optax.rmsprop centered",
    "rmsprop_jax momentum": "optax.rmsprop momentum",
    "rmsprop_jax bf16": "optax.rmsprop",
    "optax.rmsprop": None,
    # A second, identical optax.rmsprop: its ratio to the first is the noise floor of a ratio.
    "optax.rmsprop (A/A)": "optax.rmsprop",
    "optax.rmsprop centered": None,
    "optax.rmsprop momentum": None,
    "optax.sgd": None,
    "optax.adam": None,
    "torch for-loop": None,
    "torch foreach": None,
}
OURS = ("rmsprop_jax", "rmsprop_jax centered", "rmsprop_jax momentum", "rmsprop_jax bf16")
# The state formats of rmsprop_jax.formats, each paired with float32 state ("rmsprop_jax"); run
# when named in config.state_formats. On a one-leaf (1-D) tree "factored" stores float32 per
# entry (only leaves of >= 2 dimensions are factored).
STATE_FORMATS = {
    "bfloat16 stochastic": formats.bfloat16("stochastic"),
    "int8 stochastic": formats.int8(rounding="stochastic"),
    "int8 nearest": formats.int8(rounding="nearest"),
    "factored": formats.factored(),
    "bitsandbytes_int8": formats.bitsandbytes_int8(),
}
FORMAT_PREFIX = "rmsprop_jax state "
for _name in STATE_FORMATS:
  REFERENCE_OF[FORMAT_PREFIX + _name] = "rmsprop_jax"
TORCH = ("torch for-loop", "torch foreach")
CONTROL = "optax.rmsprop (A/A)"

# Keys benchmark.json always carries; tests check them.
RESULT_KEYS = ("benchmark", "config", "hardware", "wall_time_s", "cases", "state_bytes",
               "hlo_passes", "compile", "sweep", "targets", "plots")
CASE_KEYS = ("tree", "target_size", "num_params", "num_leaves", "rounds", "median_ms",
             "ratio_to_reference", "ratio_to_torch", "bytes_per_param", "bandwidth_gbs",
             "bandwidth_vs_sgd")


# ----------------------------------------------------------------------------------------------
# Parameter trees.


def resnet50_shapes(width: float) -> list[tuple[int, ...]]:
  """Leaf shapes of ResNet-50 (v1.5, 1000 classes) with every channel count times ``width``.

  Each convolution kernel is ``(k, k, in, out)`` and followed by a batch-norm scale and bias;
  four bottleneck stages of 3, 4, 6 and 3 blocks, a projection shortcut opening each stage,
  and a dense classifier: 161 leaves, 25.6M parameters at ``width=1``.
  """
  if width <= 0:
    raise ValueError(f"width must be positive, got {width}.")
  channels = lambda count: max(1, round(count * width))
  shapes: list[tuple[int, ...]] = []

  def conv_bn(kernel: int, fan_in: int, fan_out: int) -> None:
    shapes.extend([(kernel, kernel, fan_in, fan_out), (fan_out,), (fan_out,)])

  conv_bn(7, 3, channels(64))
  fan_in = channels(64)
  for base, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True):
    inner, outer = channels(base), channels(4 * base)
    for block in range(blocks):
      conv_bn(1, fan_in, inner)
      conv_bn(3, inner, inner)
      conv_bn(1, inner, outer)
      if block == 0:
        conv_bn(1, fan_in, outer)
      fan_in = outer
  shapes.extend([(fan_in, 1000), (1000,)])
  return shapes


def tree_shapes(tree: str, size: int) -> list[tuple[int, ...]]:
  """The leaf shapes of a ``tree`` (one of :data:`TREE_SHAPES`) of about ``size`` parameters.

  For ``resnet50`` the width multiplier is found by bisection; the count is matched to within
  the rounding of channel counts.
  """
  if size < 1:
    raise ValueError(f"size must be a positive parameter count, got {size}.")
  if tree == "one_leaf":
    return [(size,)]
  if tree != "resnet50":
    raise ValueError(f"tree must be one of {TREE_SHAPES}, got {tree!r}.")
  count = lambda width: sum(math.prod(shape) for shape in resnet50_shapes(width))
  low, high = 1e-3, 64.0
  for _ in range(60):
    middle = math.sqrt(low * high)
    low, high = (middle, high) if count(middle) < size else (low, middle)
  return min((resnet50_shapes(low), resnet50_shapes(high)), key=lambda s: abs(size - sum(
      math.prod(shape) for shape in s)))


def random_tree(shapes: Sequence[tuple[int, ...]], key: jax.Array, scale: float = 1.0):
  """A dict of float32 normal leaves, one per shape, keyed ``leaf000``, ``leaf001`` ..."""
  keys = jax.random.split(key, len(shapes))
  return {f"leaf{i:03d}": scale * jax.random.normal(k, shape, jnp.float32)
          for i, (k, shape) in enumerate(zip(keys, shapes, strict=True))}


# ----------------------------------------------------------------------------------------------
# Implementations.


def jax_optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
  """The JAX implementations, named as in :data:`REFERENCE_OF`, eps outside the root."""
  lr, decay, eps, momentum = config.learning_rate, config.decay, config.eps, config.momentum
  optax_rms = lambda **kw: optax.rmsprop(lr, decay=decay, eps=eps, eps_in_sqrt=False, **kw)
  ours = lambda **kw: rmsprop_jax.rmsprop(lr, decay=decay, eps=eps, **kw)
  return {
      "rmsprop_jax": ours(),
      "rmsprop_jax centered": ours(centered=True),
      "rmsprop_jax momentum": ours(momentum=momentum),
      "rmsprop_jax bf16": ours(accumulator_dtype=jnp.bfloat16),
      "optax.rmsprop": optax_rms(),
      "optax.rmsprop (A/A)": optax_rms(),
      "optax.rmsprop centered": optax_rms(centered=True),
      "optax.rmsprop momentum": optax_rms(momentum=momentum),
      "optax.sgd": optax.sgd(lr),
      "optax.adam": optax.adam(lr),
      **{FORMAT_PREFIX + name: ours(accumulator_dtype=STATE_FORMATS[name])
         for name in config.state_formats},
  }


def make_update_step(optimizer: optax.GradientTransformation) -> jax.stages.Wrapped:
  """``(params, state, grads) -> (params, state)``: update and apply, jitted, donating both."""

  def update_step(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(update_step, donate_argnums=(0, 1))


class JaxRunner:
  """Runs one jitted update step of an optax optimizer on its own copy of the parameters."""

  def __init__(self, optimizer: optax.GradientTransformation, params: Any, grads: Any):
    self.params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    self.opt_state = optimizer.init(self.params)
    self.grads = grads
    self.compiled = make_update_step(optimizer).lower(self.params, self.opt_state, grads).compile()

  def __call__(self) -> float:
    """One step; returns its wall time in seconds (dispatch to completion)."""
    start = time.perf_counter()
    self.params, self.opt_state = self.compiled(self.params, self.opt_state, self.grads)
    jax.block_until_ready((self.params, self.opt_state))
    return time.perf_counter() - start

  def state_bytes(self) -> int:
    return optimizer_state_bytes(self.opt_state)


class TorchRunner:
  """Runs ``torch.optim.RMSprop.step()`` (for-loop or foreach) on tensors with fixed grads."""

  def __init__(self, config: ml_collections.ConfigDict, params: Any, grads: Any, foreach: bool):
    import torch  # optional: only when torch is installed and asked for

    self.torch = torch
    self.tensors = []
    for leaf, grad in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True):
      tensor = torch.from_numpy(np.array(leaf, copy=True))
      tensor.grad = torch.from_numpy(np.array(grad, copy=True))
      self.tensors.append(tensor)
    self.optimizer = torch.optim.RMSprop(
        self.tensors, lr=config.learning_rate, alpha=config.decay, eps=config.eps,
        foreach=foreach,
    )

  def __call__(self) -> float:
    start = time.perf_counter()
    self.optimizer.step()
    return time.perf_counter() - start

  def state_bytes(self) -> int:
    return sum(value.numel() * value.element_size()
               for state in self.optimizer.state.values() for value in state.values()
               if isinstance(value, self.torch.Tensor))


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def optimizer_state_bytes(opt_state: Any) -> int:
  """Bytes of every array in an optax state (scalar step counters included)."""
  return sum(int(np.dtype(leaf.dtype).itemsize) * int(np.size(leaf))
             for leaf in jax.tree.leaves(opt_state))


def bytes_that_must_move(param_bytes: float, state_bytes: float) -> float:
  """Per parameter: read parameter and gradient, write parameter, read and write the state."""
  return 3 * param_bytes + 2 * state_bytes


# ----------------------------------------------------------------------------------------------
# Measurement.


def paired_rounds(
    runners: Mapping[str, Callable[[], float]],
    *,
    warmup_steps: int,
    min_rounds: int,
    max_rounds: int,
    time_budget_s: float,
    seed: int = 0,
) -> dict[str, list[float]]:
  """Step times (seconds) of every runner, one per round, in a fresh random order each round.

  A fixed or rotating order would give every runner the same predecessor in most rounds, and
  a predecessor can slow its successor (threads still spinning, caches evicted).
  """
  if min_rounds < 1 or max_rounds < min_rounds:
    raise ValueError(
        f"need 1 <= min_rounds <= max_rounds, got min_rounds={min_rounds}, "
        f"max_rounds={max_rounds}."
    )
  names = list(runners)
  for name in names:
    for _ in range(warmup_steps):
      runners[name]()
  times: dict[str, list[float]] = {name: [] for name in names}
  order_rng = np.random.default_rng(seed)
  start = time.perf_counter()
  for round_index in range(max_rounds):
    for index in order_rng.permutation(len(names)):
      times[names[index]].append(runners[names[index]]())
    if round_index + 1 >= min_rounds and time.perf_counter() - start >= time_budget_s:
      break
  return times


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
  """Median over rounds of ``numerator[r] / denominator[r]``."""
  return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


def run_case(
    config: ml_collections.ConfigDict, tree: str, size: int, use_torch: bool, key: jax.Array
) -> dict[str, Any]:
  """Times every implementation on one tree shape and size; returns the case's record."""
  shapes = tree_shapes(tree, size)
  num_params = sum(math.prod(shape) for shape in shapes)
  params_key, grads_key = jax.random.split(key)
  params = random_tree(shapes, params_key, scale=0.1)
  grads = random_tree(shapes, grads_key)
  runners: dict[str, Any] = {
      name: JaxRunner(optimizer, params, grads)
      for name, optimizer in jax_optimizers(config).items()
  }
  if use_torch:
    for name in TORCH:
      runners[name] = TorchRunner(config, params, grads, foreach=name == "torch foreach")
  times = paired_rounds(
      runners,
      warmup_steps=config.warmup_steps,
      min_rounds=config.min_rounds,
      max_rounds=config.max_rounds,
      time_budget_s=config.time_budget_s,
      seed=config.seed,
  )
  state_bytes = {name: runner.state_bytes() / num_params for name, runner in runners.items()}
  median_ms = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
  # The fastest round approximates the step on an otherwise idle machine; kept for reference.
  min_ms = {name: 1e3 * float(np.min(values)) for name, values in times.items()}
  bytes_per_param = {name: bytes_that_must_move(4.0, state) for name, state in state_bytes.items()}
  bandwidth = {name: bytes_per_param[name] * num_params / (median_ms[name] * 1e-3) / 1e9
               for name in times}
  # Bandwidth relative to SGD's, paired: (bytes / t) / (12 / t_sgd) per round.
  bandwidth_vs_sgd = {
      name: bytes_per_param[name] / bytes_per_param["optax.sgd"]
      / paired_ratio(times[name], times["optax.sgd"])
      for name in times
  }
  ratio_to_reference = {name: paired_ratio(times[name], times[reference])
                        for name, reference in REFERENCE_OF.items()
                        if reference is not None and name in times}
  ratio_to_torch = {}
  if use_torch:
    for name in ("rmsprop_jax", "optax.rmsprop"):
      for torch_name in TORCH:
        ratio_to_torch[f"{name} / {torch_name}"] = paired_ratio(times[name], times[torch_name])
  passes = {}
  if tree == "one_leaf":
    passes = {name: count_passes(cast(str, runner.compiled.as_text()), num_params)
              for name, runner in runners.items() if isinstance(runner, JaxRunner)}
  del runners
  return {
      "hlo_passes": passes,
      "tree": tree,
      "target_size": int(size),
      "num_params": int(num_params),
      "num_leaves": len(shapes),
      "rounds": len(times["optax.sgd"]),
      "median_ms": median_ms,
      "min_ms": min_ms,
      "ratio_to_reference": ratio_to_reference,
      "ratio_to_torch": ratio_to_torch,
      "bytes_per_param": bytes_per_param,
      "state_bytes_per_param": state_bytes,
      "bandwidth_gbs": bandwidth,
      "bandwidth_vs_sgd": bandwidth_vs_sgd,
  }


def _timed_compile(make_step: Callable[[], Callable[..., Any]], args: Sequence[Any]) -> tuple:
  """Seconds to trace and lower, and to compile, a freshly jitted step."""
  jitted = jax.jit(make_step())
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  traced = time.perf_counter()
  lowered.compile()
  return traced - start, time.perf_counter() - traced


def compile_times(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Compile time of a full train step per JAX implementation (``config.compile_optimizers``,
  or every one), on the programs of ``config.compile_programs``."""
  from experiments.classification import (
    train as train_lib,  # the Flax NNX train step of the experiments
  )

  spec = train_lib.ModelSpec.create("cnn", (8, 8, 1), 10)
  graphdef = train_lib.model_graphdef(spec)
  key = jax.random.PRNGKey(config.seed)
  batch = (jnp.zeros((64, 8, 8, 1), jnp.float32), jnp.zeros((64,), jnp.int32))
  shapes = tree_shapes("resnet50", config.compile_size)
  tree = random_tree(shapes, key)

  def cnn_program(optimizer):
    state = train_lib.init_train_state(spec, optimizer, key)
    make = lambda: lambda state, batch, rng: train_lib.train_step(
        graphdef, optimizer, state, batch, rng)
    return make, (state, batch, key)

  def tree_program(optimizer):
    def make():
      def step(params, opt_state):
        # A full step of a quadratic loss: forward, backward, update, apply.
        loss = lambda p: 0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p))
        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
      return step
    return make, (tree, optimizer.init(tree))

  programs = {"cnn_digits": cnn_program, "resnet50_tree": tree_program}
  descriptions = {
      "cnn_digits": "Flax NNX SmallCNN, 8x8x1 digits, batch 64 "
                    "(experiments.classification.train.train_step)",
      "resnet50_tree": f"161-leaf ResNet-50-shaped tree, {sum(map(math.prod, shapes))} "
                       "parameters, quadratic loss",
  }
  for program_name in config.compile_programs:
    if program_name not in programs:
      raise ValueError(f"config.compile_programs has an unknown program {program_name!r}; "
                       f"known: {tuple(programs)}.")
  results: dict[str, Any] = {
      "programs": {name: descriptions[name] for name in config.compile_programs},
      "lower_s": {}, "compile_s": {},
  }
  optimizers = jax_optimizers(config)
  unknown = sorted(set(config.compile_optimizers) - set(optimizers))
  if unknown:
    raise ValueError(f"config.compile_optimizers has unknown implementations {unknown}; "
                     f"known: {tuple(optimizers)}.")
  if config.compile_optimizers:
    optimizers = {name: optimizers[name] for name in config.compile_optimizers}
  for program_name in config.compile_programs:
    program = programs[program_name]
    lower_s, compile_s = {}, {}
    for name, optimizer in optimizers.items():
      make, args = program(optimizer)
      samples = [_timed_compile(make, args) for _ in range(config.compile_repeats)]
      lower_s[name] = float(np.median([s[0] for s in samples]))
      compile_s[name] = float(np.median([s[1] for s in samples]))
    results["lower_s"][program_name] = lower_s
    results["compile_s"][program_name] = compile_s
  return results


def hlo_passes(optimizer: optax.GradientTransformation, size: int) -> dict[str, int]:
  """Passes over parameter-sized arrays in the compiled update step of a one-leaf tree.

  Counts the fusions and copies of the entry computation whose result has ``size`` elements:
  on a CPU each is one loop over memory. A single pass that reads every input once and writes
  every output once would move exactly the bytes that must move; every further pass re-reads
  some input or intermediate.
  """
  params = {"leaf000": jnp.zeros((size,), jnp.float32)}
  compiled = make_update_step(optimizer).lower(params, optimizer.init(params), params).compile()
  return count_passes(cast(str, compiled.as_text()), size)


def sweep_speedup(path: str) -> dict[str, Any]:
  """RMSprop's vmapped-versus-sequential sweep timings from experiments/sweeps/sweep.py's output.

  Reads ``timing.per_optimizer.rmsprop`` (``vmapped``, ``sequential`` and, when present,
  ``python_loop`` modes, each with ``compile_s``, ``run_s`` and ``runs``) and
  ``timing.speedup.rmsprop`` of the ``sweep.json`` at ``path``.
  """
  if not os.path.exists(path):
    return {"available": False, "reason": f"{path} does not exist (run `make sweep`)"}
  with open(path) as handle:
    timing = json.load(handle).get("timing", {})
  modes = timing.get("per_optimizer", {}).get("rmsprop", {})
  if "vmapped" not in modes or "sequential" not in modes:
    return {"available": False, "path": path,
            "reason": f"{path} has no vmapped and sequential timings for rmsprop"}
  keep = ("runs", "compile_s", "run_s")
  return {
      "available": True,
      "path": path,
      "modes": {mode: {key: values[key] for key in keep if key in values}
                for mode, values in modes.items()},
      "speedup": timing.get("speedup", {}).get("rmsprop", {}),
  }


def hardware() -> dict[str, Any]:
  """The machine and library versions every absolute time belongs to (+ torch's threads)."""
  info = hardware_lib.describe()
  info["torch_threads"] = None
  if torch_available():
    import torch

    info["versions"]["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  return info


# Speed targets are judged on trees of at least this many parameters: below it a step takes
# microseconds, dominated by dispatch overhead, and its arrays sit in the CPU's caches.
MIN_TIMED_PARAMS = 1 << 20


def check_targets(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The issue's targets, each with the worst case measured and whether it was met.

  A speed target with no case of at least :data:`MIN_TIMED_PARAMS` parameters (the ``:quick``
  config) is reported as not applicable (``met`` is ``None``), not as missed.
  """
  timed = [case for case in cases if case["num_params"] >= MIN_TIMED_PARAMS]
  not_applicable = {
      "met": None,
      "reason": f"no case of >= {MIN_TIMED_PARAMS:,} parameters was measured",
  }
  targets: dict[str, Any] = {}
  if timed:
    worst_reference = max(
        (case["ratio_to_reference"][name], f"{name}, {case['tree']} {case['num_params']}")
        for case in timed for name in OURS
    )
    control = [case["ratio_to_reference"][CONTROL] for case in timed]
    targets["every variant <= 1.0x optax.rmsprop"] = {
        "worst": worst_reference[0], "where": worst_reference[1],
        "met": worst_reference[0] <= 1.0,
        # Identical programs differ by this much on this machine.
        "a_a_control_range": [min(control), max(control)],
    }
  else:
    targets["every variant <= 1.0x optax.rmsprop"] = dict(not_applicable)
  torch_ratios = [(case["ratio_to_torch"][f"rmsprop_jax / {name}"],
                   f"{name}, {case['tree']} {case['num_params']}")
                  for case in timed for name in TORCH if case["ratio_to_torch"]]
  if torch_ratios:
    worst_torch = max(torch_ratios)
    targets["rmsprop_jax <= 0.5x torch.optim.RMSprop"] = {
        "worst": worst_torch[0], "where": worst_torch[1], "met": worst_torch[0] <= 0.5}
  elif any(case["ratio_to_torch"] for case in cases):
    targets["rmsprop_jax <= 0.5x torch.optim.RMSprop"] = dict(not_applicable)
  half = [case["state_bytes_per_param"]["rmsprop_jax bf16"]
          / case["state_bytes_per_param"]["rmsprop_jax"] for case in cases]
  targets["bf16 state bytes = 0.5x float32"] = {"worst": max(half), "met": max(half) <= 0.5 + 1e-3}
  large = [case for case in cases if case["num_params"] >= 16_000_000]
  if large:
    worst_bandwidth = min((case["bandwidth_vs_sgd"]["rmsprop_jax"],
                           f"{case['tree']} {case['num_params']}") for case in large)
    targets["bandwidth >= 0.8x optax.sgd (>= 16M params)"] = {
        "worst": worst_bandwidth[0], "where": worst_bandwidth[1],
        "met": worst_bandwidth[0] >= 0.8,
        "optax.rmsprop_worst": min(case["bandwidth_vs_sgd"]["optax.rmsprop"] for case in large),
    }
  else:
    targets["bandwidth >= 0.8x optax.sgd (>= 16M params)"] = {
        "met": None, "reason": "no case of >= 16M parameters was measured",
    }
  format_names = [name for name in cases[0]["ratio_to_reference"]
                  if name.startswith(FORMAT_PREFIX)] if cases else []
  one_leaf_large = [case for case in large if case["tree"] == "one_leaf"]
  target = "state formats <= 1.3x float32 state (one leaf, >= 16M params)"
  if format_names and one_leaf_large:
    worst_format = max((case["ratio_to_reference"][name], f"{name}, {case['num_params']}")
                       for case in one_leaf_large for name in format_names)
    targets[target] = {"worst": worst_format[0], "where": worst_format[1],
                       "met": worst_format[0] <= 1.3}
  elif format_names:
    targets[target] = {"met": None, "reason": "no one-leaf case of >= 16M parameters"}
  return targets


# ----------------------------------------------------------------------------------------------
# Reports.


def _millions(count: int) -> str:
  return f"{count / 1e6:.1f}M" if count >= 100_000 else f"{count / 1e6:.3f}M"


def series_color(index: int) -> Any:
  """A colour of its own for each of up to 20 series: tab20's ten dark hues, then its light ones
  (matplotlib's default cycle repeats after ten, and the benchmark draws more)."""
  return matplotlib.colormaps["tab20"]((2 * index) % 20 + (2 * index) // 20)


def plot_results(cases: Sequence[Mapping[str, Any]], workdir: str) -> list[str]:
  """Step time and bandwidth against parameter count, one panel per tree shape."""
  paths = []
  trees = [tree for tree in TREE_SHAPES if any(case["tree"] == tree for case in cases)]
  names = [name for name in REFERENCE_OF if name in cases[0]["median_ms"]]
  for quantity, ylabel, filename in (
      ("median_ms", "median update step (ms)", "step_time.png"),
      ("bandwidth_gbs", "effective bandwidth (GB/s)", "bandwidth.png"),
  ):
    figure, axes = plt.subplots(1, len(trees), figsize=(6.5 * len(trees), 4.5), squeeze=False)
    for axis, tree in zip(axes[0], trees, strict=True):
      tree_cases = sorted((c for c in cases if c["tree"] == tree), key=lambda c: c["num_params"])
      counts = [case["num_params"] for case in tree_cases]
      for index, name in enumerate(names):
        style = "-" if name in OURS else ("--" if name.startswith("optax") else ":")
        axis.plot(counts, [case[quantity][name] for case in tree_cases], style, marker="o",
                  markersize=3, label=name, color=series_color(index))
      axis.set_xscale("log")
      axis.set_yscale("log" if quantity == "median_ms" else "linear")
      axis.set_xlabel("parameters")
      axis.set_ylabel(ylabel)
      leaves = tree_cases[0]["num_leaves"]
      axis.set_title(f"{tree} ({leaves} leaf{'' if leaves == 1 else 's'})")
      axis.grid(True, which="both", alpha=0.3)
    # Outside the panels, so that no curve is hidden behind it.
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    figure.tight_layout()
    path = os.path.join(workdir, filename)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    paths.append(path)
  return paths


def _bandwidth_cell(case: Mapping[str, Any], name: str) -> str:
  """GB/s with its ratio to optax.sgd; in-cache cases get no ratio (it can exceed 100%)."""
  gbs = f"{case['bandwidth_gbs'][name]:.1f} GB/s"
  if case["num_params"] < MIN_TIMED_PARAMS:
    return f"{gbs} (in cache)"
  return f"{gbs} ({case['bandwidth_vs_sgd'][name]:.0%})"


def _right_after(left: int, right: int) -> list[str]:
  """Column alignments: ``left`` text columns, then ``right`` number columns."""
  return ["left"] * left + ["right"] * right


def markdown_report(result: Mapping[str, Any]) -> str:
  """The tables of ``benchmark.md``."""
  hw = result["hardware"]
  lines = [
      "# Update-step benchmark",
      "",
      f"Hardware: {hw['cpu_model']}, {hw['cpu_count']} cores, JAX backend {hw['jax_backend']}; "
      + ", ".join(f"{k} {v}" for k, v in hw["versions"].items())
      + f". Load average at start: {hw['load_average_at_start']}. Wall time "
      f"{result['wall_time_s']:.0f} s.",
      "",
      "Median update-step time (ms); update + apply, jitted, donated buffers. Ratios are "
      "paired medians over rounds.",
      "",
  ]
  cases = result["cases"]
  names = [name for name in REFERENCE_OF if name in cases[0]["median_ms"]]
  lines.append(markdown_table(
      ["tree", "params", "rounds", *names],
      [[case["tree"], _millions(case["num_params"]), case["rounds"],
        *(f"{case['median_ms'][n]:.2f}" for n in names)] for case in cases],
      align=_right_after(1, 2 + len(names))))
  lines += ["", "Ratio of each rmsprop_jax variant to optax.rmsprop in the same configuration "
            "(bf16: to float32 optax.rmsprop); of a second optax.rmsprop to the first (A/A: the "
            "noise floor); and to torch.optim.RMSprop (plain):", ""]
  torch_keys = list(cases[0]["ratio_to_torch"])
  header = [*OURS, CONTROL, *torch_keys]
  rows = []
  for case in cases:
    values = [case["ratio_to_reference"][n] for n in (*OURS, CONTROL)]
    values += [case["ratio_to_torch"][k] for k in torch_keys]
    rows.append([case["tree"], _millions(case["num_params"]), *(f"{v:.2f}x" for v in values)])
  lines.append(markdown_table(["tree", "params", *header], rows,
                              align=_right_after(1, 1 + len(header))))
  format_names = [name for name in cases[0]["ratio_to_reference"]
                  if name.startswith(FORMAT_PREFIX)]
  if format_names:
    lines += ["", "State formats (rmsprop_jax.formats): paired ratio of the step time to float32 "
              "state's (rmsprop_jax), and state bytes per parameter:", ""]
    short = [name.removeprefix(FORMAT_PREFIX) for name in format_names]
    lines.append(markdown_table(
        ["tree", "params", *short],
        [[case["tree"], _millions(case["num_params"]), *(
            f"{case['ratio_to_reference'][n]:.2f}x ({case['state_bytes_per_param'][n]:.2f} B)"
            for n in format_names)] for case in cases],
        align=_right_after(1, 1 + len(short))))
  lines += ["", "Effective bandwidth (bytes that must move / median time) and its paired ratio to "
            "optax.sgd's on the same tree:", ""]
  bandwidth_names = ["optax.sgd", "rmsprop_jax", "optax.rmsprop", "rmsprop_jax bf16",
                     "rmsprop_jax momentum", "optax.adam"]
  lines.append(markdown_table(
      ["tree", "params", *bandwidth_names],
      [[case["tree"], _millions(case["num_params"]),
        *(_bandwidth_cell(case, n) for n in bandwidth_names)] for case in cases],
      align=_right_after(1, 1 + len(bandwidth_names))))
  lines += ["", "Optimizer state and bytes that must move per float32 parameter; passes over "
            "parameter-sized arrays in the compiled step (XLA fusions + copies, one-leaf tree):",
            ""]
  rows = []
  for name, state in result["state_bytes"].items():
    passes = result["hlo_passes"].get(name)
    passes_text = f"{passes['fusions']} + {passes['copies']}" if passes else "n/a"
    rows.append([name, f"{state:.2f}", f"{bytes_that_must_move(4.0, state):.2f}", passes_text])
  lines.append(markdown_table(
      ["implementation", "state bytes / param", "bytes that must move / param",
       "passes (fusions + copies)"], rows, align=_right_after(1, 3)))
  compile_result = result["compile"]
  if compile_result:
    programs = list(compile_result["compile_s"])
    lines += ["", "Compile time of a full train step (median of repeats; trace+lower / XLA "
              "compile, seconds):", ""]
    for program in programs:
      lines.append(f"- {program}: {compile_result['programs'][program]}")
    lines += ["", markdown_table(
        ["implementation", *programs],
        [[name, *(f"{compile_result['lower_s'][p][name]:.2f} / "
                  f"{compile_result['compile_s'][p][name]:.2f}" for p in programs)]
         for name in compile_result["compile_s"][programs[0]]],
        align=_right_after(1, len(programs)))]
  sweep = result["sweep"]
  if sweep["available"]:
    lines += ["", f"RMSprop learning-rate sweep, from `{sweep['path']}` "
              "(experiments/sweeps/sweep.py, its own run; seconds):", ""]
    lines.append(markdown_table(
        ["mode", "runs", "compile", "run"],
        [[mode, values.get("runs", ""), f"{values.get('compile_s', 0):.2f}",
          f"{values.get('run_s', 0):.2f}"] for mode, values in sweep["modes"].items()],
        align=_right_after(1, 3)))
    lines += ["", "Speedup of the vmapped sweep: " + ", ".join(
        f"{value:.1f}x {name}" for name, value in sweep["speedup"].items()) + "."]
  else:
    lines += ["", f"Vmapped sweep: not available ({sweep['reason']})."]
  lines += ["", "Targets:", ""]
  for target, outcome in result["targets"].items():
    if outcome["met"] is None:
      lines.append(f"- {target}: not applicable ({outcome['reason']})")
      continue
    where = f" ({outcome['where']})" if "where" in outcome else ""
    if "a_a_control_range" in outcome:
      low, high = outcome["a_a_control_range"]
      where += f"; A/A control {low:.2f}-{high:.2f}x"
    lines.append(f"- {target}: worst {outcome['worst']:.2f}{where} — "
                 f"{'met' if outcome['met'] else 'MISSED'}")
  lines += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in result["plots"]]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Entry points.


def run_benchmark(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every case, the compile-time and state measurements; writes the reports.

  Args:
    config: see ``configs/benchmarks/benchmark.py``.
    workdir: output directory (created).

  Returns:
    The record written to ``benchmark.json`` (keys :data:`RESULT_KEYS`).
  """
  for tree in config.sizes:
    if tree not in TREE_SHAPES:
      raise ValueError(f"config.sizes has an unknown tree {tree!r}; known: {TREE_SHAPES}.")
  for name in config.state_formats:
    if name not in STATE_FORMATS:
      raise ValueError(f"config.state_formats has an unknown format {name!r}; known: "
                       f"{tuple(STATE_FORMATS)}.")
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  use_torch = bool(config.include_torch) and torch_available()
  machine = hardware()
  key = jax.random.PRNGKey(config.seed)
  jobs = [(tree, int(size)) for tree, sizes in config.sizes.items() for size in sizes]
  cases = []
  for index, (tree, size) in enumerate(tqdm(jobs, desc="benchmark cases")):
    case = run_case(config, tree, size, use_torch, jax.random.fold_in(key, index))
    cases.append(case)
    tqdm.write(f"{tree} {_millions(case['num_params'])}: " + ", ".join(
        f"{name} {case['median_ms'][name]:.2f} ms" for name in ("optax.sgd", "rmsprop_jax",
                                                                 "optax.rmsprop")))
  one_leaf = sorted((c for c in cases if c["tree"] == "one_leaf"), key=lambda c: c["num_params"])
  compile_result = (compile_times(config)
                    if config.compile_repeats > 0 and config.compile_programs else {})
  result: dict[str, Any] = {
      "benchmark": config.name,
      "config": config.to_dict(),
      "hardware": machine,
      "cases": cases,
      # State bytes per parameter barely depend on the size (step counters aside): the largest.
      "state_bytes": max(cases, key=lambda c: c["num_params"])["state_bytes_per_param"],
      "hlo_passes": one_leaf[-1]["hlo_passes"] if one_leaf else {
          name: hlo_passes(optimizer, config.compile_size)
          for name, optimizer in jax_optimizers(config).items()},
      "compile": compile_result,
      "sweep": sweep_speedup(config.sweep_path),
      "targets": check_targets(cases),
  }
  result["plots"] = plot_results(cases, workdir)
  result["wall_time_s"] = time.perf_counter() - start
  with open(os.path.join(workdir, "benchmark.json"), "w") as handle:
    json.dump(result, handle, indent=2)
  with open(os.path.join(workdir, "benchmark.md"), "w") as handle:
    handle.write(markdown_report(result))
  return result


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m benchmarks.update_step [--config configs/benchmarks/benchmark.py[:quick]]``."""

  def benchmark(config: ml_collections.ConfigDict, workdir: str) -> None:
    result = run_benchmark(config, workdir)
    print(open(os.path.join(workdir, "benchmark.md")).read())
    print(f"wrote {workdir}/benchmark.json, benchmark.md and {len(result['plots'])} plots "
          f"in {result['wall_time_s']:.1f} s")

  from benchmarks.schema import SCHEMA

  cli.run_job(benchmark, default_config="configs/benchmarks/benchmark.py", schema=SCHEMA,
              argv=argv)


if __name__ == "__main__":
  main()
