"""Algorithm 1 on unconditional images as a task for the training loop (core/train.py): the
iteration's two halves, what it logs, and `train_generation`, the entry point of tools/train.py.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import paddle

from ebm_vae.core.config import Config
from ebm_vae.core.ema import WeightAverage
from ebm_vae.core.models import build_models
from ebm_vae.core.runs import load_networks
from ebm_vae.core.stopping import TrainingError
from ebm_vae.core.teach import l2_norm, learn, revise
from ebm_vae.core.train import TeachTask, train
from ebm_vae.data.datasets import load_split
from ebm_vae.errors import UserError
from ebm_vae.utils.parallel import check_shards

GRID_IMAGES = 64


class Drawn(NamedTuple):
    """One iteration's data and chains: x, x_hat = g(z), x_tilde = Langevin(x_hat)."""
    x: paddle.Tensor
    x_hat: paddle.Tensor
    x_tilde: paddle.Tensor
    grad_rms: list[float]


class GenerationTask(TeachTask):
    """Variational MCMC teaching of f_theta, q_phi, g_alpha on unconditional images."""

    def __init__(self, cfg: Config):
        super().__init__(build_models(cfg.model), cfg.train)
        self.cfg = cfg
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.average = WeightAverage(self.models, cfg.train.ema) if cfg.train.ema > 0 else None

    def modules(self) -> dict[str, Any]:
        return {**super().modules(), **(self.average.modules() if self.average else {})}

    def distribute(self, workers: int, synced: Any) -> None:
        """Each worker runs its 1/workers share of the chains (and of the batch)."""
        super().distribute(workers, synced)
        self.chains = self.train_cfg.num_chains // workers

    def revise(self, batch: np.ndarray) -> Drawn:
        grad_rms: list[float] = []
        x_hat, x_tilde = revise(self.synced, self.chains, self.cfg.model.latent_dim,
                                self.cfg.langevin, grad_rms=grad_rms)  # steps 1-3
        return Drawn(paddle.to_tensor(batch), x_hat, x_tilde, grad_rms)

    def learn(self, drawn: Drawn) -> dict[str, float]:
        t, (x, x_hat, x_tilde, grad_rms) = self.cfg.train, drawn
        stats = learn(self.synced, self.opt_ebm, self.opt_vae, x, x_tilde, t.gamma,
                      data_noise=t.data_noise, energy_penalty=t.energy_penalty)  # steps 4-5
        if self.average is not None:
            self.average.update(self.models)
        # [CODE] monitor "avg.L2 dist": squared distance of the batch-mean images, per pixel.
        l2 = float(((x_tilde.mean(axis=0) - x.mean(axis=0)) ** 2).mean())
        self.last = (x_hat[:GRID_IMAGES].numpy(), x_tilde[:GRID_IMAGES].numpy())
        return {**asdict(stats), **chain_diagnostics(x_hat, x_tilde, grad_rms),
                "l2_mean_dist": l2, "ebm_weight_norm": l2_norm(self.models.ebm.parameters())}

    def panels(self) -> list[tuple[str, np.ndarray]]:
        if self.last is None:
            return []
        return [("VAE proposals g(z)", self.last[0]), ("Langevin-revised", self.last[1])]


def chain_diagnostics(x_hat: paddle.Tensor, x_tilde: paddle.Tensor, grad_rms: list[float]
                      ) -> dict[str, float]:
    """How far the Langevin chains moved (RMS per pixel of x_tilde - x_hat), how far they left
    the data range [-1, 1] (largest |x_tilde|), and the RMS of df/dx at the last step."""
    return {"chain_move": math.sqrt(float(((x_tilde - x_hat) ** 2).mean())),
            "revised_abs_max": float(x_tilde.abs().max()),
            "langevin_grad_rms": grad_rms[-1] if grad_rms else 0.0}


def train_generation(cfg: Config, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True, threads: int | None = None,
                     evaluation: Optional[Callable] = None,
                     init: str | Path | None = None) -> GenerationTask:
    """Train Algorithm 1 on `cfg.data` (or the given `images`), see `train`. `evaluation` builds
    the in-training quality curve when `cfg.eval.every > 0`
    (`ebm_vae.eval.evaluate.training_evaluation`; passed in, as core does not import eval).
    `init`: a new run starts from these trained networks (shipped weights, a run or checkpoint
    folder) at their iteration, so the data order and learning-rate schedule go on from there;
    the optimisers start fresh (Adam moments at zero), so this is not an exact resume, and the
    weight average (`train.ema`) starts at the loaded weights."""
    if cfg.eval.every > 0 and evaluation is None:
        raise TrainingError("eval.every > 0 needs the evaluation hook: call train_generation(..., "
                            "evaluation=ebm_vae.eval.evaluate.training_evaluation)")

    def build(found: np.ndarray, workers: int) -> GenerationTask:
        try:
            check_shards(cfg.train.batch_size, cfg.train.num_chains, len(found), workers)
        except ValueError as err:
            raise TrainingError(str(err)) from err
        return GenerationTask(cfg)  # several workers: starts from worker 0's parameters

    def start(task: GenerationTask) -> int:
        try:
            it, missing = load_networks(init, task.models)
        except UserError as err:
            raise TrainingError(f"cannot start from {init}: {err}") from err
        if missing:
            print(f"{init} holds no {', '.join(missing)} weights: starting "
                  f"{' and '.join(missing)} fresh (seeded initialisation)", file=sys.stderr)
        if task.average is not None:
            task.average.reset(task.models)
        return it or 0

    quality = ((lambda task, run_dir: evaluation(task.models, cfg, run_dir, progress,
                                                 task.average and task.average.models))
               if cfg.eval.every > 0 else None)
    return train(cfg, run_dir, images if images is not None else
                 (lambda: load_split(cfg.data.name, cfg.data.root, "train")[0]), build, quality,
                 max_iters, resume, progress, threads, init=start if init is not None else None)
