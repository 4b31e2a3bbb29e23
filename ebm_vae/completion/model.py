"""Image completion by conditional variational MCMC teaching (docs/method.md §5; the design is ours).

The condition c is the image with its hole zeroed plus the mask as a 4th channel; the target y is
the full image. Conditional versions of the three networks:
- `ConditionalEBM`      f_theta(y, c): p_theta(y | c) ∝ exp(f_theta(y, c)); a ConvNet on [y, c]
                        (patch or global head), optionally plus a learned Gaussian term around a
                        U-Net mean mu_theta(c) over the hole.
- `ConditionalEncoder`  q_phi(z | y, c): the encoder on [y, c].
- `ConditionalDecoder`  g_alpha(z, c): an image-to-image U-Net over c (skips at every scale), z at
                        the bottleneck.
Algorithm 1 on pairs: y_hat = g(z, c) -> Langevin on y given c -> EBM step on (y, c) vs
(y_tilde, c) -> cVAE step on (y_tilde, c). The visible pixels belong to c, so every chain keeps
them (the generated y_hat gets them pasted in, and Langevin moves only the hole): p(y | c) is a
distribution over the hole's contents. A hole is filled the same way.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn as nn

from ebm_vae.completion.config import (CompletionConfig, CompletionModelConfig, UNetConfig,
                                       load_completion_config)
from ebm_vae.completion.baselines import harmonic_fill, mean_fill
from ebm_vae.completion.masks import FillError, MaskSource, paste
from ebm_vae.core.config import LangevinConfig
from ebm_vae.core.langevin import frozen, langevin_step
from ebm_vae.core.models import Encoder, conv_attrs, conv_stack, conv_stack_size
from ebm_vae.core.checkpoints import checkpoint_iteration, load_checkpoint_into, load_objects
from ebm_vae.core.states import layer_states, save_checkpoint
from ebm_vae.core.teach import TeachStats, learn
from ebm_vae.core.train import (GENERATION_PLOTS, Evaluation, TeachTask, TrainingError, fit,
                                start_run)
from ebm_vae.data.folders import load_folder_split, to_float
from ebm_vae.eval.image_metrics import completion_metrics
from ebm_vae.utils.runlock import run_lock
from ebm_vae.utils.runtime import configure_runtime, seed_all

GRID_PAIRS = 16
SNAPSHOTS = "snapshots"  # the states evaluated during training (eval.keep_checkpoints)
COMPLETION_PLOTS = GENERATION_PLOTS + [("training hole L1 ([0,1] units): proposal, revised",
                                         ["hole_l1_proposal", "hole_l1"])]


def condition(images: paddle.Tensor, masks: paddle.Tensor) -> paddle.Tensor:
    """c = [image with the hole zeroed, mask]: [B, C + 1, H, W]."""
    return paddle.concat([images * (1.0 - masks), masks], axis=1)


class ConditionalEBM(nn.Layer):
    """f_theta(y, c) in R on the channel stack [y, c]: a conv stack, then a global head (one
    'valid' conv over the remaining map) or a patch head (a 'SAME' conv to a map of local
    energies, summed over positions). Patches that do not touch the hole are the same in data
    and in samples (both keep the visible pixels), so they cancel in the EBM loss.

    With `ebm.mean` (a z-free U-Net mu_theta(c)), f also holds a Gaussian term over the hole:
        f(y, c) = net(y, c) - ||m * (y - mu(c))||^2 / (2 mean_sigma^2),
    i.e. p_theta(y | c) is an exponential tilting of N(mu(c), mean_sigma^2) by exp(net): the
    paper's Gaussian reference distribution made conditional and learned. Its ML gradient moves
    mu(c) by (data - revised samples); Langevin pulls the hole towards mu(c)."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        e = cfg.ebm
        self.channels = cfg.channels
        self.features = conv_stack(e.conv, 2 * cfg.channels + 1, cfg.init_std, cfg.leaky_slope)
        size = conv_stack_size(e.conv, cfg.image_size)
        kernel, padding = (size, 0) if e.head == "global" else (e.head_kernel, "SAME")
        self.head = nn.Conv2D(e.conv[-1].channels, e.out_dim, kernel, padding=padding,
                              **conv_attrs(cfg.init_std))
        for p in self.features.parameters() + self.head.parameters():
            p.optimize_attr["learning_rate"] = e.net_lr_scale  # Adam's lr multiplier
        self.mean = None if e.mean is None else UNet(cfg, e.mean, latent_dim=0)
        self.mean_sigma = e.mean_sigma

    def mean_image(self, c: paddle.Tensor) -> Optional[paddle.Tensor]:
        """mu_theta(c), or None without a Gaussian term."""
        return None if self.mean is None else self.mean(None, c)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor,
                mu: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        """f(y, c); `mu`: mu_theta(c) computed beforehand (Langevin reuses it over a chain)."""
        f = self.head(self.features(paddle.concat([y, c], axis=1))).flatten(1).sum(axis=1)
        if self.mean is None:
            return f
        mu = self.mean_image(c) if mu is None else mu
        gap = c[:, self.channels:] * (y - mu)
        return f - (gap ** 2).flatten(1).sum(axis=1) / (2 * self.mean_sigma ** 2)


