"""Experiment configuration: plain YAML validated once into typed, frozen dataclasses.

Every key is checked here (unknown keys, wrong types, out-of-range values raise `ConfigError`
naming the dotted key), so everything downstream takes explicit, already valid arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional, Union

from ebm_vae.utils.typed_yaml import MAX_SEED, build, dump_yaml, load_raw, require


@dataclass(frozen=True)
class ConvLayer:
    """A conv layer with TF 'SAME' padding followed by leaky ReLU."""
    channels: int
    kernel: int
    stride: int = 1

    def validate(self, key: str) -> None:
        for name in ("channels", "kernel", "stride"):
            require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")


@dataclass(frozen=True)
class DeconvLayer:
    """A transposed conv layer: out = (in - 1) * stride - before - after + kernel + output_padding.

    `padding` is one number (the same crop before and after) or a pair [before, after]. TF's
    'SAME' transposed conv, which the released code uses, puts an odd crop after: e.g. 14 -> 28
    with kernel 3, stride 2 is padding [0, 1], not PyTorch-style padding 1 + output_padding 1
    (that output is one pixel off)."""
    channels: int
    kernel: int
    stride: int = 1
    padding: Union[int, List[int]] = 0
    output_padding: int = 0
    batch_norm: bool = False

    def validate(self, key: str) -> None:
        for name in ("channels", "kernel", "stride"):
            require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        pad = self.padding
        require(isinstance(pad, int) or len(pad) == 2, f"{key}.padding",
                 f"must be a number or a pair [before, after], got {pad!r}")
        require(min(self.crop) >= 0, f"{key}.padding", "must be >= 0")
        require(0 <= self.output_padding < self.stride, f"{key}.output_padding",
                 "must be >= 0 and < stride")

    @property
    def crop(self) -> tuple[int, int]:
        """Pixels cropped (before, after) from the full transposed-conv output."""
        return (self.padding, self.padding) if isinstance(self.padding, int) else tuple(self.padding)

    def out_size(self, size: int) -> int:
        return (size - 1) * self.stride - sum(self.crop) + self.kernel + self.output_padding


@dataclass(frozen=True)
class EBMConfig:
    """f_theta: conv layers, then a 'valid' conv over the remaining map with `out_dim` outputs."""
    conv: List[ConvLayer]
    out_dim: int = 1  # f(x) is the sum of the outputs (the released MNIST net has 100)


@dataclass(frozen=True)
class EncoderConfig:
    """q_phi(z|x): conv layers, flatten, two linear heads (mean and 0.5 * Dense = log sigma)."""
    conv: List[ConvLayer]
    dropout: float = 0.0  # drop probability after each conv (released MNIST encoder: 0.2)


@dataclass(frozen=True)
class DecoderConfig:
    """g_alpha(z): z as a 1x1 map, transposed convs; hidden layers use `act`, the last one tanh."""
    layers: List[DeconvLayer]
    act: Literal["relu", "leaky_relu"] = "leaky_relu"


@dataclass(frozen=True)
class ModelConfig:
    image_size: int
    channels: int
    latent_dim: int
    ebm: EBMConfig
    encoder: EncoderConfig
    decoder: DecoderConfig
    init_std: float = 0.005  # conv kernels ~ N(0, init_std^2), biases 0 [CODE]
    leaky_slope: float = 0.2  # TF leaky_relu default [CODE]
    # [CODE] TF1 batch_norm(is_training=True) everywhere: batch statistics at test time too.
    # false: standard batch norm (running statistics in eval mode).
    bn_batch_stats: bool = True


@dataclass(frozen=True)
class DataConfig:
    name: Literal["mnist", "fashion_mnist", "cifar10"]
    root: Optional[str] = None  # null: Paddle's dataset download; else a folder of local files
    # once: shuffled once at load (released MNIST loader); never: file order (released CIFAR
    # loader); every_epoch: a new permutation each epoch.
    shuffle: Literal["once", "never", "every_epoch"] = "once"
    limit: Optional[int] = None  # use only the first `limit` training images (quick runs)


Gradient = Literal["auto", "onednn", "autograd"]  # langevin.gradient


@dataclass(frozen=True)
class LangevinConfig:
    steps: int
    step_size: float
    ref_sigma: Optional[float] = 0.016  # null removes the Gaussian reference term
    noise: bool = True  # false reproduces the released code (noise line commented out)
    chunk_size: Optional[int] = None  # revise at most this many chains per forward/backward
    clamp: bool = False  # [OURS] clip every step to [-1, 1], the data range (docs/method.md §8)
    # how df/dx is computed: autograd (paddle.grad, any device), onednn (the EBM's backward
    # written out and compiled for the CPU: core/compiled_grad.py), auto = onednn where it applies
    gradient: Gradient = "auto"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    num_chains: int
    gamma: float
    lr_ebm: float
    lr_vae: float
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_rate: float = 0.98  # lr = lr0 * rate^(epoch / lr_decay_epochs) [CODE]
    lr_decay_epochs: float = 20.0
    sample_every: int = 500  # iterations between sample grids
    checkpoint_every: int = 500  # iterations between checkpoints
    log_every: int = 1  # iterations between CSV log rows
    visualdl: bool = False  # also write log rows and grids to <run>/vdl/ (needs visualdl; utils/vdl.py)
    keep_every: int = 0  # also keep checkpoints/iter_N at multiples of this; 0 = only the newest
    ema: float = 0.0  # [OURS] decay of a moving average of the weights for sampling (core/ema.py); 0 = none
    # Stabilisers [OURS] (docs/method.md, "Long runs"); 0 = off, the paper's Algorithm 1.
    data_noise: float = 0.0  # std of Gaussian noise added to the data the EBM sees
    energy_penalty: float = 0.0  # a in a * (mean f(data)^2 + mean f(revised)^2) added to L_theta
    # Collapse detector (training/guards.py): stop when |f(data) - f(revised)| stays above
    # collapse_factor x its median over the previous collapse_window iterations for
    # collapse_patience iterations in a row; collapse_factor 0 = off. The defaults never fired on
    # four normal MNIST logs (results/stability.md) and fired 7 iterations before the NaN.
    collapse_factor: float = 20.0
    collapse_window: int = 500
    collapse_patience: int = 10


@dataclass(frozen=True)
class SampleConfig:
    steps: int = 30  # Langevin steps for test-time synthesis [CODE sampling(sample_step=30)]


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings. During training (every > 0) `metric` of VAE proposals and revised
    samples is logged and plotted, and the best state kept; cls_fid is NOT comparable to paper
    FIDs."""
    every: int = 0  # iterations between evaluations during training; 0 = off
    # the in-training metric: cls_fid (offline classifier-feature FID, trained on first use) or
    # fid (Inception FID; needs the weights: eval.inception, $EBM_VAE_INCEPTION or the cache)
    metric: Literal["cls_fid", "fid"] = "cls_fid"
    num_samples: int = 1000  # generated images per evaluation during training
    reference: Literal["train", "test"] = "train"  # split whose statistics FID compares against
    classifier: Optional[str] = None  # classifier folder; null: <run dir>/classifier (trained if missing)
    classifier_epochs: int = 1  # epochs when the classifier has to be trained
    inception: Optional[str] = None  # FID Inception .pdparams (null: $EBM_VAE_INCEPTION, the cache)
    reference_images: Optional[int] = None  # fid: N reference images, seeded choice (null: all)


