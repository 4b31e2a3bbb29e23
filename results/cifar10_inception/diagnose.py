"""Why CIFAR-10 samples look alike, measured on checkpoints of a run (docs/method.md §9).

For each checkpoint folder: draw N proposals g(z) and their revised samples with the config's
training chain (seeded), and compare with N training images:

- diversity: mean pairwise RMS distance per pixel within each set (data, proposals, revised), and
  the mean RMS distance of each sample to its nearest other sample of the same set;
- the chains: RMS move of Langevin per pixel (revised - proposals) and RMS df/dx at the proposals;
- the VAE's use of z: KL(q(z|x~) || N(0, I)) per image and the active units (latent dimensions
  whose posterior mean varies over x~ with variance > 0.01, Burda et al. 2016);
- the lattice: the share of spectral power (per image, mean removed) at the 2-pixel period, the
  frequency row and column 16 of the 32-point FFT, where a stride-2 transposed conv leaves
  its checkerboard.

    python results/cifar10_inception/diagnose.py --data-root CIFAR_FOLDERS --n 256 \
        RUN/checkpoints/iter_0000250 RUN/checkpoints/iter_0000500 > diagnosis.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import paddle
from PIL import Image

from ebm_vae.core.langevin import energy_grad
from ebm_vae.training.runs import load_run
from ebm_vae.core.sampling import ancestral_sample
from ebm_vae.utils.runtime import configure_cpu


def pairwise_rms(x: np.ndarray) -> tuple[float, float]:
    """(mean pairwise RMS distance per pixel, mean RMS distance to the nearest other image)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    sq = (flat ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0) / flat.shape[1]
    off = ~np.eye(len(x), dtype=bool)
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(d2[off]).mean()), float(np.sqrt(d2.min(1)).mean())


def lattice_share(x: np.ndarray) -> float:
    """Share of the (mean-removed) spectral power at the 2-pixel period (FFT row/column N/2)."""
    x = x - x.mean(axis=(2, 3), keepdims=True)
    p = np.abs(np.fft.fft2(x)) ** 2
    h = x.shape[-1] // 2
    nyq = p[..., h, :].sum(-1) + p[..., :, h].sum(-1) - p[..., h, h]
    return float((nyq.sum() / p.sum()))


def vae_use(models, x: np.ndarray) -> tuple[float, int]:
    """Mean KL(q(z|x) || N(0, I)) per image and the number of active latent units."""
    with paddle.no_grad():
        mu, log_sigma = models.encoder(paddle.to_tensor(x))
    mu, ls = mu.numpy().astype(np.float64), log_sigma.numpy().astype(np.float64)
    kl = 0.5 * (mu ** 2 + np.exp(2 * ls) - 2 * ls - 1).sum(1)
    return float(kl.mean()), int((mu.var(0) > 0.01).sum())


def diagnose(ckpt: str, data: np.ndarray, n: int, seed: int) -> dict[str, float]:
    run = load_run(ckpt)
    cfg = run.cfg
    paddle.seed(seed)
    pair = ancestral_sample(run.models, n, cfg.model.latent_dim, cfg.langevin,
                            cfg.train.num_chains, progress=False)
    grad = energy_grad(run.models.ebm, paddle.to_tensor(pair.proposals)).numpy()
    row = {"checkpoint": ckpt, "iteration": run.iteration,
           "chain_move": float(np.sqrt(((pair.revised - pair.proposals) ** 2).mean())),
           "grad_rms_at_proposals": float(np.sqrt((grad ** 2).mean()))}
    for name, x in (("data", data), ("proposals", pair.proposals),
                    ("revised", np.clip(pair.revised, -1, 1))):
        row[f"pairwise_{name}"], row[f"nearest_{name}"] = pairwise_rms(x)
        row[f"lattice_{name}"] = lattice_share(x)
    row["kl_revised"], row["active_units"] = vae_use(run.models, pair.revised)
    return row


def train_images(root: Path, n: int) -> np.ndarray:
    """n training images (a seeded choice of train/<class>/*), float32 [n, 3, 32, 32] in [-1, 1]."""
    files = sorted((root / "train").glob("*/*"))
    pick = np.random.default_rng(0).choice(len(files), n, replace=False)
    x = np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in pick])
    return (x.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint or run folders")
    p.add_argument("--data-root", required=True, help="CIFAR-10 folder (train/<class>/*.jpg)")
    p.add_argument("--n", type=int, default=256, help="images per set")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    configure_cpu(1)
    data = train_images(Path(args.data_root), args.n)
    out = None
    for ckpt in args.checkpoints:
        row = diagnose(ckpt, data, args.n, args.seed)
        if out is None:
            out = csv.DictWriter(sys.stdout, fieldnames=list(row))
            out.writeheader()
        out.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in row.items()})
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
