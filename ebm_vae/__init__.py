"""ebm-vae: EBM with a VAE as amortized sampler (Xie, Zheng & Li, AAAI 2021) in PaddlePaddle.

Public API (ebm_vae/api.py), for notebooks:

    import ebm_vae
    run = ebm_vae.load_run("runs/mnist")
    x = ebm_vae.sample(run, n=64, steps=30)   # numpy [64, C, H, W] in [-1, 1]

Sub-packages: core (config, models, langevin, teach, train, runs, sampling), data (datasets),
eval (FID/IS, classifier FID, reconstruction), completion (conditional model for image
completion), reproduce (tables), utils (runtime, cli, images, atomic writes, data-parallel).
Importing the package has no side effects: it does not even import Paddle until `load_run`,
`sample` or a submodule is used, and it never selects a device, sets threads or writes files.
"""
__version__ = "0.1.0"
__all__ = ["load_run", "sample", "Run"]


def __getattr__(name: str):
    if name in __all__:
        from ebm_vae import api
        return getattr(api, name)
    raise AttributeError(f"module 'ebm_vae' has no attribute {name!r}")
