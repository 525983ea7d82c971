"""The error types a user's mistake raises, as opposed to a bug: one base every job subclasses.

:func:`experiments.common.cli.run` answers any :class:`UserError` with one ``error:`` line and
exit code 2; anything else keeps its traceback. A job defines its own subclasses (a missing data
set, a checkpoint from another run) next to the code that raises them, so the command line needs
to import no job to recognise them.
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake in the command, the config, the workdir or the data; the message names the fix."""


class ConfigError(UserError, ValueError):
  """A config field or command-line value that cannot work; the message names it and the fix."""
