"""benchmarks/update_step.py: tree shapes, the paired-round harness, the compiled step's passes and
the output schema of a quick run. No timed assertions: the machine is shared and noisy."""

from __future__ import annotations

import json
import math
from typing import Any

import jax.numpy as jnp
import optax
import pytest

import rmsprop_jax
from benchmarks import update_step as benchmark
from configs.benchmarks import benchmark as benchmark_config


def test_resnet50_shapes_at_width_one_are_resnet50():
  shapes = benchmark.resnet50_shapes(1.0)
  assert len(shapes) == 161
  # torchvision's resnet50: 25,557,032 parameters (convolutions, batch norm, classifier).
  assert sum(math.prod(shape) for shape in shapes) == 25_557_032
  assert shapes[0] == (7, 7, 3, 64) and shapes[-2:] == [(2048, 1000), (1000,)]


@pytest.mark.parametrize("size", [1 << 14, 1 << 20, 1 << 24])
def test_resnet50_tree_matches_the_requested_size(size):
  shapes = benchmark.tree_shapes("resnet50", size)
  assert len(shapes) == 161
  assert sum(math.prod(shape) for shape in shapes) == pytest.approx(size, rel=0.02)
  assert benchmark.tree_shapes("one_leaf", size) == [(size,)]


def test_bad_tree_and_size_are_refused():
  with pytest.raises(ValueError, match="tree"):
    benchmark.tree_shapes("vgg", 1000)
  with pytest.raises(ValueError, match="size"):
    benchmark.tree_shapes("one_leaf", 0)
  with pytest.raises(ValueError, match="arg"):
    benchmark_config.get_config("slow")


def test_bytes_that_must_move():
  assert benchmark.bytes_that_must_move(4.0, 0.0) == 12.0  # SGD
  assert benchmark.bytes_that_must_move(4.0, 4.0) == 20.0  # RMSprop, float32 nu
  assert benchmark.bytes_that_must_move(4.0, 2.0) == 16.0  # RMSprop, bfloat16 nu


def test_paired_rounds_rotate_the_order_and_pair_the_ratios():
  calls = []

  def runner(name, seconds):
    def run():
      calls.append(name)
      return seconds
    return run

  runners = {"a": runner("a", 1.0), "b": runner("b", 2.0), "c": runner("c", 4.0)}
  times = benchmark.paired_rounds(
      runners, warmup_steps=1, min_rounds=3, max_rounds=3, time_budget_s=0.0
  )
  assert calls[:3] == ["a", "b", "c"]  # warm-up
  rounds = [calls[3 + 3 * r:6 + 3 * r] for r in range(3)]
  assert all(sorted(order) == ["a", "b", "c"] for order in rounds)
  assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3, "c": 3}
  assert benchmark.paired_ratio(times["a"], times["c"]) == 0.25
  with pytest.raises(ValueError, match="min_rounds"):
    benchmark.paired_rounds(runners, warmup_steps=0, min_rounds=4, max_rounds=2,
                            time_budget_s=0.0)


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9}, {"centered": True}])
def test_bf16_state_compiles_without_copies(options):
  """Regression guard for the bf16 fix (the step once copied every donated accumulator): no
  more passes over parameter-sized memory than our own and optax.rmsprop's float32 step in the
  same configuration. Compared with each other, not with fixed counts, which a new XLA release
  may change for every program alike."""
  size = 4096
  ours = rmsprop_jax.rmsprop(1e-3, accumulator_dtype=jnp.bfloat16, **options)
  ours_float32 = rmsprop_jax.rmsprop(1e-3, **options)
  reference = optax.rmsprop(1e-3, eps_in_sqrt=False, **options)
  passes = sum(benchmark.hlo_passes(ours, size).values())
  assert passes <= sum(benchmark.hlo_passes(ours_float32, size).values())
  assert passes <= sum(benchmark.hlo_passes(reference, size).values())


def test_float32_variants_make_no_more_passes_than_optax():
  config = benchmark_config.get_config("quick")
  optimizers = benchmark.jax_optimizers(config)
  assert not config.state_formats  # the formats' cases run in the full config only
  for ours, reference in benchmark.REFERENCE_OF.items():
    if reference is None or ours not in optimizers:
      continue
    passes = benchmark.hlo_passes(optimizers[ours], 4096)
    reference_passes = benchmark.hlo_passes(optimizers[reference], 4096)
    assert sum(passes.values()) <= sum(reference_passes.values()), (ours, passes)


