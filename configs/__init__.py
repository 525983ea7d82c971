"""Experiment configs in the style of Flax's examples: each module's ``get_config()`` returns
an ``ml_collections.ConfigDict``; pass the file to ``python -m experiments.compare --config``."""
