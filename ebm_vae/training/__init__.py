"""The machinery around the method: the training loop (trainer.py, generation.py) and run folders
(checkpoints, the log and grids, the best state, locks, resume, loading and exporting a run)."""
