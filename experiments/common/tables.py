"""Markdown tables of the reports: one helper every job's ``summary.md`` or ``report.md`` uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ALIGNMENTS = {"left": "---", "right": "---:", "center": ":---:"}


def markdown_table(
    header: Sequence[Any], rows: Sequence[Sequence[Any]], *, align: Sequence[str] | None = None
) -> str:
  """A GitHub-flavoured Markdown table, one line per row, cells written with ``str``.

  Args:
    header: the column titles.
    rows: the rows, each with one cell per column.
    align: per column ``"left"`` (default), ``"right"`` or ``"center"``.

  Returns:
    The table's lines joined by newlines, without a trailing newline.
  """
  align = ["left"] * len(header) if align is None else list(align)
  if len(align) != len(header) or any(side not in ALIGNMENTS for side in align):
    raise ValueError(f"align must give one of {sorted(ALIGNMENTS)} per column of {list(header)}; "
                     f"got {align}.")
  for index, row in enumerate(rows):
    if len(row) != len(header):
      raise ValueError(f"rows[{index}] has {len(row)} cells for {len(header)} columns.")
  lines = ["| " + " | ".join(str(cell) for cell in header) + " |",
           "|" + "|".join(ALIGNMENTS[side] for side in align) + "|"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)
