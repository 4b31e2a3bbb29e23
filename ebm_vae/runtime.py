"""Device selection and seeding (explicit calls; importing ebm_vae changes nothing)."""
from __future__ import annotations

import paddle


def set_device(device: str) -> None:
    """Use 'cpu' or 'gpu'; a clear error if a GPU is asked for but Paddle has none."""
    if device == "gpu" and not (paddle.is_compiled_with_cuda()
                                and paddle.device.cuda.device_count() > 0):
        raise RuntimeError("device 'gpu' requested, but this Paddle has no usable GPU "
                           "(install paddlepaddle-gpu, or use --device cpu)")
    paddle.set_device(device)


def seed_all(seed: int) -> None:
    """Seed Paddle's generators (model init, z, Langevin noise, reparameterisation)."""
    paddle.seed(seed)
