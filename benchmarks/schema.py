"""What a benchmark config holds: the fields :mod:`benchmarks.update_step` reads.

:func:`experiments.common.cli.run_job` refuses a config with a field more or less before any
measurement; a new field of the benchmark is added here and in ``configs/benchmarks/``.
"""

from __future__ import annotations

from experiments.common.config_schema import ConfigSchema

SCHEMA = ConfigSchema(
    job="benchmarks.update_step",
    fields=(
        "name", "sizes", "learning_rate", "decay", "eps", "momentum", "warmup_steps",
        "min_rounds", "max_rounds", "time_budget_s", "include_torch", "compile_programs",
        "compile_size", "compile_repeats", "compile_optimizers", "sweep_path", "state_formats",
        "seed",
    ),
    example="configs/benchmarks/benchmark.py",
)
