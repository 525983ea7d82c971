"""Every summary names the machine and the versions that made it (experiments.common.hardware)."""

from __future__ import annotations

import pytest

from experiments.common import hardware


def test_describe_records_cpu_identity_isa_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
  cpuinfo = {"model name": "AMD EPYC 7B13", "vendor_id": "AuthenticAMD", "cpu family": "25",
             "model": "1", "stepping": "0", "microcode": "0xffffffff",
             "flags": "fpu sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512bw aes"}
  monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo)
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
  info = hardware.describe()
  assert info["cpu"] == {"model_name": "AMD EPYC 7B13", "vendor": "AuthenticAMD", "family": 25,
                         "model": 1, "stepping": 0, "microcode": "0xffffffff"}
  assert info["isa"] == {"cpu_flags": ["avx", "avx2", "avx512bw", "avx512f", "f16c", "fma",
                                       "sse4_1", "sse4_2"],
                         "xla_flags": "--xla_cpu_max_isa=AVX", "xla_cpu_max_isa": "AVX"}
  for package in ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy"):
    assert info["versions"][package], package
  line = hardware.summary_line(info)
  assert "family 25, model 1, stepping 0" in line
  assert "capped at AVX by XLA_FLAGS" in line
  assert f"jaxlib {info['versions']['jaxlib']}" in line


def test_unknown_cpu_is_recorded_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setattr(hardware, "_cpuinfo", dict)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  info = hardware.describe()
  assert info["cpu"]["family"] is None and info["isa"]["cpu_flags"] == []
  assert "ISA unknown (no XLA_FLAGS cap)" in hardware.summary_line(info)
