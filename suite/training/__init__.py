"""Training: compiled steps, the optimiser, the trainer and everything a run folder needs
to survive (checkpoints, the lock, stop signals)."""
