"""What a measurement ran on: every report names the machine its numbers came from."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax
import optax

import rmsprop_jax


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
  try:
    with open("/proc/cpuinfo") as handle:
      for line in handle:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
  """The host, the JAX devices and the library versions, as a JSON-ready dict."""
  devices = jax.devices()
  return {
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "jax_backend": jax.default_backend(),
      "jax_devices": [str(device) for device in devices],
      "device_kinds": sorted({device.device_kind for device in devices}),
      "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "versions": {
          "python": platform.python_version(),
          "jax": jax.__version__,
          "optax": optax.__version__,
          "rmsprop_jax": rmsprop_jax.__version__,
      },
  }


def summary_line(info: dict[str, Any] | None = None) -> str:
  """One line for a report: CPU model, core count, JAX version and devices."""
  info = describe() if info is None else info
  return (
      f"{info['cpu_model']} ({info['machine']}), {info['cpu_count']} CPU cores; "
      f"jax {info['versions']['jax']} on {len(info['jax_devices'])} {info['jax_backend']} "
      f"device(s) ({', '.join(info['device_kinds'])})"
  )
