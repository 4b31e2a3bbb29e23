"""Evaluation: FID Inception, FID/IS math, the classifier metric, image metrics, and the one
evaluation path used by tools/evaluate.py and tools/reproduce.py (evaluate.py)."""
