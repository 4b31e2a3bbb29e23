"""GPU check of the faithful CIFAR-10 setting (experiments/cifar10.yaml), sized for about 8 minutes
on one GPU:

1. numerics: the same networks (built on the CPU, copied to the GPU), the same data batch and the
   same z: the decoder's proposals, a deterministic Langevin chain (noise off, the config's steps)
   and one `learn` (Algorithm 1, steps 4-5) on both devices; prints the largest relative
   difference of each quantity (the EBM's side; the VAE's loss draws its own noise) and whether
   it is within the stated tolerance;
2. speed: `--iters` training iterations of cifar10.yaml on the GPU (data: `--data-root`, else
   random images of CIFAR-10's shape, which cost the same), seconds per iteration (median of the
   iterations after the first 5) and Paddle's peak GPU memory.

Without a usable GPU it prints one line and exits 0. Not part of the test suite.

    python bench/gpu_check.py [--data-root CIFAR_FOLDERS] [--iters 200] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import paddle

from ebm_vae.core.config import load_config
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import build_models
from ebm_vae.core.teach import learn, make_optimizers
from ebm_vae.data.datasets import load_split
from ebm_vae.training.generation import train_generation

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "cifar10.yaml"
# float32 on two devices with different conv algorithms: f is a sum over a 256x4x4 map of values
# ~1e6, and a chain of 15 steps compounds the kernel differences; 1e-3 relative bounds them.
TOLERANCE = 1e-3
# loss_ebm = f_revised - f_data follows from these; the VAE's loss is not compared: its
# reparameterisation noise comes from each device's own random generator.
COMPARED = ("proposals", "revised", "f_data", "f_revised", "grad_norm_ebm", "ebm_after")


def gpu_ready() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def one_iteration(device: str, states: dict, cfg, x: np.ndarray, z: np.ndarray) -> dict:
    """Proposals, deterministic Langevin and one `learn` on `device`, from the given states."""
    paddle.set_device(device)
    models = build_models(cfg.model)
    for name, net in models._asdict().items():
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in states[name].items()})
    t = cfg.train
    optimizers = make_optimizers(models, t)
    with paddle.no_grad():
        x_hat = models.decoder(paddle.to_tensor(z))
    # autograd on both devices: the same computation, only the kernels differ
    x_tilde = langevin(models.ebm, x_hat, replace(cfg.langevin, noise=False, gradient="autograd"))
    stats = learn(models, optimizers, paddle.to_tensor(x), x_tilde, t)
    return {"proposals": x_hat.numpy(), "revised": x_tilde.numpy(), **asdict(stats),
            "ebm_after": np.concatenate([p.numpy().ravel() for p in models.ebm.parameters()])}


def numerics(cfg, images: np.ndarray) -> bool:
    """Compare one seeded iteration on CPU and GPU; print one line per quantity."""
    paddle.set_device("cpu")
    paddle.seed(0)
    models = build_models(cfg.model)
    states = {n: {k: v.numpy() for k, v in m.state_dict().items()}
              for n, m in models._asdict().items()}
    rng = np.random.default_rng(0)
    x = images[rng.choice(len(images), cfg.train.batch_size, replace=False)]
    z = rng.standard_normal((cfg.train.num_chains, cfg.model.latent_dim)).astype(np.float32)
    cpu, gpu = (one_iteration(d, states, cfg, x, z) for d in ("cpu", "gpu"))
    ok = True
    for key in COMPARED:
        a, b = np.asarray(cpu[key], np.float64), np.asarray(gpu[key], np.float64)
        rel = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
        ok &= rel <= TOLERANCE
        print(f"numerics {key:>14}: max relative difference {rel:.2e} "
              f"({'ok' if rel <= TOLERANCE else 'OVER'} {TOLERANCE:g})")
    return ok


def speed(cfg, images: np.ndarray, iters: int, out: Path) -> None:
    paddle.set_device("gpu")
    cfg = replace(cfg, train=replace(cfg.train, sample_every=10 ** 9, checkpoint_every=10 ** 9))
    train_generation(cfg, out, max_iters=iters, images=images, progress=False)
    with open(out / "log.csv") as f:
        secs = [float(r["sec_per_iter"]) for r in csv.DictReader(f)][5:]
    peak = paddle.device.cuda.max_memory_allocated() / 2 ** 30
    print(f"speed: {len(secs) + 5} iterations of cifar10.yaml ({cfg.train.num_chains} chains x "
          f"{cfg.langevin.steps} steps, batch {cfg.train.batch_size}) on "
          f"{paddle.device.cuda.get_device_name()}: {statistics.median(secs):.3f} s/iteration "
          f"(median after 5), peak GPU memory {peak:.2f} GiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="CIFAR-10 folder; default: random images of its shape")
    p.add_argument("--iters", type=int, default=200, help="training iterations on the GPU")
    p.add_argument("--out", help="run folder of the speed run (default: a temporary folder)")
    args = p.parse_args()
    if not gpu_ready():
        print("gpu_check: this Paddle sees no GPU (install paddlepaddle-gpu on a GPU machine); "
              "nothing checked")
        return 0
    cfg = load_config(CONFIG)
    if args.data_root:
        images = load_split("cifar10", args.data_root, "train")[0]
    else:
        print("data: random images of CIFAR-10's shape (no --data-root)")
        images = np.random.default_rng(1).uniform(-1, 1, (5000, 3, 32, 32)).astype(np.float32)
    ok = numerics(cfg, images)
    with tempfile.TemporaryDirectory() as tmp:
        speed(cfg, images, args.iters, Path(args.out or Path(tmp) / "run"))
    print("gpu_check:", "numerics within tolerance" if ok else "numerics OVER tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
