"""Reading compiled programs: counts of collectives and of memory passes in HLO text.

Below both the jobs (the sharded trainer counts its step's collectives) and the benchmark (the
update step's passes over memory), so that neither imports the other.
"""

from __future__ import annotations

import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


def count_collectives(hlo_text: str) -> dict[str, int]:
  """How many of each collective operation a compiled program's HLO text contains.

  Asynchronous collectives appear as ``-start``/``-done`` pairs and are counted once.
  """
  counts = {}
  for name in COLLECTIVES:
    pattern = rf"\b{name}(?:-start)?\("
    counts[name] = len(re.findall(pattern, hlo_text))
  return counts


def count_passes(hlo_text: str, size: int) -> dict[str, int]:
  """Fusions and copies with ``size``-element results in a compiled module's entry.

  On a CPU each is one loop over memory, so their number is the number of passes over arrays
  of that size.
  """
  entry = hlo_text[hlo_text.index("\nENTRY"):]
  counts = {"fusions": 0, "copies": 0}
  for line in entry.splitlines():
    match = re.search(r"= \(?[a-z0-9]+\[(\d+)\]\S* (fusion|copy)\(", line)
    if match and int(match.group(1)) == size:
      counts["fusions" if match.group(2) == "fusion" else "copies"] += 1
  return counts
