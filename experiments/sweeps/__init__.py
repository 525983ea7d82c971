"""Hyperparameter sweeps: vmapped in one compiled program (sweep.py), or trial by trial."""
