"""Experiments with RMSprop, a folder per job.

* :mod:`experiments.common`: what every job shares (data order, command line, JSON, the machine).
* :mod:`experiments.classification`: data, Flax models, ``train_and_evaluate``, the comparison of
  SGD, SGD with momentum, Adam and RMSprop, its metrics and plots.
* :mod:`experiments.sweeps`: hyperparameter sweeps (vmapped in one program, or trial by trial).
* :mod:`experiments.distributed`: training on a device mesh and across processes, with exact
  checkpoint-resume.
* :mod:`experiments.studies`: recurrent, non-stationary and sparse studies.

Configs live in ``configs/<job>/``; the update-step benchmark lives in :mod:`benchmarks`.
"""