class ConditionalEncoder(nn.Layer):
    """q_phi(z | y, c): (mu, log_sigma) from the encoder's ConvNet on [y, c]."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__()
        self.net = Encoder(cfg.encoder, 2 * cfg.channels + 1, cfg.image_size, cfg.latent_dim,
                           cfg.init_std, cfg.leaky_slope)

    def forward(self, y: paddle.Tensor, c: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        return self.net(paddle.concat([y, c], axis=1))


def _he(layer: nn.Layer) -> nn.Layer:
    """He-normal kernel (fan-in), zero bias: keeps activations alive through the U-Net's depth."""
    w = layer.weight
    transposed = isinstance(layer, nn.Conv2DTranspose)
    fan_in = (w.shape[0] if transposed else w.shape[1]) * w.shape[2] * w.shape[3]
    if transposed:  # each output pixel of a stride-2 4x4 transposed conv sees a quarter of the taps
        fan_in //= 4
    w.set_value(paddle.randn(w.shape) * math.sqrt(2.0 / fan_in))
    layer.bias.set_value(paddle.zeros(layer.bias.shape))
    return layer


def _tile(z: paddle.Tensor, size: int) -> paddle.Tensor:
    return z.reshape([z.shape[0], z.shape[1], 1, 1]).expand([z.shape[0], z.shape[1], size, size])


class UNet(nn.Layer):
    """An image-to-image U-Net over c (UNetConfig); with latent_dim > 0 it is g_alpha(z, c), z
    tiled at the bottleneck (and at every up-path scale if z_every_scale).

    down_i: [B, down[i], S / 2^(i+1)]; bottleneck: conv3x3([down_L, tile(z)]);
    up path from the bottleneck: deconv (or nearest x2 + conv) to the next scale, concatenated with that scale's
    down map (and tile(z) if z_every_scale); at full resolution with c; out: tanh(conv(.))."""

    def __init__(self, cfg: CompletionModelConfig, u: UNetConfig, latent_dim: int):
        super().__init__()
        d, slope = latent_dim, cfg.leaky_slope
        self.z_every_scale = u.z_every_scale and d > 0
        in_c = cfg.channels + 1
        self.down = nn.LayerList()
        for ch in u.down:
            self.down.append(_he(nn.Conv2D(in_c, ch, 4, 2, 1)))
            in_c = ch
        self.bottleneck = _he(nn.Conv2D(in_c + d, u.bottleneck, 3, 1, 1))
        self.act, self.up_act = nn.LeakyReLU(slope), nn.ReLU()
        skips = [cfg.channels + 1] + list(u.down[:-1])  # the map each up step lands on
        extra = d if self.z_every_scale else 0
        self.up = nn.LayerList()
        in_c = u.bottleneck
        for skip, ch in zip(reversed(skips), reversed([u.down[0]] + list(u.down[:-1]))):
            self.up.append(_he(nn.Conv2DTranspose(in_c, ch, 4, 2, 1)) if u.up == "deconv" else
                           nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                         _he(nn.Conv2D(in_c, ch, 3, 1, 1))))
            in_c = ch + skip + extra
        self.out = nn.Conv2D(in_c, cfg.channels, u.out_kernel, 1, u.out_kernel // 2,
                             **conv_attrs(cfg.init_std))

    def forward(self, z: Optional[paddle.Tensor], c: paddle.Tensor) -> paddle.Tensor:
        maps, h = [c], c
        for conv in self.down:
            h = self.act(conv(h))
            maps.append(h)
        if z is not None:
            h = paddle.concat([h, _tile(z, h.shape[2])], axis=1)
        h = self.act(self.bottleneck(h))
        for deconv, skip in zip(self.up, reversed(maps[:-1])):
            parts = [self.up_act(deconv(h)), skip]
            if self.z_every_scale:
                parts.append(_tile(z, skip.shape[2]))
            h = paddle.concat(parts, axis=1)
        return paddle.tanh(self.out(h))


