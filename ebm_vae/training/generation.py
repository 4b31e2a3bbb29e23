"""Algorithm 1 on unconditional images as a task for the trainer (training/trainer.py): one
`teach_step` per batch, the weight average and what it logs, and `train_generation`, the entry
point of tools/train.py.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

import numpy as np
import paddle

from ebm_vae.core.config import Config
from ebm_vae.core.ema import WeightAverage
from ebm_vae.core.models import build_models
from ebm_vae.core.teach import l2_norm, teach_step
from ebm_vae.data.datasets import load_split
from ebm_vae.errors import UserError
from ebm_vae.training.record import Evaluation, Plots
from ebm_vae.training.runs import load_networks
from ebm_vae.training.stopping import TrainingError
from ebm_vae.training.trainer import TeachTask, train
from ebm_vae.utils.parallel import check_shards

GRID_IMAGES = 64
GENERATION_PLOTS: Plots = [("EBM loss: mean f(revised) - mean f(data)", ["loss_ebm"]),
                           ("f on data and on revised samples", ["f_data", "f_revised"]),
                           ("VAE loss: SSE + gamma KL", ["loss_vae"]),
                           ("reconstruction SSE and KL", ["recon", "kl"]),
                           ("Langevin: RMS df/dx (last step), RMS move",
                            ["langevin_grad_rms", "chain_move"]),
                           ("EBM weight norm", ["ebm_weight_norm"])]
# builds the in-training score: (models, cfg, run_dir, progress, averaged models) -> Evaluation
Scorer = Callable[..., Evaluation]


class GenerationTask(TeachTask):
    """Variational MCMC teaching of f_theta, q_phi, g_alpha on unconditional images. `scorer`
    builds the in-training score (`ebm_vae.eval.evaluate.training_evaluation`; passed in, as
    training does not import eval)."""
    plots = GENERATION_PLOTS

    def __init__(self, cfg: Config, scorer: Optional[Scorer] = None):
        super().__init__(build_models(cfg.model), cfg)
        self.scorer = scorer
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.average = WeightAverage(self.models, cfg.train.ema) if cfg.train.ema > 0 else None

    def modules(self) -> dict[str, Any]:
        return {**super().modules(), **(self.average.modules() if self.average else {})}

    def distribute(self, workers: int, synced: Any) -> None:
        """Each worker runs its 1/workers share of the chains (and of the batch)."""
        super().distribute(workers, synced)
        self.chains = self.cfg.train.num_chains // workers

    def step(self, batch: np.ndarray, revising: ContextManager) -> dict[str, float]:
        """One iteration of Algorithm 1 on a batch of data, then the weight average."""
        x = paddle.to_tensor(batch)
        stats, x_hat, x_tilde, grad_rms = teach_step(self.synced, self.optimizers, x, self.cfg,
                                                     self.chains, revising=revising)  # steps 1-5
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

    def evaluation(self, run_dir: Path, progress: bool) -> Optional[Evaluation]:
        if self.cfg.eval.every == 0:
            return None
        return self.scorer(self.models, self.cfg, run_dir, progress,
                           self.average and self.average.models)

    def begin_from(self, init: str | Path) -> int:
        """Load trained networks (shipped weights, a run or checkpoint folder); their iteration."""
        try:
            it, missing = load_networks(init, self.models)
        except UserError as err:
            raise TrainingError(f"cannot start from {init}: {err}") from err
        if missing:
            print(f"{init} holds no {', '.join(missing)} weights: starting "
                  f"{' and '.join(missing)} fresh (seeded initialisation)", file=sys.stderr)
        if self.average is not None:
            self.average.reset(self.models)
        return it or 0


def chain_diagnostics(x_hat: paddle.Tensor, x_tilde: paddle.Tensor, grad_rms: list[float]
                      ) -> dict[str, float]:
    """How far the Langevin chains moved (RMS per pixel of x_tilde - x_hat), how far they left
    the data range [-1, 1] (largest |x_tilde|), and the RMS of df/dx at the last step."""
    return {"chain_move": math.sqrt(float(((x_tilde - x_hat) ** 2).mean())),
            "revised_abs_max": float(x_tilde.abs().max()),
            "langevin_grad_rms": grad_rms[-1] if grad_rms else 0.0}


def train_generation(cfg: Config, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True, evaluation: Optional[Scorer] = None,
                     init: str | Path | None = None) -> GenerationTask:
    """Train Algorithm 1 on `cfg.data` (or the given `images`), see `trainer.train` (the math
    threads: those configured before, `runtime.configure_cpu`). `evaluation` builds the
    in-training quality curve when `cfg.eval.every > 0`
    (`ebm_vae.eval.evaluate.training_evaluation`). `init`: a new run starts from these trained
    networks (shipped weights, a run or checkpoint folder) at their iteration, so the data order
    and learning-rate schedule go on from there; the optimisers start fresh (Adam moments at
    zero), so this is not an exact resume, and the weight average (`train.ema`) starts at the
    loaded weights."""
    if cfg.eval.every > 0 and evaluation is None:
        raise TrainingError("eval.every > 0 needs the evaluation hook: call train_generation(..., "
                            "evaluation=ebm_vae.eval.evaluate.training_evaluation)")

    def build(found: np.ndarray, workers: int) -> GenerationTask:
        try:
            check_shards(cfg.train.batch_size, cfg.train.num_chains, len(found), workers)
        except ValueError as err:
            raise TrainingError(str(err)) from err
        return GenerationTask(cfg, evaluation)  # several workers: starts from worker 0's parameters

    return train(cfg, run_dir, images if images is not None else
                 (lambda: load_split(cfg.data.name, cfg.data.root, "train")[0]), build,
                 max_iters, resume, progress, init)
