"""benchmarks/state_formats.py: the stream, the harness's exactness, the trees and a memory run.

No assertion on the measured errors of the formats (docs/memory.md reports them): only what
holds on any CPU, such as float32 state tracking itself exactly and the state's byte counts.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import state_formats as study
from configs.benchmarks import state_formats as study_config


def test_the_transformer_tree_has_over_100m_parameters():
  config = study_config.get_config()
  shapes = study.transformer_shapes(**config.transformer)
  assert sum(math.prod(shape) for shape in shapes.values()) >= 100_000_000
  assert shapes["layer00_qkv_kernel"] == (768, 2304) and len(shapes) == 2 + 12 * 12 + 2


@pytest.mark.parametrize("stream", study.STREAMS)
def test_the_scales_span_the_decades(stream):
  scales = np.asarray(study.gradient_scales(stream, (64, 256), 2.0, jax.random.PRNGKey(0)))
  assert 1e-1 <= scales.min() < 0.2 and 5 < scales.max() <= 10
  if stream == "rank1":
    assert np.linalg.matrix_rank(scales, tol=1e-5 * scales.max()) == 1


def test_float32_state_tracks_itself_exactly():
  scales = study.gradient_scales("iid", (8, 512), 2.0, jax.random.PRNGKey(1))
  key = jax.random.PRNGKey(2)
  reference, update = study.track_format(None, 0.99, 1e-8, scales, 0.1, key, 20)
  assert study.relative_errors(update, reference) == {"median": 0.0, "p90": 0.0}
  nearest = study.track_format(study.FORMATS["bfloat16 nearest"], 0.99, 1e-8, scales, 0.1, key,
                               20)[1]
  assert 0 < study.relative_errors(nearest, reference)["median"] < 0.02


def test_a_memory_run_counts_the_state_and_writes_the_report(tmp_path):
  config = study_config.get_config("quick")
  config.parts = ("memory",)
  config.formats = ("float32", "bfloat16 nearest")
  summary = study.run(config, str(tmp_path))
  found = summary["memory"]["transformer"]
  n = found["num_params"]
  per_param = {name: entry["state_bytes"] / n for name, entry in found["optimizers"].items()}
  assert per_param["optax.sgd (no state)"] == 0
  assert per_param["float32"] == pytest.approx(4.0, abs=1e-3)
  assert per_param["bfloat16 nearest"] == pytest.approx(2.0, abs=1e-3)
  for entry in found["optimizers"].values():
    assert entry["peak"] >= entry["argument"] > 0
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["memory"]["transformer"]["num_params"] == n
  report = (tmp_path / "summary.md").read_text()
  assert "| float32 | 4.000 |" in report and "| bfloat16 nearest | 2.000 |" in report


def test_bad_names_are_refused(tmp_path):
  config = study_config.get_config("quick")
  config.formats = ("int4",)
  with pytest.raises(ValueError, match=r"config\.formats"):
    study.run(config, str(tmp_path))
  with pytest.raises(ValueError, match="arg"):
    study_config.get_config("slow")


def test_gradient_stream_is_a_pure_function_of_the_step():
  scales = jnp.ones((4, 4))
  key = jax.random.PRNGKey(3)
  first = study.gradient_at(scales, 0.1, key, jnp.int32(5))
  np.testing.assert_array_equal(first, study.gradient_at(scales, 0.1, key, jnp.int32(5)))
  assert not np.array_equal(first, study.gradient_at(scales, 0.1, key, jnp.int32(6)))
