"""What a job's config must hold: a schema of the fields the job reads, checked before any work.

Each job declares one :class:`ConfigSchema` next to its driver (``experiments/<job>/schema.py``
or the study's module) listing every field its code reads. :meth:`ConfigSchema.check` refuses a
config that lacks one of them or holds one the job does not read (a typo, or a field copied from
another job's config, which would otherwise be silently ignored) with a
:class:`~experiments.common.errors.ConfigError` naming the field; :func:`.cli.run_job` calls it
right after parsing ``--config``, so the mistake is one ``error:`` line before any data is loaded.

A field that holds a nested ``ConfigDict`` of fixed fields (a mesh, the multi-host settings) has
a schema of its own; a field whose entries are free-form (``optimizers``, ``model_kwargs``) is a
plain field, and its entries are checked by the code that reads them. A field read only under a
condition on the config (``data_dir`` only by data sets that have files) is declared with the
condition, and is then required exactly when the condition holds and refused otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from experiments.common.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ConfigSchema:
  """The fields a job reads from its config.

  Attributes:
    job: the job's name in messages, e.g. ``"experiments.distributed.train"``.
    fields: every field read unconditionally, in the order of the shipped configs.
    nested: fields holding a ``ConfigDict`` of fixed fields, with the schema of those.
    conditional: fields read only when ``condition(config)`` holds, with the condition and the
      reason given in messages (``"the data set has files"``).
    example: a shipped config that holds every field, named in messages.
  """

  job: str
  fields: tuple[str, ...]
  nested: Mapping[str, ConfigSchema] = dataclasses.field(default_factory=dict)
  conditional: Mapping[str, tuple[Callable[[Any], bool], str]] = dataclasses.field(
      default_factory=dict)
  example: str = ""

  def __post_init__(self) -> None:
    overlap = (set(self.fields) | set(self.nested)) & set(self.conditional)
    if overlap:
      raise ValueError(f"fields {sorted(overlap)} are both unconditional and conditional.")

  def expected(self, config: Any) -> list[str]:
    """The fields ``config`` must hold: the unconditional ones, then those whose condition holds.

    The conditions are evaluated only once the unconditional fields are known to be present.
    """
    names = [*self.fields, *(name for name in self.nested if name not in self.fields)]
    return names + [name for name, (condition, _) in self.conditional.items()
                    if condition(config)]

  def check(self, config: Any, prefix: str = "config") -> None:
    """Raises :class:`ConfigError` naming the first missing or unread field of ``config``.

    Args:
      config: a ``ConfigDict`` (or any mapping).
      prefix: how the config is named in the message (``config.mesh`` for a nested one).
    """
    self.check_present(config, prefix)
    present = list(config.keys())
    expected = self.expected(config)
    unread = [name for name in present if name not in expected]
    if unread:
      reasons = [f"{name} is read only when {self.conditional[name][1]}"
                 for name in unread if name in self.conditional]
      why = f" ({'; '.join(reasons)})" if reasons else ""
      raise ConfigError(
          f"{prefix}: field(s) {unread} not read by {self.job}{why}; a field no code reads would "
          f"be silently ignored: remove it from the config{self._where}."
      )
    for name, schema in self.nested.items():
      schema.check(config[name], prefix=f"{prefix}.{name}")

  @property
  def _where(self) -> str:
    return f" (see {self.example})" if self.example else ""

  def check_present(self, config: Any, prefix: str = "config") -> None:
    """Raises :class:`ConfigError` naming the first field the job reads that ``config`` lacks.

    Fields of other jobs are let through: for a library call on a config that serves several
    jobs (a sweep's config holds the fields of the classification runs it makes).
    """
    if not isinstance(config, Mapping) and not hasattr(config, "keys"):
      raise ConfigError(f"{prefix} must be a ConfigDict of fields; got {type(config).__name__}.")
    where = self._where
    present = list(config.keys())
    missing = [name for name in (*self.fields, *self.nested) if name not in present]
    if missing:
      raise ConfigError(
          f"{prefix}: no field(s) {missing}, which {self.job} reads; every field the code reads "
          f"must be set in the config file{where}."
      )
    expected = self.expected(config)
    missing = [name for name in expected if name not in present]
    if missing:
      reasons = "; ".join(f"{name}: read when {self.conditional[name][1]}" for name in missing)
      raise ConfigError(
          f"{prefix}: no field(s) {missing}, which {self.job} reads for this config ({reasons})"
          f"{where}."
      )
