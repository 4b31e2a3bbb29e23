"""Evaluate a completion run on the test split (against the baselines) and fill a user's image."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ebm_vae.completion.baselines import harmonic_fill, mean_fill, unconditional_fill
from ebm_vae.completion.masks import MaskError, MaskSource, load_mask, paste, resize_mask
from ebm_vae.completion.model import complete, load_completion_run
from ebm_vae.core.runs import load_run
from ebm_vae.data.folders import load_folder_split, read_image, to_float
from ebm_vae.errors import UserError
from ebm_vae.eval.image_metrics import completion_metrics
from ebm_vae.utils.images import save_grids, to_uint8
from ebm_vae.utils.runtime import seed_all

GRID_ROWS = 8


def evaluate(run_dir: str | Path, out_dir: str | Path, data_root: str | None = None,
             uncond_dir: str | Path | None = None, limit: int | None = None, seed: int = 0,
             steps: int | None = None) -> dict:
    """Fill the test split's holes (the run's mask config, masks seeded by `seed`) with the model
    and the baselines; write metrics.json (mean and std per method) and completions.png."""
    cfg, models = load_completion_run(run_dir)
    size = cfg.model.image_size
    images = to_float(load_folder_split(cfg.data.name, data_root or cfg.data.root, "test", size,
                                        cfg.data.resize)[:limit])
    masks = MaskSource(cfg.mask.kind, cfg.mask.size, size, cfg.mask.path)(
        len(images), np.random.default_rng(seed))
    seed_all(seed)
    steps = cfg.sample.steps if steps is None else steps
    fills = {"ours (conditional EBM + cVAE)": complete(models, images, masks, cfg.model.latent_dim,
                                                       steps, cfg.langevin)}
    if uncond_dir is not None:
        fills["unconditional model (encode-decode-revise-paste)"] = unconditional_fill(
            *load_run(uncond_dir)[:2], images, masks)
    fills["harmonic interpolation"] = harmonic_fill(images, masks)
    fills["mean of visible pixels"] = mean_fill(images, masks)
    results = {}
    for name, filled in fills.items():
        per_image = completion_metrics(filled, images, masks)
        results[name] = {k: {"mean": float(v.mean()), "std": float(v.std())}
                         for k, v in per_image.items()}
    report = {"run": str(run_dir), "split": "test", "images": len(images), "seed": seed,
              "langevin_steps": steps, "mask": {"kind": cfg.mask.kind, "size": cfg.mask.size,
                                                "path": cfg.mask.path},
              "units": "images in [0, 1]; PSNR in dB (capped at 100); L1 = mean |error|",
              "methods": results}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / "metrics.json")
    rows = min(GRID_ROWS, len(images))
    columns = [images * (1 - masks) + masks] + list(fills.values()) + [images]  # hole shown white
    tiles = np.stack([col[:rows] for col in columns], axis=1).reshape(-1, *images.shape[1:])
    title = " | ".join(["input"] + [n.split(" (")[0] for n in fills] + ["truth"])
    save_grids(out_dir / "completions.png", [(title, tiles)], nrow=len(columns))
    return report


class FillError(UserError, ValueError):
    """The image or mask cannot be completed by this model."""


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of [N, C, H, W] images in [-1, 1] to size = (width, height)."""
    return to_float(np.stack([np.asarray(Image.fromarray(p).resize(size, Image.BICUBIC))
                              for p in to_uint8(images)]).transpose(0, 3, 1, 2))


def fill_file(run_dir: str | Path, image_path: str | Path, mask_path: str | Path,
              out_path: str | Path, resize: bool = False, seed: int = 0,
              steps: int | None = None) -> np.ndarray:
    """Complete one picture (mask: white = hole, same size) and save the PNG. Pictures of another
    size than the model's need `resize`: the model fills a resized copy, which is resized back
    and pasted into the hole at full resolution."""
    cfg, models = load_completion_run(run_dir)
    image = read_image(image_path)
    h, w = image.shape[2:]
    mask = load_mask(mask_path, size=(h, w))
    s = cfg.model.image_size
    if (h, w) != (s, s) and not resize:
        raise FillError(f"this model completes {s}x{s} images, {image_path} is {w}x{h}: resize it "
                        "and its mask, or pass --resize")
    small, small_mask = (image, mask) if (h, w) == (s, s) else (_resize(image, (s, s)),
                                                                 resize_mask(mask, s))
    if small_mask.all():
        raise MaskError(f"mask {mask_path} covers the whole image: nothing to condition on")
    seed_all(seed)
    steps = cfg.sample.steps if steps is None else steps
    filled = complete(models, small, small_mask, cfg.model.latent_dim, steps, cfg.langevin)
    out = filled if (h, w) == (s, s) else paste(_resize(filled, (w, h)), image, mask)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(out)[0]).save(out_path)
    return out
