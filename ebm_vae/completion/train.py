"""Training of image completion: conditional Algorithm 1 on (image, mask) pairs with core's
teach step and loop, evaluated by hole metrics during training (docs/completion.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import ContextManager, NamedTuple, Optional

import numpy as np
import paddle

from ebm_vae.completion.baselines import harmonic_fill, mean_fill
from ebm_vae.completion.config import CompletionConfig, load_completion_config
from ebm_vae.completion.fill import complete
from ebm_vae.completion.masks import FillError, MaskSource
from ebm_vae.completion.networks import build_conditional_models, condition
from ebm_vae.training.checkpoints import load_checkpoint_into
from ebm_vae.training.runs import export_weights, read_networks
from ebm_vae.training.states import load_layer_states
from ebm_vae.core.teach import teach_step
from ebm_vae.training.generation import GENERATION_PLOTS
from ebm_vae.training.record import Evaluation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.training.trainer import TeachTask, train
from ebm_vae.data.folders import load_folder_split, to_float
from ebm_vae.eval.image_metrics import completion_metrics, sharpness_ratio
from ebm_vae.utils.runtime import configure_runtime, seed_all

GRID_PAIRS = 16
COMPLETION_PLOTS = GENERATION_PLOTS + [("training hole L1 ([0,1] units): proposal, revised",
                                         ["hole_l1_proposal", "hole_l1"])]


def _hole_l1(a: paddle.Tensor, b: paddle.Tensor, m: paddle.Tensor) -> float:
    """Mean |a - b| over the hole pixels, in [0, 1] units."""
    return float(((a - b).abs() * m).sum() / (m.sum() * a.shape[1])) / 2


class Pairs(NamedTuple):
    """One iteration's pairs: images y and masks m, and both repeated per chain as the data y_k
    and the condition c_k (train.num_chains chains per pair)."""
    y: paddle.Tensor
    m: paddle.Tensor
    y_k: paddle.Tensor
    c_k: paddle.Tensor


class CompletionTask(TeachTask):
    """Conditional Algorithm 1 on (image, mask) pairs for the trainer. Batches are uint8 images;
    masks are drawn per batch."""
    plots = COMPLETION_PLOTS

    def __init__(self, cfg: CompletionConfig):
        super().__init__(build_conditional_models(cfg.model), cfg)
        self.masks = MaskSource(cfg.mask.kind, cfg.mask.size, cfg.model.image_size, cfg.mask.path)
        self.last: Optional[list[tuple[str, np.ndarray]]] = None

    def pairs(self, batch: np.ndarray) -> Pairs:
        """The batch's images with masks drawn for them, repeated per chain."""
        # Mask positions come from Paddle's generator, so a resumed run draws the same masks.
        rng = np.random.default_rng(int(paddle.randint(0, 2 ** 31 - 1, [1]).item()))
        y = paddle.to_tensor(to_float(batch))
        m = paddle.to_tensor(self.masks(len(batch), rng))
        k = self.cfg.train.num_chains
        # k chains per pair; repeating the data too keeps the data term the mean over pairs
        y_k, c_k = ((paddle.repeat_interleave(v, k, axis=0) for v in (y, condition(y, m)))
                    if k > 1 else (y, condition(y, m)))
        return Pairs(y, m, y_k, c_k)

    def step(self, batch: np.ndarray, revising: ContextManager) -> dict[str, float]:
        """One iteration of Algorithm 1 on y given c = (masked image, mask)."""
        d, k = self.pairs(batch), self.cfg.train.num_chains
        stats, y_hat, y_tilde, _ = teach_step(self.synced, self.optimizers, d.y_k, self.cfg,
                                              len(d.y_k), d.c_k, revising)  # steps 1-5
        first, n = y_tilde[::k], GRID_PAIRS  # the first chain of each pair
        self.last = [("input (hole white)", (d.y * (1 - d.m) + d.m)[:n].numpy()),
                     ("proposal g(z, c)", y_hat[::k][:n].numpy()),
                     ("Langevin-revised", first[:n].numpy()), ("ground truth", d.y[:n].numpy())]
        return {**asdict(stats), "hole_l1": _hole_l1(first, d.y, d.m),
                "hole_l1_proposal": _hole_l1(y_hat[::k], d.y, d.m)}

    def panels(self) -> list[tuple[str, np.ndarray]]:
        return self.last or []

    def evaluation(self, run_dir: Path, progress: bool) -> Optional[Evaluation]:
        if self.cfg.eval.every == 0:
            return None
        return training_evaluation(self, self.cfg, run_dir, self.cfg.data.root)


EVAL_KEYS = ["psnr_hole_proposal", "psnr_hole_revised", "psnr_hole_harmonic", "psnr_hole_mean",
             "ssim_hole_revised", "l1_hole_revised", "l1_hole_harmonic",
             "sharpness_revised", "sharpness_proposal", "sharpness_harmonic"]


def eval_masks(cfg: CompletionConfig, n: int, seed: int, kind: Optional[str] = None,
               size: Optional[int] = None) -> np.ndarray:
    """The evaluation holes: one per test image, seeded; the run's mask kind unless `kind`."""
    kind = kind or cfg.mask.kind
    size = size or cfg.mask.size
    return MaskSource(kind, size, cfg.model.image_size, cfg.mask.path if kind == "file" else None)(
        n, np.random.default_rng(seed))


