"""The training worker: runs queued fine-tune jobs and publishes their checkpoints."""
