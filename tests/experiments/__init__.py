"""The experiments: data, training, comparison, sweeps, distribution, studies, benchmarks."""