@dataclass(frozen=True)
class Config:
    data: DataConfig
    model: ModelConfig
    langevin: LangevinConfig
    train: TrainConfig
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: Literal["cpu", "gpu"] = "cpu"


def _check_ranges(cfg: Config) -> None:
    check_learning(cfg)
    require(cfg.eval.classifier_epochs >= 1, "eval.classifier_epochs",
             f"must be >= 1, got {cfg.eval.classifier_epochs}")
    require(cfg.eval.every >= 0, "eval.every", f"must be >= 0 (0 = off), got {cfg.eval.every}")
    require(cfg.eval.num_samples >= 2, "eval.num_samples", f"must be >= 2, got {cfg.eval.num_samples}")
    require(cfg.eval.reference_images is None or cfg.eval.reference_images >= 2,
             "eval.reference_images", "must be >= 2 or null (the whole split)")


def check_learning(cfg: Any) -> None:
    """Range checks of the data/model/langevin/train/sample sections, shared by `Config` and
    `CompletionConfig`."""
    m, lv, t = cfg.model, cfg.langevin, cfg.train
    require(0 <= cfg.seed <= MAX_SEED, "seed", f"must be in [0, 2^63 - 1], got {cfg.seed}")
    for key, value in [("model.image_size", m.image_size), ("model.channels", m.channels),
                       ("model.latent_dim", m.latent_dim), ("model.ebm.out_dim", m.ebm.out_dim),
                       ("train.epochs", t.epochs), ("train.batch_size", t.batch_size),
                       ("train.num_chains", t.num_chains), ("train.sample_every", t.sample_every),
                       ("train.checkpoint_every", t.checkpoint_every),
                       ("train.log_every", t.log_every), ("sample.steps", cfg.sample.steps)]:
        require(value >= 1, key, f"must be >= 1, got {value}")
    require(t.collapse_window >= 1, "train.collapse_window", f"must be >= 1, got {t.collapse_window}")
    require(t.collapse_patience >= 1, "train.collapse_patience",
             f"must be >= 1, got {t.collapse_patience}")
    for key in ("keep_every", "data_noise", "energy_penalty", "collapse_factor"):
        require(getattr(t, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
    require(lv.steps >= 0, "langevin.steps", f"must be >= 0, got {lv.steps}")
    require(lv.step_size > 0, "langevin.step_size", f"must be > 0, got {lv.step_size}")
    require(lv.ref_sigma is None or lv.ref_sigma > 0, "langevin.ref_sigma", "must be > 0 or null")
    require(lv.chunk_size is None or lv.chunk_size >= 1, "langevin.chunk_size", "must be >= 1 or null")
    require(cfg.data.limit is None or cfg.data.limit >= 1, "data.limit", "must be >= 1 or null")
    require(cfg.data.root is None or cfg.data.root.strip() != "", "data.root",
             "must be a folder path, or null for Paddle's download")
    require(t.gamma >= 0, "train.gamma", f"must be >= 0, got {t.gamma}")
    for key in ("lr_ebm", "lr_vae", "lr_decay_epochs"):
        require(getattr(t, key) > 0, f"train.{key}", f"must be > 0, got {getattr(t, key)}")
    for key in ("beta1", "beta2"):
        require(0 <= getattr(t, key) < 1, f"train.{key}", "must be in [0, 1)")
    require(0 <= t.ema < 1, "train.ema", f"must be in [0, 1) (0 = no average), got {t.ema}")
    require(0 < t.lr_decay_rate <= 1, "train.lr_decay_rate", "must be in (0, 1]")
    require(0 <= m.encoder.dropout < 1, "model.encoder.dropout", "must be in [0, 1)")
    require(m.init_std > 0, "model.init_std", "must be > 0")
    require(m.leaky_slope >= 0, "model.leaky_slope", "must be >= 0")
    if isinstance(m, ModelConfig):  # completion models check their own networks (completion/config.py)
        _check_architecture(m)


def _check_architecture(m: ModelConfig) -> None:
    """Check the layer lists; the decoder must produce exactly channels x image_size^2."""
    for name, layers in [("ebm", m.ebm.conv), ("encoder", m.encoder.conv)]:
        require(len(layers) >= 1, f"model.{name}.conv", "needs at least one layer")
        for i, layer in enumerate(layers):
            layer.validate(f"model.{name}.conv.{i}")
    layers = m.decoder.layers
    require(len(layers) >= 1, "model.decoder.layers", "needs at least one layer")
    size = 1
    for i, layer in enumerate(layers):
        layer.validate(f"model.decoder.layers.{i}")
        size = layer.out_size(size)
        require(size >= 1, f"model.decoder.layers.{i}", "gives an empty feature map")
    require(size == m.image_size and layers[-1].channels == m.channels, "model.decoder.layers",
             f"produce {layers[-1].channels}x{size}x{size} images, but model.channels and "
             f"model.image_size ask for {m.channels}x{m.image_size}x{m.image_size}")
    require(not layers[-1].batch_norm, "model.decoder.layers", "the last (tanh) layer has no batch norm")


def config_from_dict(raw: dict) -> Config:
    """Validate a raw mapping into a `Config`."""
    cfg = build(Config, raw, "")
    _check_ranges(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a YAML experiment file."""
    return config_from_dict(load_raw(path, overrides))


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back to an equal `Config`)."""
    dump_yaml(cfg, path)