def test_quick_run_writes_the_reports(tmp_path):
  config = benchmark_config.get_config("quick")
  config.sweep_path = str(tmp_path / "no_sweep" / "sweep.json")
  result = benchmark.run_benchmark(config, str(tmp_path))

  with open(tmp_path / "benchmark.json") as handle:
    saved = json.load(handle)
  assert set(benchmark.RESULT_KEYS) <= set(saved)
  assert saved["hardware"]["cpu_count"] >= 1 and "jax" in saved["hardware"]["versions"]
  assert len(saved["cases"]) == sum(len(sizes) for sizes in config.sizes.values())
  for case in saved["cases"]:
    assert set(benchmark.CASE_KEYS) <= set(case)
    assert case["rounds"] == config.max_rounds
    for name in benchmark.OURS:
      assert case["ratio_to_reference"][name] > 0
    assert all(value > 0 for value in case["median_ms"].values())
  assert [case["num_leaves"] for case in saved["cases"]] == [1]
  first_passes = saved["cases"][0]["hlo_passes"]
  assert sum(first_passes["rmsprop_jax bf16"].values()) <= sum(first_passes["rmsprop_jax"].values())

  state = result["state_bytes"]
  assert state["optax.sgd"] == 0
  assert state["rmsprop_jax"] == pytest.approx(4.0, abs=0.01)  # nu (+ the step counter)
  assert state["rmsprop_jax bf16"] == pytest.approx(state["rmsprop_jax"] / 2, abs=0.01)
  assert state["rmsprop_jax centered"] == pytest.approx(8.0, abs=0.01)
  assert state["rmsprop_jax momentum"] == pytest.approx(8.0, abs=0.01)
  assert state["optax.adam"] == pytest.approx(8.0, abs=0.01)
  assert saved["targets"]["bf16 state bytes = 0.5x float32"]["met"]

  assert set(saved["compile"]["compile_s"]) == set(config.compile_programs)
  for seconds in saved["compile"]["compile_s"].values():
    assert set(seconds) == set(config.compile_optimizers) and min(seconds.values()) > 0
  assert saved["sweep"]["available"] is False
  # SGD's step is the floor every other program is compared with (counts depend on XLA's release).
  sgd_passes = sum(saved["hlo_passes"]["optax.sgd"].values())
  assert 1 <= sgd_passes <= min(sum(passes.values()) for passes in saved["hlo_passes"].values())
  for path in saved["plots"]:
    with open(path, "rb") as handle:
      assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
  report = (tmp_path / "benchmark.md").read_text()
  assert "Hardware:" in report and saved["hardware"]["cpu_model"] in report
  assert "| rmsprop_jax bf16 | 2.00 |" in report
  # The :quick config measures 4k-parameter trees: the speed targets do not apply to them, and their
  # in-cache bandwidth gets no ratio to optax.sgd (which can exceed 100% there).
  assert saved["targets"]["every variant <= 1.0x optax.rmsprop"]["met"] is None
  assert "MISSED" not in report and "not applicable" in report
  assert "(in cache)" in report and "%)" not in report.split("Effective bandwidth")[1]


def test_sweep_speedup_reads_a_sweep_file(tmp_path):
  mode = lambda run_s: {"compile_s": 1.0, "run_s": run_s, "runs": 16, "traces": 1}
  timing = {"per_optimizer": {"rmsprop": {"vmapped": mode(0.5), "sequential": mode(2.0)}},
            "speedup": {"rmsprop": {"vs sequential": 4.0}}}
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps({"timing": timing}))
  found = benchmark.sweep_speedup(str(path))
  assert found["available"] and found["speedup"] == {"vs sequential": 4.0}
  assert found["modes"]["sequential"] == {"runs": 16, "compile_s": 1.0, "run_s": 2.0}
  path.write_text(json.dumps({"timing": {}}))
  assert not benchmark.sweep_speedup(str(path))["available"]


def test_state_format_cases_pair_with_float32_state_and_have_a_target():
  config = benchmark_config.get_config("formats")
  assert dict(config.sizes) == {"one_leaf": (1 << 24,)} and config.state_formats
  optimizers = benchmark.jax_optimizers(config)
  names = [benchmark.FORMAT_PREFIX + name for name in config.state_formats]
  for name in names:
    assert name in optimizers and benchmark.REFERENCE_OF[name] == "rmsprop_jax"
  ratios = {name: 1.0 for name in (*benchmark.OURS, benchmark.CONTROL)}
  case: dict[str, Any] = {"tree": "one_leaf", "num_params": 1 << 24, "ratio_to_torch": {},
          "ratio_to_reference": {**ratios, **{name: 1.2 for name in names}},
          "state_bytes_per_param": {"rmsprop_jax bf16": 2.0, "rmsprop_jax": 4.0},
          "bandwidth_vs_sgd": {"rmsprop_jax": 0.9, "optax.rmsprop": 0.9}}
  target = "state formats <= 1.3x float32 state (one leaf, >= 16M params)"
  assert benchmark.check_targets([case])[target]["met"]
  case["ratio_to_reference"][names[-1]] = 2.0
  assert benchmark.check_targets([case])[target] == {
      "worst": 2.0, "where": f"{names[-1]}, {1 << 24}", "met": False}
  config.state_formats = ("int4",)
  with pytest.raises(ValueError, match="state_formats"):
    benchmark.run_benchmark(config, "/nonexistent/never-created")
