"""Completion experiment files: the typed config of conditional variational MCMC teaching
(tools/complete.py), validated with the same rules as generation configs (ebm_vae.core.config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

from ebm_vae.core.config import (ConvLayer, EncoderConfig, LangevinConfig, SampleConfig,
                                 TrainConfig, check_learning)
from ebm_vae.utils.typed_yaml import MAX_SEED, build, load_raw, require


@dataclass(frozen=True)
class CompletionDataConfig:
    name: Literal["paris_street_view", "cmp_facade"]
    root: Optional[str] = None  # local folder (both datasets need one; see ebm_vae/data/folders.py)
    resize: Literal["stretch", "center_crop"] = "stretch"  # how pictures become squares
    shuffle: Literal["once", "never", "every_epoch"] = "every_epoch"
    limit: Optional[int] = None  # use only the first `limit` training images (quick runs)


@dataclass(frozen=True)
class MaskConfig:
    """The hole: a centred square, a square at a random place, or one mask image (white = hole)."""
    kind: Literal["center", "random_square", "file"]
    size: int = 64  # side of the square hole in pixels (kinds center, random_square)
    path: Optional[str] = None  # mask image for kind 'file', resized (nearest) to the image size


@dataclass(frozen=True)
class UNetConfig:
    """g_alpha(z, c): an image-to-image U-Net over c = [masked y, mask] (pix2pix-style).

    Down path: one 4x4 stride-2 conv + leaky ReLU per entry of `down` (its output channels), so
    image_size halves len(down) times to the bottleneck. z enters at the bottleneck: tiled over
    the bottleneck map, concatenated, mixed by a 3x3 conv (`bottleneck` channels). Up path: one
    4x4 stride-2 transposed conv + ReLU per scale, mirroring `down`, each followed by the skip
    connection (concatenation) of the down path's map of that scale; at full resolution the skip
    is c itself, and a `out_kernel` x `out_kernel` conv + tanh gives the image. `z_every_scale`
    also concatenates the tiled z at every up-path scale. No batch norm (a single picture is
    filled as in a batch); He-normal init (init_std does not apply)."""
    down: List[int]
    bottleneck: int = 128
    z_every_scale: bool = False
    out_kernel: int = 3
    up: Literal["deconv", "resize"] = "deconv"  # resize: nearest x2 + 3x3 conv (no checkerboard)


@dataclass(frozen=True)
class ConditionalEBMConfig:
    """f_theta(y, c): conv layers ('SAME', leaky ReLU; stride 1 keeps full resolution) on the
    7-channel stack [y, masked y, mask], then a head:
    - 'global': one 'valid' conv over the whole remaining map (as the generation EBM);
    - 'patch': a `head_kernel` x `head_kernel` 'SAME' conv to `out_dim` maps, f = the sum over all
      positions (a PatchGAN-like energy: a sum of local energies of overlapping patches).
    `mean` (optional): a z-free U-Net mu(c); f then also holds -||hole * (y - mu(c))||^2 /
    (2 mean_sigma^2), a learned conditional Gaussian reference (ebm_vae.completion.networks)."""
    conv: List[ConvLayer]
    head: Literal["global", "patch"] = "global"
    head_kernel: int = 3
    out_dim: int = 1
    mean: Optional[UNetConfig] = None
    mean_sigma: float = 0.025
    net_lr_scale: float = 1.0  # learning-rate multiplier of the conv net and head (not of mean)


@dataclass(frozen=True)
class CompletionModelConfig:
    """f_theta(y, c), q_phi(z | y, c) and g_alpha(z, c); c = (masked image, mask)."""
    image_size: int
    channels: int
    latent_dim: int
    ebm: ConditionalEBMConfig
    encoder: EncoderConfig
    decoder: UNetConfig
    init_std: float = 0.02
    leaky_slope: float = 0.2
    bn_batch_stats: bool = False  # unused (no batch norm in the completion networks)


@dataclass(frozen=True)
class CompletionEvalConfig:
    """Hole metrics on the test split during training (`every` > 0): the cVAE proposal and the
    revised fill of every test image (one hole each, seeded by `seed`, as `complete.py eval`),
    logged and plotted against the harmonic and mean fills; each evaluated state is also kept
    as checkpoints/iter_NNNNNNN (`keep_checkpoints`), the best as checkpoints/best."""
    every: int = 0
    seed: int = 0
    limit: Optional[int] = None  # only the first N test images
    keep_checkpoints: bool = True


@dataclass(frozen=True)
class CompletionConfig:
    data: CompletionDataConfig
    mask: MaskConfig
    model: CompletionModelConfig
    langevin: LangevinConfig
    train: TrainConfig  # num_chains: Langevin chains per (image, mask) pair
    sample: SampleConfig = field(default_factory=SampleConfig)  # steps when filling holes
    eval: CompletionEvalConfig = field(default_factory=CompletionEvalConfig)
    seed: int = 0
    device: Literal["cpu", "gpu"] = "cpu"


def completion_config_from_dict(raw: dict) -> CompletionConfig:
    """Validate a raw mapping into a `CompletionConfig` (same checks as `config_from_dict`)."""
    cfg = build(CompletionConfig, raw, "")
    check_learning(cfg)
    require(0 <= cfg.eval.seed <= MAX_SEED, "eval.seed",
            f"must be in [0, 2^63 - 1], got {cfg.eval.seed}")
    m, mask = cfg.model, cfg.mask
    require(cfg.train.ema == 0, "train.ema", "an average of the weights is kept for generation "
             "only; set it to 0 for completion")
    require(m.channels == 3, "model.channels", f"completion data are RGB: must be 3, got {m.channels}")
    for name, layers in (("ebm", m.ebm.conv), ("encoder", m.encoder.conv)):
        require(len(layers) >= 1, f"model.{name}.conv", "needs at least one layer")
        for i, layer in enumerate(layers):
            layer.validate(f"model.{name}.conv.{i}")
    require(m.ebm.head_kernel >= 1, "model.ebm.head_kernel", "must be >= 1")
    require(m.ebm.mean_sigma > 0, "model.ebm.mean_sigma", "must be > 0")
    require(m.ebm.net_lr_scale > 0, "model.ebm.net_lr_scale", "must be > 0")
    for key, d in (("model.decoder", m.decoder), ("model.ebm.mean", m.ebm.mean)):
        if d is None:
            continue
        require(len(d.down) >= 1 and min(d.down) >= 1, f"{key}.down",
                 f"needs at least one layer, each with >= 1 channels, got {d.down}")
        require(d.bottleneck >= 1, f"{key}.bottleneck", "must be >= 1")
        require(d.out_kernel >= 1 and d.out_kernel % 2 == 1, f"{key}.out_kernel",
                 "must be odd and >= 1")
        require(m.image_size % 2 ** len(d.down) == 0, f"{key}.down",
                 f"{len(d.down)} stride-2 layers need model.image_size divisible by "
                 f"{2 ** len(d.down)}, got {m.image_size}")
    e = cfg.eval
    require(e.every >= 0, "eval.every", f"must be >= 0 (0 = off), got {e.every}")
    require(e.limit is None or e.limit >= 1, "eval.limit", "must be >= 1 or null")
    if mask.kind == "file":
        require(mask.path is not None, "mask.path", "is required for mask.kind 'file'")
    else:
        require(1 <= mask.size < m.image_size, "mask.size",
                 f"must be in [1, model.image_size - 1 = {m.image_size - 1}], got {mask.size}")
    return cfg


def load_completion_config(path: str | Path, overrides: list[str] = ()) -> CompletionConfig:
    """Read, override and validate a completion YAML file."""
    return completion_config_from_dict(load_raw(path, overrides))
