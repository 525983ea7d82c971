"""The same training on several device layouts, and across a stop and resume: a report.

Runs ``experiments.distributed.train`` with ``configs/distributed/digits_distributed.py`` (digits
CNN,
RMSprop, one seed) as separate processes, because the number of (simulated CPU) devices is
fixed when JAX starts:

* one device;
* 8 devices as ``data=8`` (pure data parallelism), ``data=4 x model=2`` and ``data=2 x model=4``
  (parameters and optimizer state split over ``model``);
* two processes of 4 devices each, started through the ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` environment variables (127.0.0.1, Gloo), one
  ``data=4 x model=2`` mesh over both;
* one device, stopped after half the steps and resumed from the checkpoint in a new process.

Every run starts from the same weights and sees the same batches and dropout keys. The report
compares each run's final state (read back from its last checkpoint) with the one-device run:
the largest parameter difference, and whether parameters and optimizer state are bitwise equal.
Writes ``report.md``, ``layouts.png`` and ``layouts.json`` to the workdir.

Run::

    python -m experiments.distributed.layouts --workdir runs/distributed_layouts
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments.common import hardware as hardware_lib
from experiments.common.tables import markdown_table

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/distributed/digits_distributed.py"


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _launch(
    workdir: Path,
    *,
    devices: int,
    data: int,
    model: int,
    overrides: Sequence[str] = (),
    processes: int = 1,
    timeout: float = 1800,
) -> float:
  """Runs the training as ``processes`` processes of ``devices`` devices; the wall time."""
  port = _free_port()
  commands = []
  for process_id in range(processes):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    if processes > 1:
      env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
      env["JAX_NUM_PROCESSES"] = str(processes)
      env["JAX_PROCESS_ID"] = str(process_id)
    argv = [
        sys.executable, "-m", "experiments.distributed.train", f"--config={CONFIG}",
        f"--config.mesh.data={data}", f"--config.mesh.model={model}",
        f"--workdir={workdir}", *overrides,
    ]
    commands.append((argv, env))
  start = time.perf_counter()
  workers = [
      subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
      for argv, env in commands
  ]
  failures = []
  for index, worker in enumerate(workers):
    output, _ = worker.communicate(timeout=timeout)
    if worker.returncode != 0:
      failures.append(f"process {index} exited with {worker.returncode}:\n{output[-4000:]}")
  if failures:
    raise RuntimeError("\n".join(failures))
  return time.perf_counter() - start


def _final_state(workdir: Path) -> dict[str, np.ndarray]:
  """The arrays of a run's newest checkpoint, as NumPy (no model code needed).

  The shapes and dtypes come from the checkpoint's metadata; every array is read onto this
  process's first device, whatever layout wrote it.
  """
  import jax
  import orbax.checkpoint as ocp

  steps = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir()
                 if path.name.isdigit())
  path = (workdir / "checkpoints" / str(steps[-1]) / "state").absolute()
  checkpointer = ocp.StandardCheckpointer()
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
      dict(checkpointer.metadata(path).item_metadata),
  )
  restored = checkpointer.restore(path, target)
  return {key: np.asarray(value) for key, value in restored.items()}


def layout_specs(workdir: Path, total_steps: int) -> list[dict[str, Any]]:
  """The runs of the report, each with its workdir under ``workdir``."""
  layouts: list[dict[str, Any]] = [
      {"name": "1 device", "devices": 1, "data": 1, "model": 1, "processes": 1},
      {"name": "8 devices, data 8", "devices": 8, "data": 8, "model": 1, "processes": 1},
      {"name": "8 devices, data 4 x model 2", "devices": 8, "data": 4, "model": 2,
       "processes": 1},
      {"name": "8 devices, data 2 x model 4", "devices": 8, "data": 2, "model": 4,
       "processes": 1},
      {"name": "2 processes x 4 devices, data 4 x model 2", "devices": 4, "data": 4, "model": 2,
       "processes": 2},
  ]
  for index, layout in enumerate(layouts):
    layout["workdir"] = workdir / f"layout{index}"
  layouts.append({
      "name": f"1 device, stopped at step {total_steps // 2}, resumed in a new process",
      "devices": 1, "data": 1, "model": 1, "processes": 1, "workdir": workdir / "resumed",
      "stop_after_steps": total_steps // 2,
  })
  return layouts


def run_layouts(workdir: Path, *, epochs: int, optimizer: str) -> list[dict[str, Any]]:
  """Trains every layout (see the module docstring) and compares each with one device."""
  common = [f"--config.num_epochs={epochs}", f"--config.optimizer={optimizer}"]
  from configs.distributed import digits_distributed
  from experiments.classification import data as data_lib

  config = digits_distributed.get_config()
  examples = data_lib.load_config_dataset(config).train_images.shape[0]
  total_steps = epochs * (examples // config.batch_size)
  layouts = layout_specs(workdir, total_steps)
  for layout in layouts:
    launch = {key: layout[key] for key in ("devices", "data", "model", "processes")}
    if "stop_after_steps" in layout:
      # Stop half-way (as a preempted job), then resume in a new process from the checkpoint.
      first = _launch(layout["workdir"], **launch, overrides=[
          *common, "--config.resume=False", f"--config.stop_after_steps={total_steps // 2}"])
      layout["wall_s"] = first + _launch(
          layout["workdir"], **launch, overrides=[*common, "--config.resume=True"])
    else:
      layout["wall_s"] = _launch(
          layout["workdir"], **launch, overrides=[*common, "--config.resume=False"])
    print(f"{layout['name']}: {layout['wall_s']:.1f} s", flush=True)
  return compare_layouts(layouts)


def compare_layouts(layouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Adds each run's summary and its final state's distance to the first (one-device) run."""
  reference = _final_state(layouts[0]["workdir"])
  for layout in layouts:
    layout["summary"] = json.loads((layout["workdir"] / "summary.json").read_text())
    state = _final_state(layout["workdir"])
    params = [key for key in reference if key.startswith("params/")]
    layout["max_param_difference"] = max(
        float(np.max(np.abs(state[key].astype(np.float64) - reference[key]))) for key in params
    )
    layout["bitwise_equal"] = all(np.array_equal(state[key], reference[key]) for key in reference)
    layout["workdir"] = str(layout["workdir"])
  return layouts