class ConditionalDecoder(UNet):
    """g_alpha(z, c): the image-to-image U-Net over c with z at the bottleneck (model.decoder)."""

    def __init__(self, cfg: CompletionModelConfig):
        super().__init__(cfg, cfg.decoder, cfg.latent_dim)


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
            with paddle.no_grad():
                mu = ebm.mean_image(cc)  # c is fixed along the chain: mu(c) once
            for _ in range(steps):
                yc = clamp_visible(langevin_step(lambda v, cc=cc, mu=mu: ebm(v, cc, mu), yc,
                                                 lv.step_size, lv.ref_sigma, lv.noise,
                                                 clamp=lv.clamp), cc)
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
    return learn(models, opt_ebm, opt_vae, y, y_tilde, gamma, c=c), y_hat, y_tilde  # steps 4-5


def _hole_l1(a: paddle.Tensor, b: paddle.Tensor, m: paddle.Tensor) -> float:
    """Mean |a - b| over the hole pixels, in [0, 1] units."""
    return float(((a - b).abs() * m).sum() / (m.sum() * a.shape[1])) / 2


class CompletionTask(TeachTask):
    """Conditional Algorithm 1 on (image, mask) pairs for `fit`. Batches are uint8 images; masks
    are drawn per batch."""

    def __init__(self, cfg: CompletionConfig):
        super().__init__(build_conditional_models(cfg.model), cfg.train)
        self.cfg = cfg
        self.masks = MaskSource(cfg.mask.kind, cfg.mask.size, cfg.model.image_size, cfg.mask.path)
        self.last: Optional[list[tuple[str, np.ndarray]]] = None
        self.steps_done = 0  # iterations this process has run (the evaluation names checkpoints)

    def step(self, batch: np.ndarray) -> dict[str, float]:
        self.steps_done += 1
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
        n = GRID_PAIRS
        self.last = [("input (hole white)", (y * (1 - m) + m)[:n].numpy()),
                     ("proposal g(z, c)", y_hat[::k][:n].numpy()),
                     ("Langevin-revised", first[:n].numpy()), ("ground truth", y[:n].numpy())]
        return {**asdict(stats), "hole_l1": _hole_l1(first, y, m),
                "hole_l1_proposal": _hole_l1(y_hat[::k], y, m)}

    def panels(self) -> list[tuple[str, np.ndarray]]:
        return self.last or []


EVAL_KEYS = ["psnr_hole_proposal", "psnr_hole_revised", "psnr_hole_harmonic", "psnr_hole_mean",
             "ssim_hole_revised", "l1_hole_revised", "l1_hole_harmonic"]


def eval_masks(cfg: CompletionConfig, n: int, seed: int, kind: Optional[str] = None,
               size: Optional[int] = None) -> np.ndarray:
    """The evaluation holes: one per test image, seeded; the run's mask kind unless `kind`."""
    kind = kind or cfg.mask.kind
    size = size or cfg.mask.size
    return MaskSource(kind, size, cfg.model.image_size, cfg.mask.path if kind == "file" else None)(
        n, np.random.default_rng(seed))


def training_evaluation(task: CompletionTask, cfg: CompletionConfig, run_dir: Path,
                        data_root: Optional[str]) -> Evaluation:
    """Hole PSNR/SSIM/L1 of the proposal and the revised fill on the test split every
    `eval.every` iterations, against the harmonic and mean fills (computed once); each evaluated
    state is also saved as snapshots/iter_NNNNNNN.ckpt (beside checkpoints/, which keeps only
    the newest state)."""
    e = cfg.eval
    images = to_float(load_folder_split(cfg.data.name, data_root, "test", cfg.model.image_size,
                                        cfg.data.resize)[:e.limit])
    masks = eval_masks(cfg, len(images), e.seed)
    base = {name: completion_metrics(fill(images, masks), images, masks)
            for name, fill in (("harmonic", harmonic_fill), ("mean", mean_fill))}
    start = checkpoint_iteration(run_dir) or 0  # resumed: iterations count on from there

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
        if e.keep_checkpoints:
            it = start + task.steps_done
            save_checkpoint(run_dir / SNAPSHOTS / f"iter_{it:07d}.ckpt",
                            {"iteration": it, "modules": layer_states(task.models._asdict())})
        return {"psnr_hole_proposal": float(ours["proposal"]["psnr_hole"].mean()),
                "psnr_hole_revised": float(ours["revised"]["psnr_hole"].mean()),
                "psnr_hole_harmonic": float(base["harmonic"]["psnr_hole"].mean()),
                "psnr_hole_mean": float(base["mean"]["psnr_hole"].mean()),
                "ssim_hole_revised": float(ours["revised"]["ssim_hole"].mean()),
                "l1_hole_revised": float(ours["revised"]["l1_hole"].mean()),
                "l1_hole_harmonic": float(base["harmonic"]["l1_hole"].mean())}

    return Evaluation(e.every, EVAL_KEYS, run, "test hole PSNR (dB): ours vs baselines",
                      best="psnr_hole_revised", higher_is_better=True)


