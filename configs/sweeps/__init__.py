"""Configs of the hyperparameter sweeps (experiments.sweeps)."""
