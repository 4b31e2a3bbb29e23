import os

from setuptools import find_packages, setup

# CPU Paddle by default. With a GPU, name the GPU wheel instead (see README):
#   EBM_VAE_PADDLE=paddlepaddle-gpu pip install -e .
PADDLE = os.environ.get("EBM_VAE_PADDLE", "paddlepaddle>=2.6")

setup(
    name="ebm-vae",
    version="0.1.0",
    description="Learning an EBM with a VAE as amortized sampler (Xie, Zheng & Li, AAAI 2021) in PaddlePaddle",
    packages=find_packages(include=["ebm_vae", "ebm_vae.*"]),
    python_requires=">=3.9",
    install_requires=[PADDLE, "numpy", "pyyaml", "pillow", "scipy"],
    extras_require={"test": ["pytest"], "vdl": ["visualdl"]},
)
