"""Image classification: data, Flax models, training, the comparison."""
