"""The pass engine: source -> decode -> reducer(s) -> state, in batches or worker tasks, with
checkpoints, devices and torch.distributed."""
