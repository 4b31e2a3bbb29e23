"""Image completion by conditional variational MCMC teaching (docs/method.md §5; the design is ours).

The condition c is the image with its hole zeroed plus the mask as a 4th channel; the target y is
the full image. Conditional versions of the three networks:
- `ConditionalEBM`      f_theta(y, c): p_theta(y | c) ∝ exp(f_theta(y, c)); the EBM on [y, c].
- `ConditionalEncoder`  q_phi(z | y, c): the encoder on [y, c].
- `ConditionalDecoder`  g_alpha(z, c): a conv code of c joins z at the decoder's 1x1 input.
Algorithm 1 on pairs: y_hat = g(z, c) -> Langevin on y given c -> EBM step on (y, c) vs
(y_tilde, c) -> cVAE step on (y_tilde, c). The visible pixels belong to c, so every chain keeps
them (the generated y_hat gets them pasted in, and Langevin moves only the hole): p(y | c) is a
distribution over the hole's contents. A hole is filled the same way.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn as nn

from ebm_vae.completion.config import (CompletionConfig, CompletionModelConfig,
                                       load_completion_config)
from ebm_vae.completion.masks import MaskSource, paste
from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.langevin import frozen, langevin_step
from ebm_vae.core.models import EBM, Decoder, Encoder, conv_stack, conv_stack_size
from ebm_vae.core.runs import load_objects
from ebm_vae.core.teach import TeachStats, learn
from ebm_vae.core.train import GENERATION_PLOTS, TeachTask, TrainingError, fit, start_run
from ebm_vae.data.folders import load_folder_split, to_float
from ebm_vae.utils.runtime import configure_runtime

GRID_PAIRS = 16
COMPLETION_PLOTS = GENERATION_PLOTS + [("hole L1 of revised samples ([0,1] units)", ["hole_l1"])]


def condition(images: paddle.Tensor, masks: paddle.Tensor) -> paddle.Tensor:
    """c = [image with the hole zeroed, mask]: [B, C + 1, H, W]."""
    return paddle.concat([images * (1.0 - masks), masks], axis=1)


class ConditionalEBM(nn.Layer):
    """f_theta(y, c) in R: the EBM's ConvNet on the channel stack [y, c]."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        self.net = EBM(cfg.ebm, 2 * cfg.channels + 1, cfg.image_size, cfg.init_std, cfg.leaky_slope)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor) -> paddle.Tensor:
        return self.net(paddle.concat([y, c], axis=1))


class ConditionalEncoder(nn.Layer):
    """q_phi(z | y, c): (mu, log_sigma) from the encoder's ConvNet on [y, c]."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        self.net = Encoder(cfg.encoder, 2 * cfg.channels + 1, cfg.image_size, cfg.latent_dim,
                           cfg.init_std, cfg.leaky_slope)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        return self.net(paddle.concat([y, c], axis=1))


class ConditionalDecoder(nn.Layer):
    """g_alpha(z, c) = Decoder([z, code(c)]), code(c) = leaky(Dense(flatten(ConvNet(c))))."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        cond = cfg.condition
        self.features = conv_stack(cond.conv, cfg.channels + 1, cfg.init_std, cfg.leaky_slope)
        flat = cond.conv[-1].channels * conv_stack_size(cond.conv, cfg.image_size) ** 2
        self.code = nn.Sequential(nn.Linear(flat, cond.code_dim), nn.LeakyReLU(cfg.leaky_slope))
        self.decoder = Decoder(cfg.decoder, cfg.latent_dim + cond.code_dim, cfg.init_std,
                               cfg.leaky_slope, cfg.bn_batch_stats)

    def forward(self, z: paddle.Tensor, c: paddle.Tensor) -> paddle.Tensor:
        code = self.code(self.features(c).flatten(1))
        return self.decoder(paddle.concat([z, code], axis=1))


class ConditionalModels(NamedTuple):
    ebm: ConditionalEBM
    encoder: ConditionalEncoder
    decoder: ConditionalDecoder


def build_conditional_models(cfg: CompletionModelConfig) -> ConditionalModels:
    """Build f_theta, q_phi, g_alpha (fresh parameter names, so checkpoints match by name)."""
    with paddle.utils.unique_name.guard():
        return ConditionalModels(ConditionalEBM(cfg), ConditionalEncoder(cfg), ConditionalDecoder(cfg))


def clamp_visible(y: paddle.Tensor, c: paddle.Tensor) -> paddle.Tensor:
    """y with its visible pixels replaced by the condition's: m * y + (1 - m) * y_visible."""
    channels = y.shape[1]
    return c[:, channels:] * y + c[:, :channels]  # c[:, :C] is already zero inside the hole


def conditional_langevin(ebm: ConditionalEBM, y: paddle.Tensor, c: paddle.Tensor, steps: int,
                         lv: LangevinConfig) -> paddle.Tensor:
    """Eq. (L) on y under the energy f_theta(., c). c is fixed, and so are y's visible pixels
    (they are part of c): only the hole moves. `lv.chunk_size` revises that many chains at a time."""
    y, chunk, out = clamp_visible(y.detach(), c), lv.chunk_size or len(y), []
    with frozen(ebm):
        for start in range(0, len(y), chunk):
            yc, cc = y[start:start + chunk], c[start:start + chunk]
            for _ in range(steps):
                yc = clamp_visible(langevin_step(lambda v, cc=cc: ebm(v, cc), yc, lv.step_size,
                                                 lv.ref_sigma, lv.noise), cc)
            out.append(yc)
    return out[0] if len(out) == 1 else paddle.concat(out)


