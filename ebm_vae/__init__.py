"""ebm-vae: EBM with a VAE as amortized sampler (Xie, Zheng & Li, AAAI 2021) in PaddlePaddle.

Modules: config (YAML -> typed config), models (f_theta, q_phi, g_alpha), langevin (eq. L),
teach (losses, Algorithm 1's teach_step), data (datasets), train (run loop, checkpoints),
distributed (data-parallel workers), sampling and evaluation (samples, FID/IS, classifier FID,
reconstruction), completion (conditional model for image completion), runtime (device, CPU).
Importing the package has no side effects; import the submodule you need.
"""
__version__ = "0.1.0"