def train_completion(cfg: CompletionConfig, run_dir: str | Path, max_iters: int | None = None,
                     resume: bool = False, images: np.ndarray | None = None,
                     progress: bool = True, threads: int | None = None) -> CompletionTask:
    """Load the training split (unless uint8 `images` are given), build the models, train,
    holding the run folder's lock throughout (a second trainer of the folder is refused)."""
    configure_runtime(cfg.device, threads)
    with run_lock(run_dir):
        if images is None:
            images = load_folder_split(cfg.data.name, cfg.data.root, "train",
                                       cfg.model.image_size, cfg.data.resize)
        if images.dtype != np.uint8:
            raise TrainingError(f"training images must be uint8, got {images.dtype}")
        images, run_dir = start_run(cfg, images, run_dir, resume)
        task = CompletionTask(cfg)  # Paddle was seeded by start_run: the seed's initialisation
        evaluation = (training_evaluation(task, cfg, run_dir, cfg.data.root) if cfg.eval.every > 0
                      else None)
        fit(task, images, run_dir, cfg.train, cfg.seed, cfg.data.shuffle, max_iters, resume,
            plots=COMPLETION_PLOTS, progress=progress, evaluation=evaluation, config=cfg)
    return task


def load_completion_run(run_dir: str | Path, checkpoint: str | Path | None = None,
                        with_iteration: bool = False, threads: int | None = None):
    """The config and trained networks (in eval mode) of a tools/complete.py train run;
    `checkpoint`: another checkpoint file than the run's last one (e.g. snapshots/iter_*.ckpt).
    `with_iteration`: also return the checkpoint's iteration (None if it has none). `threads`:
    CPU math threads (default `runtime.default_threads()`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FillError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = load_completion_config(run_dir / "config.yaml")
    configure_runtime(cfg.device, threads)
    models = build_conditional_models(cfg.model)
    if checkpoint is None:
        iteration = load_objects(run_dir, models._asdict())
    else:  # a snapshot (snapshots/iter_*.ckpt) or a checkpoint folder
        iteration = load_checkpoint_into(checkpoint, models._asdict())
    for layer in models:
        layer.eval()
    return (cfg, models, iteration) if with_iteration else (cfg, models)


def complete(models: ConditionalModels, images: np.ndarray, masks: np.ndarray, latent_dim: int,
             steps: int, lv: LangevinConfig, batch_size: int = 64, with_proposal: bool = False):
    """Fill the holes: z ~ N(0, I), y_hat = g(z, c), `steps` Langevin steps on y given c, then the
    visible pixels pasted back. Float [-1, 1] in and out. `with_proposal`: also return the cVAE's
    fill before revision, (proposal, revised)."""
    proposals, out = [], []
    for i in range(0, len(images), batch_size):
        y = paddle.to_tensor(images[i:i + batch_size])
        m = paddle.to_tensor(masks[i:i + batch_size])
        c = condition(y, m)
        with paddle.no_grad():
            y_hat = models.decoder(paddle.randn([y.shape[0], latent_dim]), c)
        proposals.append(y_hat.numpy())
        out.append(conditional_langevin(models.ebm, y_hat, c, steps, lv).numpy())
    revised = paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)
    if not with_proposal:
        return revised
    return paste(np.clip(np.concatenate(proposals), -1.0, 1.0), images, masks), revised


def ebm_mean_fill(models: ConditionalModels, images: np.ndarray, masks: np.ndarray,
                  batch_size: int = 64) -> Optional[np.ndarray]:
    """The EBM's Gaussian mean mu_theta(c) pasted into the hole (an ablation: no sampler, no
    Langevin), or None if f has no Gaussian term."""
    if models.ebm.mean is None:
        return None
    out = []
    for i in range(0, len(images), batch_size):
        c = condition(paddle.to_tensor(images[i:i + batch_size]),
                      paddle.to_tensor(masks[i:i + batch_size]))
        with paddle.no_grad():
            out.append(models.ebm.mean_image(c).numpy())
    return paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)


def complete_k(models: ConditionalModels, images: np.ndarray, masks: np.ndarray, k: int,
               latent_dim: int, steps: int, lv: LangevinConfig, batch_size: int = 64
               ) -> tuple[np.ndarray, np.ndarray]:
    """`k` fills per hole, each with its own z and Langevin noise: (proposals, revised), both
    [k, N, C, H, W]."""
    runs = [complete(models, images, masks, latent_dim, steps, lv, batch_size, with_proposal=True)
            for _ in range(k)]
    return np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