def training_evaluation(task: CompletionTask, cfg: CompletionConfig, run_dir: Path,
                        data_root: Optional[str]) -> Evaluation:
    """Hole PSNR/SSIM/L1 and sharpness ratio (`sharpness_ratio`) of the proposal and the revised
    fill on the test split every `eval.every` iterations, against the harmonic and mean fills
    (computed once). The best state is kept as checkpoints/best; with `eval.keep_checkpoints`
    every evaluated state is kept as checkpoints/iter_NNNNNNN (`train_completion`)."""
    e = cfg.eval
    images = to_float(load_folder_split(cfg.data.name, data_root, "test", cfg.model.image_size,
                                        cfg.data.resize)[:e.limit])
    masks = eval_masks(cfg, len(images), e.seed)
    base_fills = {"harmonic": harmonic_fill(images, masks), "mean": mean_fill(images, masks)}
    base = {name: completion_metrics(f, images, masks) for name, f in base_fills.items()}
    harmonic_sharpness = sharpness_ratio(base_fills["harmonic"], images, masks)

    def run() -> dict[str, float]:
        seed_all(e.seed)
        for layer in task.models:
            layer.eval()
        proposal, revised = complete(task.models, images, masks, cfg.model.latent_dim,
                                     cfg.sample.steps, cfg.langevin, with_proposal=True)
        for layer in task.models:
            layer.train()
        ours = {"proposal": completion_metrics(proposal, images, masks),
                "revised": completion_metrics(revised, images, masks)}
        return {"psnr_hole_proposal": float(ours["proposal"]["psnr_hole"].mean()),
                "psnr_hole_revised": float(ours["revised"]["psnr_hole"].mean()),
                "psnr_hole_harmonic": float(base["harmonic"]["psnr_hole"].mean()),
                "psnr_hole_mean": float(base["mean"]["psnr_hole"].mean()),
                "ssim_hole_revised": float(ours["revised"]["ssim_hole"].mean()),
                "l1_hole_revised": float(ours["revised"]["l1_hole"].mean()),
                "l1_hole_harmonic": float(base["harmonic"]["l1_hole"].mean()),
                "sharpness_revised": sharpness_ratio(revised, images, masks),
                "sharpness_proposal": sharpness_ratio(proposal, images, masks),
                "sharpness_harmonic": harmonic_sharpness}

    return Evaluation(e.every, EVAL_KEYS, run, "test hole PSNR (dB): ours vs baselines",
                      best="psnr_hole_revised", higher_is_better=True)


def train_completion(cfg: CompletionConfig, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True) -> CompletionTask:
    """Train conditional Algorithm 1 on the training split (unless uint8 `images` are given):
    the trainer with the completion task and its evaluation (`training_evaluation`); the math
    threads: those configured before (`runtime.configure_cpu`). `eval.keep_checkpoints` keeps
    the state of every evaluation as checkpoints/iter_N (train.keep_every = eval.every)."""
    e = cfg.eval
    if e.every > 0 and e.keep_checkpoints and not cfg.train.keep_every:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep_every=e.every))

    def load() -> np.ndarray:
        found = load_folder_split(cfg.data.name, cfg.data.root, "train", cfg.model.image_size,
                                  cfg.data.resize) if images is None else images
        if found.dtype != np.uint8:
            raise TrainingError(f"training images must be uint8, got {found.dtype}")
        return found

    return train(cfg, run_dir, load, lambda _, __: CompletionTask(cfg), max_iters, resume,
                 progress)


def load_completion_run(run_dir: str | Path, checkpoint: str | Path | None = None,
                        with_iteration: bool = False, threads: int | None = None):
    """The config and trained networks (in eval mode) of a tools/complete.py train run, or of
    weights exported by `export_completion` (config.yaml + ebm/encoder/decoder.pdparams);
    `checkpoint`: another checkpoint than the run's last one (e.g. RUN/checkpoints/best or iter_N).
    `with_iteration`: also return the checkpoint's iteration (None if it has none). `threads`:
    CPU math threads (default `runtime.default_threads()`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FillError(f"{run_dir} is neither a run folder nor exported weights (no config.yaml)")
    cfg = load_completion_config(run_dir / "config.yaml")
    configure_runtime(cfg.device, threads)
    models = build_conditional_models(cfg.model)
    if checkpoint is None:  # the run's newest checkpoint, or exported weights
        states, iteration = read_networks(run_dir)
        load_layer_states(models._asdict(), states, str(run_dir))
    else:  # a checkpoint folder: checkpoints/best, checkpoints/iter_N
        iteration = load_checkpoint_into(checkpoint, models._asdict())
    for layer in models:
        layer.eval()
    return (cfg, models, iteration) if with_iteration else (cfg, models)


def export_completion(run_dir: str | Path, out_dir: str | Path,
                      checkpoint: str | Path | None = None) -> Path:
    """Write the weights alone of a completion run's newest checkpoint (or of `checkpoint`):
    `out_dir`/config.yaml, ebm/encoder/decoder.pdparams and weights.json (the iteration), the
    folder `load_completion_run` (`fill --ckpt`, `eval --ckpt`) reads without the run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FillError(f"{run_dir} is not a run folder (no config.yaml)")
    load_completion_config(run_dir / "config.yaml")  # refuses a generation run's config
    return export_weights(checkpoint or run_dir, out_dir)
