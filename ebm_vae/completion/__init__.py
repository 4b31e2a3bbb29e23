"""Image completion: conditional variational MCMC teaching (model.py), masks, classical fill
baselines and evaluation."""
