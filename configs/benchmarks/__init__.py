"""Configs of the update-step benchmark (benchmarks.update_step)."""
