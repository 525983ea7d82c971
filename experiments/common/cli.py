"""What every command-line entry point shares: config-file checks, quiet start-up, user errors.

A user's mistake (a missing config file, a field out of range, a checkpoint from another run, a
missing data set) ends the command with one ``error:`` line and exit code 2; a bug keeps its
traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.classification import data as data_lib
from experiments.distributed import checkpointing

USAGE_ERROR_EXIT_CODE = 2


class ConfigError(ValueError):
  """A config field or command-line value that cannot work; the message names it and the fix."""


# Mistakes in the command, the config, the workdir or the data, as opposed to bugs.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    checkpointing.CheckpointMismatchError,
    checkpointing.CheckpointCorruptedError,
    data_lib.DatasetUnavailableError,
    data_lib.ChecksumError,
    data_lib.CorruptFileError,
)


def fail(message: str) -> None:
  """Prints ``error: <message>`` to stderr and exits with code 2."""
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(USAGE_ERROR_EXIT_CODE)


class _DropBenignOrbaxWarnings(logging.Filter):
  """Drops Orbax's "Metadata file does not exist" warning, which reads like corruption.

  Orbax emits it when it reads a checkpoint item that has no per-item metadata file, as every
  item written by ``StandardSave`` here is; the checkpoints' integrity is checked separately
  (:mod:`experiments.distributed.checkpointing`).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Metadata file does not exist")


_ORBAX_FILTER = _DropBenignOrbaxWarnings()


def quiet_startup() -> None:
  """Keeps JAX's and Orbax's chatter (the absent TPU, file operations) off the terminal."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("jax._src.xla_bridge", "absl"):
    logging.getLogger(name).setLevel(logging.WARNING)
  if _ORBAX_FILTER not in logging.getLogger("absl").filters:
    logging.getLogger("absl").addFilter(_ORBAX_FILTER)


def config_argument(argv: Sequence[str]) -> str | None:
  """The value of ``--config`` in ``argv`` (``--config=x`` or ``--config x``), if any."""
  for index, argument in enumerate(argv):
    if argument.startswith("--config="):
      return argument.split("=", 1)[1]
    if argument == "--config" and index + 1 < len(argv):
      return argv[index + 1]
  return None


def check_config_file(value: str) -> None:
  """Raises :class:`ConfigError` unless ``value`` (``path[:arg]``) names a loadable config.

  ml_collections would otherwise answer a missing file with two chained tracebacks, and an
  argument to a ``get_config()`` that takes none with a ``TypeError``.
  """
  path, _, argument = value.partition(":")
  if not Path(path).is_file():
    configs = sorted(str(p) for p in Path("configs").rglob("*.py")
                     if "def get_config" in p.read_text())
    raise ConfigError(
        f"--config={value}: no such file. The configs are: {', '.join(configs) or 'configs/*.py'}."
    )
  spec = importlib.util.spec_from_file_location("_checked_config", path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"--config={value}: not a Python file.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"--config={value}: the file has no get_config() function.")
  takes_argument = bool(inspect.signature(get_config).parameters)
  if argument and not takes_argument:
    raise ConfigError(
        f"--config={value}: {path} takes no ':{argument}' variant; use --config={path} and "
        f"override fields with --config.<field>=<value>."
    )


def check_workdir(workdir: str) -> None:
  """Raises :class:`ConfigError` if ``workdir`` exists and is not a folder."""
  if Path(workdir).exists() and not Path(workdir).is_dir():
    raise ConfigError(f"--workdir={workdir} is a file; pass a folder (new, or a run's).")


def run(main: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None) -> None:
  """``absl.app.run(main)`` with the checks and error reporting described in the module doc."""
  from absl import app

  argv = list(sys.argv if argv is None else argv)
  quiet_startup()
  config = config_argument(argv[1:])
  if config is not None:
    try:
      check_config_file(config)
    except ConfigError as error:
      fail(str(error))

  def checked_main(args: Sequence[str]) -> Any:
    quiet_startup()  # Again: app.run sets absl's verbosity from its flags.
    try:
      return main(args)
    except USER_ERRORS as error:
      fail(str(error))

  app.run(checked_main, argv=argv)


def run_job(
    job: Callable[..., Any],
    *,
    default_config: str | None = None,
    default_workdir: str = "runs/{name}",
    switches: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
  """The command line of a job: ``--config FILE[:variant]``, ``--workdir DIR`` and ``switches``.

  Defines the flags (here, not at import, so job modules import side by side), then calls
  ``job(config, workdir, **switch_values)`` through :func:`run`. ``--config`` takes overrides
  such as ``--config.num_seeds=5`` and is required unless ``default_config`` is given;
  ``--workdir`` defaults to ``default_workdir`` filled in from the config's fields
  (``"runs/{name}_{optimizer}"``) and must not be a file.

  Args:
    job: what the command does, given the config, the workdir and the switches.
    default_config: the config file used without ``--config``.
    default_workdir: the workdir without ``--workdir``, a ``str.format`` pattern over the config.
    switches: boolean flags, name to help text; each is passed to ``job`` by name.
    argv: the command line (``sys.argv`` if None).
  """
  from absl import app, flags
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
      "config", default_config, "Path to a config file under configs/, optionally :variant.",
      lock_config=True,
  )
  workdir_flag = flags.DEFINE_string("workdir", None, f"Output folder; default {default_workdir}.")
  switch_flags = {name: flags.DEFINE_bool(name, False, help_text)
                  for name, help_text in (switches or {}).items()}
  if default_config is None:
    flags.mark_flags_as_required(["config"])

  def main(args: Sequence[str]) -> None:
    if len(args) > 1:
      raise app.UsageError(f"Unexpected command-line arguments: {args[1:]}.")
    config = config_flag.value
    workdir = workdir_flag.value or default_workdir.format_map(config)
    check_workdir(workdir)
    job(config, workdir, **{name: flag.value for name, flag in switch_flags.items()})

  run(main, argv=argv)
