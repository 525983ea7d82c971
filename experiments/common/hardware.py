"""What a measurement ran on: every report names the machine and the versions its numbers came from.

:func:`describe` is the JSON record every summary carries (``summary.json``'s ``hardware``): the
CPU (model name, vendor, family, model and stepping: two CPUs sold under one name, "AMD EPYC",
can differ in all three), the instruction-set extensions XLA could use (the CPU's AVX flags and
``XLA_FLAGS``, e.g. ``--xla_cpu_max_isa=AVX``), the core count, the JAX devices, and the versions
of Python, jax, jaxlib, optax, flax, orbax-checkpoint, numpy and rmsprop_jax. :func:`summary_line`
is the same in one line, for the Markdown reports. A training run's digits depend on all of it:
compare numbers only with a run whose record matches.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from typing import Any

import jax

# The instruction-set extensions of x86 CPUs that decide which kernels XLA's CPU backend emits.
ISA_FLAG_PATTERN = re.compile(r"^(sse4_1|sse4_2|avx|avx2|fma|f16c|avx512\w*|avx_vnni|amx\w*)$")
# The packages whose versions a run's numbers depend on, by distribution name.
PACKAGES = ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy", "rmsprop_jax")


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
  fields: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as handle:
      for line in handle:
        if not line.strip():
          break  # The end of the first processor's block.
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
  return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_identity() -> dict[str, Any]:
  """Model name, vendor, family, model, stepping and microcode (``None`` where unknown)."""
  info = _cpuinfo()

  def number(key: str) -> int | None:
    value = info.get(key, "")
    return int(value) if value.isdigit() else None

  return {
      "model_name": cpu_model(),
      "vendor": info.get("vendor_id"),
      "family": number("cpu family"),
      "model": number("model"),
      "stepping": number("stepping"),
      "microcode": info.get("microcode"),
  }


def isa() -> dict[str, Any]:
  """The ISA extensions XLA could use: the CPU's relevant flags and the ``XLA_FLAGS`` that cap them.

  ``xla_cpu_max_isa`` is the value of ``--xla_cpu_max_isa`` in ``XLA_FLAGS`` (``None``: no cap,
  XLA uses every extension the CPU has).
  """
  flags = sorted(flag for flag in _cpuinfo().get("flags", "").split()
                 if ISA_FLAG_PATTERN.match(flag))
  xla_flags = os.environ.get("XLA_FLAGS", "")
  cap = re.search(r"--xla_cpu_max_isa=(\S+)", xla_flags)
  return {"cpu_flags": flags, "xla_flags": xla_flags,
          "xla_cpu_max_isa": cap.group(1) if cap else None}


def versions() -> dict[str, str | None]:
  """Python's version and each of :data:`PACKAGES`' (``None``: not installed)."""
  found: dict[str, str | None] = {"python": platform.python_version()}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def describe() -> dict[str, Any]:
  """The host, the ISA XLA could use, the JAX devices and the library versions, JSON-ready."""
  devices = jax.devices()
  return {
      "cpu_model": cpu_model(),
      "cpu": cpu_identity(),
      "isa": isa(),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "jax_backend": jax.default_backend(),
      "jax_devices": [str(device) for device in devices],
      "device_kinds": sorted({device.device_kind for device in devices}),
      "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "versions": versions(),
  }


def summary_line(info: dict[str, Any] | None = None) -> str:
  """:func:`describe` in one line: the CPU and its identity, the ISA, cores, devices, versions."""
  info = describe() if info is None else info
  cpu = info["cpu"]
  identity = ", ".join(f"{key} {cpu[key]}" for key in ("family", "model", "stepping")
                       if cpu.get(key) is not None)
  isa_info = info["isa"]
  cap = (f"capped at {isa_info['xla_cpu_max_isa']} by XLA_FLAGS" if isa_info["xla_cpu_max_isa"]
         else "no XLA_FLAGS cap" if not isa_info["xla_flags"]
         else f"XLA_FLAGS={isa_info['xla_flags']}")
  versions_text = ", ".join(f"{name} {version}" for name, version in info["versions"].items()
                            if version is not None)
  return (
      f"{info['cpu_model']} ({cpu.get('vendor') or info['machine']}"
      f"{', ' + identity if identity else ''}), {info['cpu_count']} CPU cores; ISA "
      f"{' '.join(isa_info['cpu_flags']) or 'unknown'} ({cap}); {len(info['jax_devices'])} "
      f"{info['jax_backend']} device(s) ({', '.join(info['device_kinds'])}); {versions_text}"
  )
