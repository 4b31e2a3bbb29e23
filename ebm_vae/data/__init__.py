"""Datasets: MNIST / Fashion-MNIST / CIFAR-10 (datasets.py) and image folders for completion
(folders.py: Paris Street View, CMP Facade)."""
