"""Experiments: SGD, SGD with momentum, Adam and RMSprop compared on Flax NNX models.

* :mod:`experiments.data` loads digits (bundled with scikit-learn), Fashion-MNIST and CIFAR-10.
* :mod:`experiments.models` holds the Flax NNX models (MLP, small CNNs, a CIFAR CNN).
* :mod:`experiments.train` holds the functional training step, the optimizer factory and
  ``train_and_evaluate(config, workdir)``.
* :mod:`experiments.compare` runs all four optimizers on one config and writes the report.
* :mod:`experiments.train_distributed` runs the same training step on a device mesh
  (:mod:`experiments.sharding`), across processes (:mod:`experiments.distributed`), with exact
  checkpoint-resume (:mod:`experiments.checkpointing`); see ``docs/distributed.md``.
"""
