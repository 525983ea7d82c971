"""What every command-line entry point shares: config-file checks, quiet start-up, user errors.

A user's mistake (a missing config file, a field out of range or one the job does not read, a
checkpoint from another run, a missing data set: any :class:`.errors.UserError`) ends the command
with one ``error:`` line and exit code 2; a bug keeps its traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.common.config_schema import ConfigSchema
from experiments.common.errors import ConfigError, UserError

USAGE_ERROR_EXIT_CODE = 2


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


def check_config_file(value: str) -> Callable[[], Any]:
  """Raises :class:`ConfigError` unless ``value`` (``path[:arg]``) names a loadable config.

  ml_collections would otherwise answer a missing file with two chained tracebacks, and an
  argument to a ``get_config()`` that takes none with a ``TypeError``.

  Returns:
    A function of nothing that builds the config (``get_config(arg)`` or ``get_config()``).
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
  return lambda: get_config(argument) if argument else get_config()


def check_overrides(value: str, build: Callable[[], Any], argv: Sequence[str]) -> None:
  """Raises :class:`ConfigError` for a ``--config.<field>=...`` naming no field of the config.

  ml_collections would answer it with a flag-parsing traceback; a field the config lacks is one
  its job does not read (:mod:`experiments.common.config_schema`), so the override would not
  change anything even if it were accepted.
  """
  overrides = [argument[len("--config."):].split("=", 1)[0] for argument in argv
               if argument.startswith("--config.")]
  if not overrides:
    return
  config = build()
  for override in overrides:
    node, parts = config, override.split(".")
    for depth, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        parent = ".".join(["config", *parts[:depth]])
        raise ConfigError(
            f"--config.{override}: {value} has no field {parent}.{part}, so no code of this job "
            f"reads it; {parent}'s fields are {sorted(keys)}."
        )
      node = node[part]


def check_workdir(workdir: str) -> None:
  """Raises :class:`ConfigError` if ``workdir`` exists and is not a folder."""
  if Path(workdir).exists() and not Path(workdir).is_dir():
    raise ConfigError(f"--workdir={workdir} is a file; pass a folder (new, or a run's).")


def check_command_line(argv: Sequence[str], default_config: str | None = None) -> None:
  """Fails with one ``error:`` line if ``--config`` (or ``default_config``) names no loadable
  config, or an override ``--config.<field>`` names a field it does not have."""
  config = config_argument(argv[1:]) or default_config
  if config is not None:
    try:
      check_overrides(config, check_config_file(config), argv[1:])
    except ConfigError as error:
      fail(str(error))


def run(
    main: Callable[[Sequence[str]], Any],
    argv: Sequence[str] | None = None,
    *,
    default_config: str | None = None,
) -> None:
  """``absl.app.run(main)`` with the checks and error reporting described in the module doc.

  ``default_config`` is the config file used without ``--config`` (its overrides are checked
  too).
  """
  from absl import app

  argv = list(sys.argv if argv is None else argv)
  quiet_startup()
  check_command_line(argv, default_config)

  def checked_main(args: Sequence[str]) -> Any:
    quiet_startup()  # Again: app.run sets absl's verbosity from its flags.
    try:
      return main(args)
    except UserError as error:
      fail(str(error))

  app.run(checked_main, argv=argv)


def run_job(
    job: Callable[..., Any],
    *,
    default_config: str | None = None,
    default_workdir: str = "runs/{name}",
    switches: Mapping[str, str] | None = None,
    schema: ConfigSchema | None = None,
    argv: Sequence[str] | None = None,
) -> None:
  """The command line of a job: ``--config FILE[:variant]``, ``--workdir DIR`` and ``switches``.

  Defines the flags (here, not at import, so job modules import side by side), then calls
  ``job(config, workdir, **switch_values)`` through :func:`run`. ``--config`` takes overrides
  such as ``--config.num_seeds=5`` and is required unless ``default_config`` is given;
  ``--workdir`` defaults to ``default_workdir`` filled in from the config's fields
  (``"runs/{name}_{optimizer}"``) and must not be a file. With ``schema`` the config (after the
  overrides) must hold exactly the fields the job reads (:meth:`.ConfigSchema.check`), checked
  before the workdir and before any work.

  Args:
    job: what the command does, given the config, the workdir and the switches.
    default_config: the config file used without ``--config``.
    default_workdir: the workdir without ``--workdir``, a ``str.format`` pattern over the config.
    switches: boolean flags, name to help text; each is passed to ``job`` by name.
    schema: the fields the job reads, declared next to its driver.
    argv: the command line (``sys.argv`` if None).
  """
  from absl import app, flags
  from ml_collections import config_flags

  argv = list(sys.argv if argv is None else argv)
  # Before the flags are defined: defining --config with a default already applies overrides.
  check_command_line(argv, default_config)
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
    if schema is not None:
      schema.check(config)
    workdir = workdir_flag.value or default_workdir.format_map(config)
    check_workdir(workdir)
    job(config, workdir, **{name: flag.value for name, flag in switch_flags.items()})

  run(main, argv=argv, default_config=default_config)
