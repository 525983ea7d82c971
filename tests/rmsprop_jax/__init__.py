"""The library: parity with optax, PyTorch, Keras and TF1, guarantees, dtypes, sharding."""
