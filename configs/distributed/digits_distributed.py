"""Digits, RMSprop, on a device mesh, resumable: the distributed-training configuration.

The data, model, batch size, optimizer hyperparameters and seed of
``configs/classification/digits.py`` (only the fields :mod:`experiments.distributed.train` reads,
:data:`experiments.distributed.schema.SCHEMA`) plus the mesh, multi-process and checkpoint
fields of the distributed job. One seed per run. Defaults: every device on
the ``data`` axis (pure data parallelism), one process, a checkpoint every 50 steps and at the
end, resume from the newest good checkpoint in the workdir.

Typical overrides (see ``docs/distributed.md``)::

    --config.mesh.model=2                         # split parameters over 2 devices
    --config.distributed.coordinator_address=10.0.0.1:1234 --config.distributed.num_processes=2
    --config.distributed.process_id=0             # or $JAX_COORDINATOR_ADDRESS etc.
    --config.resume=False                         # ignore existing checkpoints
"""

import ml_collections

from configs.classification import digits


def get_config() -> ml_collections.ConfigDict:
  """The digits RMSprop run on a mesh, with checkpoints."""
  comparison = digits.get_config()
  config = ml_collections.ConfigDict()
  config.name = "digits_distributed"
  for field in ("dataset", "model", "model_kwargs", "batch_size", "eval_batch_size", "seed",
                "lr_schedule", "optimizer", "optimizers", "tuned_from"):
    config[field] = comparison[field]
  config.num_epochs = 10

  # Device mesh: data=-1 takes every device the model axis leaves; model=1 keeps whole
  # parameters on each device. Parameters with fewer elements than min_shard_size stay whole.
  config.mesh = ml_collections.ConfigDict({"data": -1, "model": 1, "min_shard_size": 1024})

  # Multi-process start-up (experiments/distributed/multihost.py). Unset fields ("" / -1) fall back
  # to
  # $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID; auto_detect hands them to
  # JAX's Slurm / Open MPI / TPU-pod detection. Nothing set: a single-process run.
  config.distributed = ml_collections.ConfigDict({
      "coordinator_address": "",
      "num_processes": -1,
      "process_id": -1,
      "local_device_ids": "",
      "auto_detect": False,
      "initialization_timeout": 300,
      "cpu_collectives": "gloo",
  })

  # Checkpoints (experiments/distributed/checkpointing.py) in <workdir>/checkpoints.
  config.checkpoint_every = 50  # Steps; 0 saves only at the end.
  config.max_checkpoints_to_keep = 3
  config.async_checkpointing = True
  config.resume = True  # Continue from the newest good checkpoint if one exists.
  config.checkpoint_fallback = True  # A corrupted newest checkpoint: use the previous one.
  config.stop_after_steps = 0  # Stop early, as a preempted job would; 0 runs to the end.
  return config
