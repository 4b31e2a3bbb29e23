"""Evaluate a completion run on the test split (against the baselines), fill a user's image, and
draw the hole-PSNR curve of a run.

Every file written here goes through ebm_vae.utils.atomic.
"""
from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ebm_vae.completion.baselines import harmonic_fill, mean_fill, nearest_fill, unconditional_fill
from ebm_vae.completion.masks import FillError, MaskError, load_mask, paste, resize_mask
from ebm_vae.completion.config import CompletionConfig
from ebm_vae.completion.fill import complete, complete_k, ebm_mean_fill
from ebm_vae.completion.l2_unet import l2_fill, load_l2_unet
from ebm_vae.completion.quality import FillAll, completion_fid, inception_features, sharpness
from ebm_vae.completion.networks import ConditionalModels
from ebm_vae.completion.train import eval_masks, load_completion_run
from ebm_vae.core.sampling import sampling_defaults
from ebm_vae.data.folders import load_folder_split, read_image, to_float
from ebm_vae.eval.image_metrics import completion_metrics
from ebm_vae.training.runs import load_run
from ebm_vae.utils.atomic import write_text
from ebm_vae.utils.provenance import code_version, command_line
from ebm_vae.utils.memory import check_fits
from ebm_vae.utils.images import grid, save_plots, save_png, to_uint8
from ebm_vae.utils.runtime import check_seed, seed_all

GRID_ROWS = 8
OURS = "ours (conditional EBM + cVAE)"  # the revised fill (first of the K); tables read this key
PROPOSAL = "ours: cVAE proposal g(z, c), before revision"
MEAN_OF_K = "ours: mean of the K revised fills"
EBM_MEAN = "ablation: the EBM's Gaussian mean mu(c) alone"
HARMONIC, MEAN = "harmonic interpolation", "mean of visible pixels"
UNCOND = "unconditional model (encode-decode-revise-paste)"
L2_UNET = "baseline: L2 U-Net (g's U-Net without z, trained with L2)"
NEAREST = "nearest training image's hole (retrieval)"


