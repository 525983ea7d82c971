"""Benchmarks of the update step (against optax and PyTorch) and the compiled programs' HLO."""
