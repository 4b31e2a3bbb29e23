"""Completion experiment files: the typed config of conditional variational MCMC teaching
(tools/complete.py), validated with the same rules as generation configs (ebm_vae.core.config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

from ebm_vae.core.config import (ConvLayer, DecoderConfig, EBMConfig, EncoderConfig, LangevinConfig,
                                 SampleConfig, TrainConfig, _build, _check_learning, _require,
                                 load_raw)


@dataclass(frozen=True)
class CompletionDataConfig:
    name: Literal["paris_street_view", "cmp_facade"]
    root: Optional[str] = None  # local folder (both datasets need one; see ebm_vae/folders.py)
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
class ConditionConfig:
    """The decoder's view of the condition: conv layers on (masked image, mask), flatten, a dense
    layer to a `code_dim` code that joins z at the decoder's 1x1 input."""
    conv: List[ConvLayer]
    code_dim: int


@dataclass(frozen=True)
class CompletionModelConfig:
    """f_theta(y, c), q_phi(z | y, c) and g_alpha(z, c); c = (masked image, mask)."""
    image_size: int
    channels: int
    latent_dim: int
    ebm: EBMConfig
    encoder: EncoderConfig
    condition: ConditionConfig
    decoder: DecoderConfig
    init_std: float = 0.02
    leaky_slope: float = 0.2
    bn_batch_stats: bool = False


@dataclass(frozen=True)
class CompletionConfig:
    data: CompletionDataConfig
    mask: MaskConfig
    model: CompletionModelConfig
    langevin: LangevinConfig
    train: TrainConfig  # num_chains: Langevin chains per (image, mask) pair
    sample: SampleConfig = field(default_factory=SampleConfig)  # steps when filling holes
    seed: int = 0
    device: Literal["cpu", "gpu"] = "cpu"


def completion_config_from_dict(raw: dict) -> CompletionConfig:
    """Validate a raw mapping into a `CompletionConfig` (same checks as `config_from_dict`)."""
    cfg = _build(CompletionConfig, raw, "")
    _check_learning(cfg)
    m, mask = cfg.model, cfg.mask
    _require(m.channels == 3, "model.channels", f"completion data are RGB: must be 3, got {m.channels}")
    _require(m.condition.code_dim >= 1, "model.condition.code_dim", "must be >= 1")
    _require(len(m.condition.conv) >= 1, "model.condition.conv", "needs at least one layer")
    for i, layer in enumerate(m.condition.conv):
        layer.validate(f"model.condition.conv.{i}")
    if mask.kind == "file":
        _require(mask.path is not None, "mask.path", "is required for mask.kind 'file'")
    else:
        _require(1 <= mask.size < m.image_size, "mask.size",
                 f"must be in [1, model.image_size - 1 = {m.image_size - 1}], got {mask.size}")
    return cfg


def load_completion_config(path: str | Path, overrides: list[str] = ()) -> CompletionConfig:
    """Read, override and validate a completion YAML file."""
    return completion_config_from_dict(load_raw(path, overrides))