def conditional_teach_step(models: ConditionalModels, opt_ebm: paddle.optimizer.Optimizer,
                           opt_vae: paddle.optimizer.Optimizer, y: paddle.Tensor, c: paddle.Tensor,
                           num_chains: int, latent_dim: int, lv: LangevinConfig, gamma: float
                           ) -> tuple[TeachStats, paddle.Tensor, paddle.Tensor]:
    """Algorithm 1 on pairs (y, c), `num_chains` chains per pair. Returns stats, y_hat, y_tilde
    (chains of one pair are adjacent). Raises NonFiniteError before a corrupting update."""
    if num_chains > 1:  # repeating the data too keeps the data term the mean over pairs
        y, c = (paddle.repeat_interleave(t, num_chains, axis=0) for t in (y, c))
    z = paddle.randn([y.shape[0], latent_dim])  # step 1
    with paddle.no_grad():
        y_hat = clamp_visible(models.decoder(z, c), c)  # step 2: y_hat = g_alpha(z, c), pasted
    y_tilde = conditional_langevin(models.ebm, y_hat, c, lv.steps, lv)  # step 3
    return learn(models, opt_ebm, opt_vae, y, y_tilde, gamma, c), y_hat, y_tilde  # steps 4-5


class CompletionTask(TeachTask):
    """Conditional Algorithm 1 on (image, mask) pairs for `fit`. Batches are uint8 images; masks
    are drawn per batch."""

    def __init__(self, cfg: CompletionConfig):
        super().__init__(build_conditional_models(cfg.model), cfg.train)
        self.cfg = cfg
        self.masks = MaskSource(cfg.mask.kind, cfg.mask.size, cfg.model.image_size, cfg.mask.path)
        self.last: Optional[list[tuple[str, np.ndarray]]] = None

    def step(self, batch: np.ndarray) -> dict[str, float]:
        # Mask positions come from Paddle's generator, so a resumed run draws the same masks.
        rng = np.random.default_rng(int(paddle.randint(0, 2 ** 31 - 1, [1]).item()))
        y = paddle.to_tensor(to_float(batch))
        m = paddle.to_tensor(self.masks(len(batch), rng))
        c = condition(y, m)
        k = self.cfg.train.num_chains
        stats, y_hat, y_tilde = conditional_teach_step(
            self.models, self.opt_ebm, self.opt_vae, y, c, k, self.cfg.model.latent_dim,
            self.cfg.langevin, self.cfg.train.gamma)
        first = y_tilde[::k]  # the first chain of each pair
        hole_l1 = float(((first - y).abs() * m).sum() / (m.sum() * y.shape[1])) / 2  # [0,1] units
        n = GRID_PAIRS
        self.last = [("input (hole white)", (y * (1 - m) + m)[:n].numpy()),
                     ("proposal g(z, c)", y_hat[::k][:n].numpy()),
                     ("Langevin-revised", first[:n].numpy()), ("ground truth", y[:n].numpy())]
        return {**asdict(stats), "hole_l1": hole_l1}

    def panels(self) -> list[tuple[str, np.ndarray]]:
        return self.last or []


def train_completion(cfg: CompletionConfig, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True, threads: int | None = None) -> CompletionTask:
    """Load the training split (unless uint8 `images` are given), build the models, train."""
    configure_runtime(cfg.device, threads)
    if images is None:
        images = load_folder_split(cfg.data.name, cfg.data.root, "train", cfg.model.image_size,
                                   cfg.data.resize)
    if images.dtype != np.uint8:
        raise TrainingError(f"training images must be uint8, got {images.dtype}")
    images, run_dir = start_run(cfg, images, run_dir, resume)
    task = CompletionTask(cfg)
    fit(task, images, run_dir, cfg.train, cfg.seed, cfg.data.shuffle, max_iters, resume,
        plots=COMPLETION_PLOTS, progress=progress, config=cfg)
    return task


def load_completion_run(run_dir: str | Path) -> tuple[CompletionConfig, ConditionalModels]:
    """The config and trained networks (in eval mode) of a tools/complete.py train run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = load_completion_config(run_dir / "config.yaml")
    configure_runtime(cfg.device)
    models = build_conditional_models(cfg.model)
    load_objects(run_dir, models._asdict())
    for layer in models:
        layer.eval()
    return cfg, models


def complete(models: ConditionalModels, images: np.ndarray, masks: np.ndarray, latent_dim: int,
             steps: int, lv: LangevinConfig, batch_size: int = 64) -> np.ndarray:
    """Fill the holes: z ~ N(0, I), y_hat = g(z, c), `steps` Langevin steps on y given c, then the
    visible pixels pasted back. Float [-1, 1] in and out."""
    out = []
    for i in range(0, len(images), batch_size):
        y = paddle.to_tensor(images[i:i + batch_size])
        m = paddle.to_tensor(masks[i:i + batch_size])
        c = condition(y, m)
        with paddle.no_grad():
            y_hat = models.decoder(paddle.randn([y.shape[0], latent_dim]), c)
        out.append(conditional_langevin(models.ebm, y_hat, c, steps, lv).numpy())
    return paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)