def write_report(workdir: Path, layouts: list[dict[str, Any]], *, optimizer: str) -> None:
  """``report.md`` (one row per layout), ``layouts.png`` and ``layouts.json``."""
  figure, (curves, differences) = plt.subplots(1, 2, figsize=(12, 4.5))
  for layout, marker in zip(layouts, "osD^vx", strict=False):
    history = layout["summary"]["history"]
    curves.plot([record["step"] for record in history],
                [record["test_loss"] for record in history], marker=marker, markersize=4,
                label=layout["name"], alpha=0.8)
  curves.set_xlabel("step")
  curves.set_ylabel("test loss")
  curves.set_yscale("log")
  curves.set_title("Test loss after each epoch")
  curves.legend(fontsize=7)
  names = [layout["name"] for layout in layouts[1:]]
  values = [max(layout["max_param_difference"], 1e-12) for layout in layouts[1:]]
  differences.barh(range(len(names)), values, color="tab:blue")
  for row, layout in enumerate(layouts[1:]):
    label = "bitwise equal" if layout["bitwise_equal"] else f"{layout['max_param_difference']:.1e}"
    differences.text(2e-12, row, label, va="center", fontsize=8,
                     color="black" if layout["bitwise_equal"] else "white")
  differences.set_yticks(range(len(names)), [name.replace(", ", ",\n", 1) for name in names],
                         fontsize=7)
  differences.set_xscale("log")
  differences.set_xlim(1e-12, 1.0)
  differences.set_xlabel("max |parameter - one-device parameter| after training")
  differences.set_title("Final parameters against the one-device run")
  figure.tight_layout()
  figure.savefig(workdir / "layouts.png", dpi=120)
  plt.close(figure)

  rows = []
  for layout in layouts:
    summary = layout["summary"]
    steps = summary["final_step"] - summary["start_step"]
    collectives = summary["step_collectives"]
    rows.append([
        layout["name"], f"{layout['data']} x {layout['model']}",
        f"{summary['compile_time_s']:.2f}", f"{summary['train_time_s']:.2f}",
        f"{steps / summary['train_time_s']:.0f}",
        f"{collectives['all-reduce']} / {collectives['all-gather']} / "
        f"{collectives['reduce-scatter']}",
        f"{summary['history'][-1]['test_accuracy']:.4f}",
        f"{layout['max_param_difference']:.2e}", "yes" if layout["bitwise_equal"] else "no",
    ])
  table = markdown_table(
      ["layout", "mesh (data x model)", "compile s", "train s", "steps/s",
       "collectives in the step (all-reduce / all-gather / reduce-scatter)",
       f"final test accuracy ({layouts[0]['summary'].get('model', 'cnn')} model)",
       "max abs param diff vs 1 device", "bitwise equal"],
      rows,
  )
  hardware = hardware_lib.describe()
  text = "\n".join([
      "# One training, several device layouts",
      "",
      f"`{CONFIG}` with `optimizer={optimizer}` (hyperparameters of "
      "`configs/classification/digits.py`): "
      f"digits CNN, batch 64, "
      f"{layouts[0]['summary']['total_steps']} steps, seed 0. Simulated CPU devices "
      "(`--xla_force_host_platform_device_count`) share the machine's cores, so the timings show "
      "overheads, not speed-ups. For the resumed run, the timings are those of its second half.",
      f"Hardware: {hardware_lib.summary_line(hardware)}.",
      "",
      table,
      "",
      "![layouts](layouts.png)",
      "",
  ])
  (workdir / "report.md").write_text(text)
  (workdir / "layouts.json").write_text(json.dumps({"hardware": hardware, "layouts": layouts},
                                                   indent=2))


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: ``--workdir`` and ``--epochs``."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/distributed_layouts")
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--optimizer", default="rmsprop",
                      choices=("sgd", "momentum", "adam", "rmsprop"))
  args = parser.parse_args(argv)
  if args.epochs < 1:
    parser.error(f"--epochs must be >= 1; got {args.epochs}.")
  from experiments.common import cli

  cli.quiet_startup()
  workdir = Path(args.workdir).absolute()
  if workdir.exists() and not workdir.is_dir():
    parser.error(f"--workdir={args.workdir} is a file; pass a folder.")
  workdir.mkdir(parents=True, exist_ok=True)
  layouts = run_layouts(workdir, epochs=args.epochs, optimizer=args.optimizer)
  write_report(workdir, layouts, optimizer=args.optimizer)
  print(f"wrote {workdir / 'report.md'} and {workdir / 'layouts.png'}")


if __name__ == "__main__":
  main()
