"""Saving a run's final variables (every seed's parameters and batch statistics) with Orbax."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from experiments.classification.steps import TrainState


def save_checkpoint(path: Path, states: TrainState) -> None:
  """Saves the (seed-stacked) parameters and batch statistics with Orbax."""
  import orbax.checkpoint as ocp

  target = {
      "params": nnx.to_pure_dict(states.params),
      "model_state": nnx.to_pure_dict(states.model_state),
  }
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path.absolute(), target, force=True)
  checkpointer.wait_until_finished()
