"""Training: the trainer class, optimiser set-up, checkpoints and DDP helpers."""
