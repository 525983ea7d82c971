"""What a distributed-training config holds: the fields :mod:`experiments.distributed.train` reads.

The model, data and optimizer fields of a classification config (the same model and train
step), without the seed-layout and reporting fields of the comparison (``num_seeds``,
``vmap_seeds``, ``epoch_loop``, ``scan_unroll``, ``augment``, ``target_accuracy``,
``save_checkpoint``): one seed per run, the mesh in their place. Then the mesh, the multi-process
settings and the checkpointing. :func:`experiments.common.cli.run_job` refuses a config with a
field more or less, so ``--config.augment=True`` is an error here, not a silently ignored flag.
"""

from __future__ import annotations

from experiments.classification import schema as classification_schema
from experiments.common.config_schema import ConfigSchema

MESH_SCHEMA = ConfigSchema(
    job="experiments.distributed.sharding", fields=("data", "model", "min_shard_size"),
    example="configs/distributed/digits_distributed.py",
)
DISTRIBUTED_SCHEMA = ConfigSchema(
    job="experiments.distributed.multihost",
    fields=("coordinator_address", "num_processes", "process_id", "local_device_ids",
            "auto_detect", "initialization_timeout", "cpu_collectives"),
    example="configs/distributed/digits_distributed.py",
)
SCHEMA = ConfigSchema(
    job="experiments.distributed.train",
    fields=(
        "name", "dataset", "model", "model_kwargs", "batch_size", "eval_batch_size", "num_epochs",
        "seed", "lr_schedule", "optimizer", "optimizers", "tuned_from",
        "checkpoint_every", "max_checkpoints_to_keep", "async_checkpointing", "resume",
        "checkpoint_fallback", "stop_after_steps",
    ),
    nested={"mesh": MESH_SCHEMA, "distributed": DISTRIBUTED_SCHEMA},
    conditional=classification_schema.SCHEMA.conditional,
    example="configs/distributed/digits_distributed.py",
)
