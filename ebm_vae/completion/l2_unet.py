"""A supervised baseline for completion: the decoder's U-Net (model.decoder, without z) trained
with plain L2 on the hole, the visible pixels pasted in, by Adam on the same data and masks as
the completion model, for a wall-time or iteration budget (docs/completion.md).

Its run folder holds config.yaml (the completion config it was trained from), log.csv (one row
per iteration), unet.pdparams and state.json ({"iteration", "seconds"}), every file written
atomically; `tools/complete.py baseline` trains one, `eval --l2-ckpt` scores it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import paddle

from ebm_vae.completion.config import CompletionConfig, load_completion_config
from ebm_vae.completion.masks import FillError, MaskSource, paste
from ebm_vae.completion.networks import UNet, condition
from ebm_vae.training.checkpoints import load_tensor_file, tensor_bytes
from ebm_vae.core.config import dump_config
from ebm_vae.training.record import RunLog
from ebm_vae.training.states import load_layer_states
from ebm_vae.data.folders import load_folder_split, to_float
from ebm_vae.utils.atomic import write_bytes, write_text
from ebm_vae.utils.progress import Progress
from ebm_vae.utils.runtime import configure_runtime, seed_all

WEIGHTS, STATE = "unet.pdparams", "state.json"


def build_l2_unet(cfg: CompletionConfig) -> UNet:
    """The decoder g's U-Net without z (the same layers but the bottleneck's z input)."""
    with paddle.utils.unique_name.guard():
        return UNet(cfg.model, cfg.model.decoder, latent_dim=0)


def hole_l2(net: UNet, y: paddle.Tensor, m: paddle.Tensor) -> paddle.Tensor:
    """Mean squared error over the hole pixels of the net's fill (visible pixels pasted)."""
    out = net(None, condition(y, m))
    return (((out - y) * m) ** 2).sum() / (m.sum() * y.shape[1])


def _learning_rate(cfg: CompletionConfig, iteration: int, n: int) -> float:
    """train.lr_vae with the config's decay: lr0 * rate^(epoch / lr_decay_epochs)."""
    t = cfg.train
    epoch = iteration * t.batch_size / n
    return t.lr_vae * t.lr_decay_rate ** (epoch / t.lr_decay_epochs)


def _save(run_dir: Path, net: UNet, iteration: int, seconds: float) -> None:
    write_bytes(run_dir / WEIGHTS, tensor_bytes(net.state_dict()))
    write_text(run_dir / STATE, json.dumps({"iteration": iteration, "seconds": seconds}) + "\n")


def train_l2_unet(cfg: CompletionConfig, run_dir: str | Path, minutes: Optional[float] = None,
                  iters: Optional[int] = None, images: Optional[np.ndarray] = None,
                  progress: bool = True, threads: Optional[int] = None) -> UNet:
    """Train the L2 U-Net until `minutes` of training time (the sum of the step times) or
    `iters` iterations, whichever comes first (one of them is required); uint8 `images`
    replace the training split. Masks: the config's kind, drawn per batch (seeded)."""
    if minutes is None and iters is None:
        raise FillError("give the baseline a budget: --minutes M or --iters N")
    run_dir = Path(run_dir)
    if (run_dir / STATE).exists():
        raise FillError(f"{run_dir} already holds a trained baseline; choose another --out")
    configure_runtime(cfg.device, threads)
    seed_all(cfg.seed)
    if images is None:
        images = load_folder_split(cfg.data.name, cfg.data.root, "train", cfg.model.image_size,
                                   cfg.data.resize)
    net, t = build_l2_unet(cfg), cfg.train
    opt = paddle.optimizer.Adam(t.lr_vae, beta1=t.beta1, beta2=t.beta2,
                                parameters=net.parameters())
    masks = MaskSource(cfg.mask.kind, cfg.mask.size, cfg.model.image_size, cfg.mask.path)
    rng, log = np.random.default_rng(cfg.seed), RunLog(run_dir / "log.csv", None)
    dump_config(cfg, run_dir / "config.yaml")
    bar = Progress(iters or 0, desc="L2 U-Net", enabled=progress)
    it, seconds, budget = 0, 0.0, float("inf") if minutes is None else 60.0 * minutes
    while seconds < budget and (iters is None or it < iters):
        start = time.perf_counter()
        batch = images[rng.choice(len(images), min(t.batch_size, len(images)), replace=False)]
        opt.set_lr(_learning_rate(cfg, it, len(images)))
        loss = hole_l2(net, paddle.to_tensor(to_float(batch)),
                       paddle.to_tensor(masks(len(batch), rng)))
        opt.clear_grad()
        loss.backward()
        opt.step()
        it += 1
        step = time.perf_counter() - start
        seconds += step
        log.append({"iteration": it, "loss": float(loss), "lr": opt.get_lr(),
                    "sec_per_iter": step, "minutes": seconds / 60})
        bar.update(it, loss=f"{float(loss):.4f}", min=f"{seconds / 60:.1f}")
    bar.close()
    _save(run_dir, net, it, seconds)
    return net


def load_l2_unet(run_dir: str | Path) -> tuple[CompletionConfig, UNet, dict]:
    """The config, trained net (eval mode) and state ({"iteration", "seconds"}) of a baseline
    run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / WEIGHTS).is_file():
        raise FillError(f"{run_dir} is not an L2 U-Net baseline folder (needs config.yaml and "
                        f"{WEIGHTS}: train one with `tools/complete.py baseline`)")
    cfg = load_completion_config(run_dir / "config.yaml")
    net = build_l2_unet(cfg)
    load_layer_states({"unet": net}, {"unet": load_tensor_file(run_dir / WEIGHTS)}, str(run_dir))
    net.eval()
    state = json.loads((run_dir / STATE).read_text()) if (run_dir / STATE).is_file() else {}
    return cfg, net, state


def l2_fill(net: UNet, images: np.ndarray, masks: np.ndarray, batch_size: int = 64
            ) -> np.ndarray:
    """The net's fill of each hole, visible pixels pasted back (bit-exact)."""
    out = []
    for i in range(0, len(images), batch_size):
        c = condition(paddle.to_tensor(images[i:i + batch_size]),
                      paddle.to_tensor(masks[i:i + batch_size]))
        with paddle.no_grad():
            out.append(net(None, c).numpy())
    return paste(np.clip(np.concatenate(out), -1.0, 1.0), images, masks)
