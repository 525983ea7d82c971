"""Training on a device mesh and across processes, with exact checkpoint-resume."""
