"""Experiment configs in the style of Flax's examples, a folder per job (classification, sweeps,
distributed, studies, benchmarks): each module's ``get_config()`` returns an
``ml_collections.ConfigDict``; pass the file to the job's ``--config``
(``python -m experiments.classification.compare --config configs/classification/digits.py``)."""
