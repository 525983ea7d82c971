"""Hyperparameter sweeps: vmapped in one compiled program (sweep.py), or trial by trial
(trial_loop.py); both share the search spaces, the validation split and the selection."""
