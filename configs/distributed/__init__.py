"""Configs of the distributed training (experiments.distributed.train)."""