def hole_diversity(fills: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean pairwise L1 between the K fills of each hole, over the hole pixels, in [0, 1] units.

    fills: [K, N, C, H, W] in [-1, 1] (K >= 2); masks: [N, 1, H, W]. Returns [N]."""
    k = len(fills)
    if k < 2:
        raise ValueError("diversity needs at least 2 fills per hole")
    w = np.broadcast_to(masks, fills.shape[1:]).astype(np.float64)
    area = w.reshape(len(w), -1).sum(axis=1)
    pairs = [(np.abs(fills[i].astype(np.float64) - fills[j]) * w).reshape(len(w), -1).sum(axis=1)
             / area / 2.0 for i, j in combinations(range(k), 2)]
    return np.mean(pairs, axis=0)


HIGHER_IS_BETTER = {"psnr_hole": True, "ssim_hole": True, "l1_hole": False}


def paired_difference(ours: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Per hole metric, ours minus the other method on the same images: the mean difference, its
    standard error (sample std / sqrt(N)) and the fraction of images where ours is better."""
    out = {}
    for key, higher in HIGHER_IS_BETTER.items():
        d = np.asarray(ours[key], np.float64) - np.asarray(other[key], np.float64)
        better = d > 0 if higher else d < 0
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        out[key] = {"mean_diff": float(d.mean()), "std_err": se, "ours_better": float(better.mean())}
    return out


def save_labelled_grid(path: str | Path, columns: list[tuple[str, np.ndarray]], rows: int,
                       scale: int = 2) -> None:
    """One row per image, one titled column per method ([N, C, H, W] in [-1, 1] each)."""
    tiles = np.stack([col[:rows] for _, col in columns], axis=1).reshape(-1, *columns[0][1].shape[1:])
    pic = grid(tiles, nrow=len(columns))
    pic = np.repeat(np.repeat(pic, scale, 0), scale, 1)
    cell = pic.shape[1] / len(columns)
    head = 16
    canvas = Image.new("RGB", (pic.shape[1], pic.shape[0] + head), "white")
    canvas.paste(Image.fromarray(pic), (0, head))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (title, _) in enumerate(columns):
        draw.text((int(i * cell) + 4, 2), title[:int(cell // 6)], fill="black", font=font)
    save_png(canvas, path)


def _training_time(run_dir: Path, iteration: int) -> Optional[float]:
    """Seconds of training (sum of the logged step times) up to `iteration`, if logged."""
    log = run_dir / "log.csv"
    if not log.is_file():
        return None
    with open(log, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= iteration]
    return float(sum(float(r["sec_per_iter"]) for r in rows)) if rows else None


def _summary(per_image: dict[str, np.ndarray]) -> dict:
    return {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in per_image.items()}


class Fills(NamedTuple):
    """How the model fills each hole: `samples` times (each its own z and Langevin noise), with
    `steps` Langevin steps (default: the config's sample.steps), seeded by `seed`."""
    seed: int = 0
    steps: Optional[int] = None
    samples: int = 1


@dataclass(frozen=True)
class EvalRequest:
    """What `evaluate` fills and scores: the first `limit` images of `split` (in `data_root`,
    default the config's), one seeded hole per image (the run's mask config unless `mask_kind`
    / `mask_size`), with the weights of `checkpoint` (default: the run's newest), against the
    harmonic and mean fills and, if given, the unconditional run `uncond_dir` and the L2 U-Net
    folder `l2_dir`, and with `nearest` the nearest training image's hole; with `fid_holes` > 0
    also the Inception FIDs (whole image, hole) over that many seeded holes per image."""
    data_root: Optional[str] = None
    split: str = "test"
    limit: Optional[int] = None
    mask_kind: Optional[str] = None
    mask_size: Optional[int] = None
    checkpoint: str | Path | None = None
    uncond_dir: str | Path | None = None
    l2_dir: str | Path | None = None
    fid_holes: int = 0
    nearest: bool = False


def evaluate(run_dir: str | Path, out_dir: str | Path, request: EvalRequest = EvalRequest(),
             fills: Fills = Fills(), threads: int | None = None) -> dict:
    """Fill the holes `request` names `fills.samples` times each with the model's proposal and
    its revised fill, and fill them with the baselines; write metrics.json and completions.png.
    `run_dir`: a run folder or exported weights; `threads`: CPU math threads.

    Metrics of ours are those of the first fill; with samples >= 2 also the mean of the K revised
    fills and the diversity (mean pairwise L1 between the K fills in the hole). Every method's
    sharpness ratio; with `fid_holes` > 0 the Inception FID of every method's completions with
    that many seeded holes per image against the real images (completion/quality.py)."""
    (seed, steps, samples), r = fills, request
    if samples < 1 or r.fid_holes < 0:
        raise FillError(f"--samples must be >= 1 and --fid-holes >= 0, got {samples}, "
                        f"{r.fid_holes}")
    check_seed(seed)
    run_dir = Path(run_dir)
    cfg, models, iteration = load_completion_run(run_dir, r.checkpoint, with_iteration=True,
                                                 threads=threads)
    size = cfg.model.image_size
    images = to_float(load_folder_split(cfg.data.name, r.data_root or cfg.data.root, r.split, size,
                                        cfg.data.resize)[:r.limit])
    masks = eval_masks(cfg, len(images), seed, r.mask_kind, r.mask_size)
    fillers = _fillers(models, images, r, cfg)
    seed_all(seed)
    steps = sampling_defaults(cfg, steps)[0]
    proposals, revised = complete_k(models, images, masks, samples, cfg.model.latent_dim, steps,
                                    cfg.langevin)
    filled = _method_fills(proposals, revised, {n: f(masks) for n, f in fillers.items()})
    per_image = {name: completion_metrics(f, images, masks) for name, f in filled.items()}
    results = {name: {**_summary(m), "sharpness": sharp}
               for (name, m), sharp in zip(per_image.items(),
                                           sharpness(filled, images, masks).values())}
    train_s = _training_time(run_dir, iteration) if iteration is not None else None
    report = {"run": str(run_dir), "checkpoint": str(r.checkpoint) if r.checkpoint else "last",
              "code": code_version(), "command": command_line(),
              "iteration": iteration, "training_seconds": train_s, "split": r.split,
              "images": len(images), "seed": seed, "langevin_steps": steps, "samples": samples,
              "mask": {"kind": r.mask_kind or cfg.mask.kind, "size": r.mask_size or cfg.mask.size,
                       "trained_on": {"kind": cfg.mask.kind, "size": cfg.mask.size}},
              "units": "images in [0, 1]; PSNR in dB (capped at 100); L1 = mean |error|; "
                       "sharpness = mean hole gradient of the fills / of the truth",
              "methods": results,
              "paired_vs_harmonic": paired_difference(per_image[OURS], per_image[HARMONIC])}
    if samples >= 2:
        report["diversity_l1_hole"] = {
            "revised": _summary({"l1": hole_diversity(revised, masks)})["l1"],
            "proposal": _summary({"l1": hole_diversity(proposals, masks)})["l1"],
            "what": "mean pairwise L1 between the K fills of a hole, over its pixels, [0, 1] units"}
    if r.fid_holes:
        fill_all = functools.partial(_fill_all, models, images, cfg, steps, fillers)
        report.update(_fid_report(fill_all, cfg, images, seed, r))
    out_dir = Path(out_dir)
    write_text(out_dir / "metrics.json", json.dumps(report, indent=2))
    _save_completions(out_dir / "completions.png", images, masks, proposals, revised, filled)
    return report


def _fillers(models: ConditionalModels, images: np.ndarray, request: EvalRequest,
             cfg: CompletionConfig) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """{method: masks -> its completions of `images`} of every method but ours: the EBM's mean
    alone (if the model has one), the unconditional run, the L2 U-Net and the nearest training
    image (if `request` asks), the harmonic and mean fills."""
    uncond_dir, l2_dir, size = request.uncond_dir, request.l2_dir, cfg.model.image_size
    fillers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if models.ebm.mean is not None:
        fillers[EBM_MEAN] = functools.partial(ebm_mean_fill, models, images)
    if uncond_dir is not None:
        try:
            uncond = load_run(uncond_dir)
        except (OSError, KeyError, RuntimeError) as err:
            raise FillError(f"cannot load the unconditional run {uncond_dir}: {err}") from err
        fillers[UNCOND] = functools.partial(unconditional_fill, uncond.cfg, uncond.models, images)
    if l2_dir is not None:
        l2_cfg, net, _ = load_l2_unet(l2_dir)
        if l2_cfg.model.image_size != size:
            raise FillError(f"the L2 U-Net {l2_dir} completes {l2_cfg.model.image_size}x"
                            f"{l2_cfg.model.image_size} images, the model {size}x{size}")
        fillers[L2_UNET] = functools.partial(l2_fill, net, images)
    if request.nearest:
        train = to_float(load_folder_split(cfg.data.name, request.data_root or cfg.data.root,
                                           "train", size, cfg.data.resize))
        fillers[NEAREST] = functools.partial(nearest_fill, train, images)
    fillers[HARMONIC] = functools.partial(harmonic_fill, images)
    fillers[MEAN] = functools.partial(mean_fill, images)
    return fillers


def _method_fills(proposals: np.ndarray, revised: np.ndarray, others: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """{method: filled images} of every method evaluate() scores: ours (the first of the K
    revised fills and proposals [K, N, C, H, W], with K >= 2 the mean of the revised ones),
    then the `others` (`_fillers`' fills of the same holes)."""
    fills = {OURS: revised[0], PROPOSAL: proposals[0]}
    if len(revised) >= 2:
        fills[MEAN_OF_K] = revised.mean(axis=0)
    return {**fills, **others}


def _fill_all(models: ConditionalModels, images: np.ndarray, cfg: CompletionConfig, steps: int,
              fillers: dict[str, Callable[[np.ndarray], np.ndarray]], masks: np.ndarray
              ) -> dict[str, np.ndarray]:
    """One fill per method (ours: one revised fill and its proposal) of the holes `masks`."""
    proposal, revised = complete(models, images, masks, cfg.model.latent_dim, steps,
                                 cfg.langevin, with_proposal=True)
    return {OURS: revised, PROPOSAL: proposal, **{n: f(masks) for n, f in fillers.items()}}


def _fid_report(fill_all: FillAll, cfg: CompletionConfig, images: np.ndarray, seed: int,
                request: EvalRequest) -> dict:
    """{"fid": {...}} over `request.fid_holes` seeded hole sets (seed, seed + 1, ...), or
    {"fid_skipped": why} without Inception weights."""
    holes = request.fid_holes
    features, source = inception_features()
    if features is None:
        return {"fid_skipped": source}
    masks = [eval_masks(cfg, len(images), seed + h, request.mask_kind,
                        request.mask_size) for h in range(holes)]
    seed_all(seed)
    fids = completion_fid(fill_all, masks, images, features)
    return {"fid": {"methods": fids["image"], "hole": fids["hole"],
                    "holes_per_image": holes, "weights": source,
                    "what": "Inception FID (pool3) of the completed images against the real "
                            "ones (methods), and of crops around the holes against the real "
                            "crops (hole); same holes for every method"}}


def _save_completions(path: Path, images: np.ndarray, masks: np.ndarray, proposals: np.ndarray,
                      revised: np.ndarray, fills: dict[str, np.ndarray]) -> None:
    """The first GRID_ROWS test images: input with the hole white, the first proposal, the K
    revised fills, the baselines (the L2 U-Net and the nearest fill if scored) and the truth."""
    rows = min(GRID_ROWS, len(images))
    scored = [(title, fills[key]) for title, key in (("L2 U-Net", L2_UNET), ("nearest", NEAREST))
              if key in fills]
    columns = ([("input", images * (1 - masks) + masks), ("proposal 1", proposals[0])]
               + [(f"fill {i + 1}", revised[i]) for i in range(len(revised))] + scored
               + [("harmonic", fills[HARMONIC]), ("mean", fills[MEAN]), ("truth", images)])
    save_labelled_grid(path, columns, rows)


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of [N, C, H, W] images in [-1, 1] to size = (width, height)."""
    return to_float(np.stack([np.asarray(Image.fromarray(p).resize(size, Image.BICUBIC))
                              for p in to_uint8(images)]).transpose(0, 3, 1, 2))


def fill_file(run_dir: str | Path, image_path: str | Path, mask_path: str | Path,
              out_path: str | Path, resize: bool = False, fills: Fills = Fills(),
              threads: int | None = None) -> np.ndarray:
    """Complete one picture (mask: white = hole, same size) `fills.samples` times and save the PNGs:
    `out_path` for one fill; for K >= 2, OUT_1.png ... OUT_K.png and OUT_grid.png (input with
    the hole white, then the K fills). Pictures of another size than the model's need `resize`:
    the model fills a resized copy, which is resized back and pasted into the hole at full
    resolution. Returns the fills, [K, 1, C, H, W]."""
    seed, steps, samples = fills
    if samples < 1:
        raise FillError(f"--samples must be >= 1, got {samples}")
    cfg, models = load_completion_run(run_dir, threads=threads)
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
    check_fits(2 * samples * image.nbytes, f"{samples} fills of a {w}x{h} picture (float32)",
               "ask for fewer fills (--samples)")
    seed_all(seed)
    steps = sampling_defaults(cfg, steps)[0]
    _, filled = complete_k(models, small, small_mask, samples, cfg.model.latent_dim, steps,
                           cfg.langevin)
    outs = np.stack([f if (h, w) == (s, s) else paste(_resize(f, (w, h)), image, mask)
                     for f in filled])
    out_path = Path(out_path)
    if samples == 1:
        save_png(Image.fromarray(to_uint8(outs[0])[0]), out_path)
    else:
        for i, o in enumerate(outs):
            save_png(Image.fromarray(to_uint8(o)[0]),
                     out_path.with_name(f"{out_path.stem}_{i + 1}.png"))
        save_labelled_grid(out_path.with_name(f"{out_path.stem}_grid.png"),
                           [("input", image * (1 - mask) + mask)]
                           + [(f"fill {i + 1}", o) for i, o in enumerate(outs)], 1, scale=1)
    return outs


def plot_curve(run_dir: str | Path, out_path: str | Path, width: int = 640,
               height: int = 300) -> dict[str, list[float]]:
    """Test-split hole PSNR logged during training (eval.every) against iterations and against
    training minutes: ours before and after revision, the harmonic and mean fills."""
    log = Path(run_dir) / "log.csv"
    if not log.is_file():
        raise FillError(f"{run_dir} has no log.csv")
    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "psnr_hole_revised" not in rows[0]:
        raise FillError(f"{log} has no test-split evaluation (train with eval.every > 0)")
    minutes, total = [], 0.0
    for r in rows:
        total += float(r["sec_per_iter"])
        minutes.append(total / 60)
    keep = [(i, r) for i, r in enumerate(rows) if math.isfinite(float(r["psnr_hole_revised"]))]
    names = [("revised (ours)", "psnr_hole_revised"), ("proposal (ours)", "psnr_hole_proposal"),
             ("harmonic", "psnr_hole_harmonic"), ("mean fill", "psnr_hole_mean")]
    curve = {"iteration": [float(r["iteration"]) for _, r in keep],
             "minutes": [minutes[i] for i, _ in keep]}
    for _, key in names:
        curve[key] = [float(r[key]) for _, r in keep]
    panels = [(f"test hole PSNR (dB) vs {label}",
               {name: (curve[axis], curve[key]) for name, key in names})
              for axis, label in (("iteration", "iterations"),
                                  ("minutes", "training minutes (sum of step times)"))]
    save_plots(out_path, panels, xlabel="", width=width, height=height)
    return curve
