"""The one evaluation path: FID / IS (Inception), the offline classifier metrics (cls_fid,
cls_is) and reconstruction, for tools/evaluate.py and tools/reproduce.py alike.

Two steps, so that nothing fails after a long sampling run:
1. `prerequisites(metrics, dataset, ..., sources=Sources(...))` loads (or checks) everything the
   metrics need: the Inception weights and reference statistics, the classifier, the test split.
2. `evaluate(run, metrics, prereq, Request(...))` draws the samples (or takes given image sets),
   scores them and returns one entry per metric, each carrying its protocol.

Image sets are evaluated by name: a model gives "proposals" (g_alpha(z)) and "revised" (after
Langevin); a sample file gives its arrays; real images give "real_<split>" (the floor of FID).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import paddle
import paddle.nn.functional as F

from ebm_vae.core.config import Config
from ebm_vae.core.ema import PREFIX
from ebm_vae.core.sampling import (ancestral_sample, check_sampling_memory, reconstruct,
                                   sampling_defaults, unchanged_sample, with_steps)
from ebm_vae.data import datasets
from ebm_vae.errors import UserError
from ebm_vae.eval.classifier import (ClassifierError, TrainedClassifier, classifier_exists,
                                     fit_classifier, load_classifier, predict, save_classifier)
from ebm_vae.eval.fid_reference import check_weights, reference_stats
from ebm_vae.eval.inception import FIDInceptionV3, inception_outputs, load_inception
from ebm_vae.eval.metrics import (FeatureStats, feature_stats, frechet_distance, inception_score,
                                  mse_psnr)
from ebm_vae.training.record import Evaluation
from ebm_vae.training.runs import Run
from ebm_vae.utils.images import save_grids
from ebm_vae.utils.runtime import seed_all

# the one metric vocabulary (tools/evaluate.py --metrics, the tables' metrics)
METRICS = ("fid", "is", "cls_fid", "cls_is", "recon")
METRIC_LABELS = {"fid": "Inception FID (the paper's metric)",
                 "is": "Inception Score (the paper's metric)",
                 "cls_fid": "classifier FID (offline; NOT comparable with paper FIDs)",
                 "cls_is": "classifier IS (offline; NOT comparable with paper IS)",
                 "recon": "reconstruction of test images"}
SAMPLE_METRICS = ("fid", "is", "cls_fid", "cls_is")  # scored on image sets (samples, files, real)
CLASSIFIER_FILE = "classifier"  # RUN/classifier/: the run's classifier folder
CLS_FID_NOTE = ("classifier-feature FID (a small CNN trained on the dataset's labels): compares "
                "runs with each other; NOT comparable to Inception FIDs in papers")
CLS_IS_NOTE = ("the Inception Score formula on the small classifier's class probabilities (at "
               "most the number of classes): compares runs with each other; NOT comparable to "
               "paper IS")
FID_NOTE = "FID Inception (pytorch-fid port of inception-2015-12-05), pool3 features"
IS_NOTE = "Inception Score, softmax of the 1008 unbiased logits (OpenAI code), 10 splits"
INCEPTION_BATCH = 50


class EvaluationError(UserError, ValueError):
    """An evaluation request that cannot be served (unknown metric, missing statistics, ...)."""


def parse_metrics(metrics: Union[str, Sequence[str]]) -> list[str]:
    """A comma list (or a sequence) of metric names, checked against METRICS."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [m for m in names if m]
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise EvaluationError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def classifier_path(run_dir: Optional[Path], given: Optional[str]) -> Path:
    if given:
        return Path(given)
    if run_dir is None:
        raise ClassifierError("give a classifier folder (--classifier PATH) or a run folder (--ckpt)")
    return Path(run_dir) / CLASSIFIER_FILE


def train_and_save_classifier(path: Path, dataset: str, root: Optional[str], epochs: int,
                              seed: int = 0, progress: bool = True) -> TrainedClassifier:
    """Train the offline-metric classifier on a dataset's train split (accuracy and statistics
    on both splits) and cache it at `path`."""
    splits = {s: datasets.load_split(dataset, root, s) for s in ("train", "test")}
    clf = fit_classifier(dataset, splits, epochs, seed, progress)
    save_classifier(path, clf)
    return clf


def ensure_classifier(path: Path, dataset: str, root: Optional[str], epochs: int,
                      progress: bool = True) -> TrainedClassifier:
    """Load the classifier at `path`, training and caching it there first if it is missing."""
    if not classifier_exists(path):
        print(f"training the evaluation classifier on {dataset} -> {path}")
        return train_and_save_classifier(path, dataset, root, epochs, progress=progress)
    clf = load_classifier(path)
    if clf.dataset != dataset:
        raise ClassifierError(f"{path} was trained on {clf.dataset}, not {dataset}")
    return clf


# ---- 1. prerequisites ---------------------------------------------------------------------------

@dataclass
class Prerequisites:
    """What the metrics of one evaluation need, loaded; see `prerequisites`."""
    dataset: str
    metrics: list[str]
    reference: str = "train"
    inception: Optional[FIDInceptionV3] = None
    fid_stats: Optional[FeatureStats] = None
    fid_stats_path: Optional[str] = None  # "given" for statistics passed in
    classifier: Optional[TrainedClassifier] = None
    classifier_path: Optional[str] = None
    test_images: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Sources:
    """Where the prerequisites come from. inception: weights file (None: $EBM_VAE_INCEPTION, else
    the cache's) or a loaded network (fid, is; is needs weights with the classifier layer).
    fid_stats: reference statistics file or loaded statistics (fid; None: see `prerequisites`).
    classifier: a classifier folder or a loaded classifier (cls_fid, cls_is)."""
    inception: Union[str, FIDInceptionV3, None] = None
    fid_stats: Union[str, Path, FeatureStats, None] = None
    classifier: Union[str, Path, TrainedClassifier, None] = None


def prerequisites(metrics: Sequence[str], dataset: str, root: Optional[str] = None, *,
                  reference: str = "train", sources: Sources = Sources(),
                  recon_n: Optional[int] = None, reference_n: Optional[int] = None,
                  progress: bool = True) -> Prerequisites:
    """Load what `metrics` need from `sources`, or fail with a message that says how to supply
    it. Without given statistics, FID's are the Inception statistics of the first
    `reference_n` (None: all) images of the `reference` split, computed once per weights and
    count and cached (`fid_reference.reference_stats`). recon_n: test images to reconstruct
    (None or 0: all; recon)."""
    metrics = parse_metrics(metrics)
    pre = Prerequisites(dataset, metrics, reference)
    inception, fid_stats, classifier = sources.inception, sources.fid_stats, sources.classifier
    if "fid" in metrics or "is" in metrics:
        pre.inception = inception if isinstance(inception, FIDInceptionV3) else load_inception(inception)
    if "is" in metrics:
        pre.inception.require_logits()
    if "fid" in metrics:
        if isinstance(fid_stats, FeatureStats):
            pre.fid_stats, pre.fid_stats_path = fid_stats, "given"
        elif fid_stats:
            pre.fid_stats, pre.fid_stats_path = check_weights(fid_stats, pre.inception), str(fid_stats)
        else:
            pre.fid_stats, path = reference_stats(pre.inception, dataset, root, reference,
                                                  reference_n, progress=progress)
            pre.fid_stats_path = str(path)
    if "cls_fid" in metrics or "cls_is" in metrics:
        if classifier is None:
            raise ClassifierError("cls_fid / cls_is need a classifier (a classifier folder, such "
                                  "as a run folder's classifier/)")
        if isinstance(classifier, TrainedClassifier):
            pre.classifier, pre.classifier_path = classifier, "given"
        else:
            pre.classifier, pre.classifier_path = load_classifier(classifier), str(classifier)
        if pre.classifier.dataset != dataset:
            raise ClassifierError(f"classifier {pre.classifier_path} was trained on "
                                  f"{pre.classifier.dataset}, not {dataset}")
        if reference not in pre.classifier.stats:
            raise ClassifierError(f"classifier {pre.classifier_path} has no statistics of the "
                                  f"{reference} split")
    if "recon" in metrics:
        images, _ = datasets.load_split(dataset, root, "test")
        pre.test_images = images[:recon_n] if recon_n else images
    return pre


# ---- image sets -----------------------------------------------------------------------------------

def sample_file_sets(path: str | Path, n: int) -> dict[str, np.ndarray]:
    """The image sets of a tools/sample.py file: `proposals` (if present) and `images`."""
    try:
        with np.load(path) as f:
            if "images" not in f:
                raise EvaluationError(f"{path} has no array `images` (a tools/sample.py file has)")
            return {k: f[k][:n] for k in ("proposals", "images") if k in f}
    except (OSError, ValueError) as err:  # missing, or not an .npz
        if isinstance(err, EvaluationError):
            raise
        raise EvaluationError(f"cannot read the sample file {path}: {err}") from err


def real_sets(dataset: str, root: Optional[str], split: str, n: int) -> dict[str, np.ndarray]:
    """`n` real images of a split (`datasets.subset`), as the set `real_<split>`."""
    return {f"real_{split}": datasets.subset(datasets.load_split(dataset, root, split)[0], n)}


# ---- the metrics ----------------------------------------------------------------------------------

def cls_fid_results(clf: TrainedClassifier, sets: dict[str, np.ndarray], reference: str) -> dict:
    out = {name: clf.fid(images, reference) for name, images in sets.items()}
    return {**out, "classifier_test_accuracy": clf.test_accuracy, "note": CLS_FID_NOTE}


def classifier_score(clf: TrainedClassifier, images: np.ndarray) -> tuple[float, float]:
    """The Inception Score formula on the offline classifier's class probabilities (mean, std
    over 10 splits; at most the number of classes). Like cls_fid, NOT comparable to paper IS."""
    clf.check_images(images, "images")
    feats, _ = predict(clf.net, images)
    with paddle.no_grad():
        probs = F.softmax(clf.net.head(paddle.to_tensor(feats.astype(np.float32))), axis=1).numpy()
    return inception_score(probs, splits=10)


def cls_is_results(clf: TrainedClassifier, sets: dict[str, np.ndarray]) -> dict:
    out = {name: list(classifier_score(clf, images)) for name, images in sets.items()}
    return {**out, "splits": 10, "classifier_test_accuracy": clf.test_accuracy, "note": CLS_IS_NOTE}


def inception_results(net, sets: dict[str, np.ndarray], reference: Optional[FeatureStats],
                      want_fid: bool, want_is: bool, batch_size: int = INCEPTION_BATCH,
                      progress: bool = True) -> dict:
    """{'fid': {set: value}, 'is': {set: [mean, std]}} for the requested metrics."""
    fid: dict = {"note": FID_NOTE}
    iscore: dict = {"note": IS_NOTE, "splits": 10}
    for name, images in sets.items():
        feats, probs = inception_outputs(net, images, batch_size, progress, probs=want_is)
        if want_fid:
            fid[name] = frechet_distance(feature_stats(feats), reference)
        if want_is:
            iscore[name] = list(inception_score(probs, splits=10))
    return {**({"fid": fid} if want_fid else {}), **({"is": iscore} if want_is else {})}


def recon_results(pair_decoded: np.ndarray, pair_revised: np.ndarray, observed: np.ndarray) -> dict:
    """Per-pixel MSE and PSNR ([0, 1] scale) of decoded and revised reconstructions."""
    out = {}
    for name, images in (("decoded", pair_decoded), ("revised", pair_revised)):
        mse, psnr = mse_psnr(images, observed)
        out[name] = {"mse": mse, "psnr_db": psnr}
    return out


# ---- 2. the evaluation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """What `evaluate` scores besides the metrics, and how.

    images: image sets to score instead of samples of the run (a sample file, real images), with
        `source` naming them ("file", "real_test"); default: `n` samples of the run ("model",
        "untrained" for a model at its initialisation, "ema" for a weight average), each scored
        as VAE proposals and as Langevin-revised samples.
    steps, batch_size: Langevin steps and chains per sampling batch (`sampling_defaults`);
    seed: seeds the sampling; z: "mu" or "sample" (recon's latent); grid: recon's PNG (None:
    none written); run_dir: recorded in the protocol."""
    images: Optional[dict[str, np.ndarray]] = None
    source: str = "model"
    n: int = 50000
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    seed: int = 0
    z: str = "mu"
    grid: Optional[Path] = None
    run_dir: Optional[str] = None


def evaluate(run: Optional[Run], metrics: Sequence[str], prereq: Prerequisites,
             request: Request = Request(), progress: bool = True) -> dict:
    """Score `metrics` as `request` asks and return {metric: entry}; every entry holds its
    `protocol`. run: the loaded model (`ebm_vae.load_run`); needed to sample and for recon."""
    metrics, r, images = parse_metrics(metrics), request, request.images
    scored = _check_request(run, metrics, prereq, images, r.n)
    steps, batch_size = sampling_defaults(run.cfg, r.steps, r.batch_size) if run is not None else (
        None, None)
    from_model = images is None
    seed_all(r.seed)
    sets: dict[str, np.ndarray] = {}
    if scored:
        sets = _model_sets(run, r.n, steps, batch_size, progress) if from_model else images
    protocol = {"source": r.source, "dataset": prereq.dataset,
                "num_samples": min(len(v) for v in sets.values()) if sets else None,
                "langevin_steps": steps if from_model else None,
                "reference": prereq.reference, "seed": r.seed,
                "iteration": run.iteration if from_model and run is not None else None,
                "run": r.run_dir}
    results = _set_results(metrics, sets, prereq, protocol, progress)
    if "recon" in metrics:
        results["recon"] = _reconstruction(run, prereq.test_images, steps, batch_size, r.z, r.grid,
                                           {**protocol, "source": r.source}, progress)
    return {m: results[m] for m in metrics}


def _check_request(run: Optional[Run], metrics: list[str], prereq: Prerequisites,
                   images: Optional[dict[str, np.ndarray]], n: int) -> list[str]:
    """The metrics scored on image sets, after checking that the request can be served."""
    missing = sorted(set(metrics) - set(prereq.metrics))
    if missing:
        raise EvaluationError(f"the prerequisites were loaded for {prereq.metrics}, not {missing}")
    scored = [m for m in metrics if m in SAMPLE_METRICS]
    if run is None and ("recon" in metrics or (scored and images is None)):
        raise EvaluationError("nothing to evaluate: give a run (--ckpt RUN_DIR), or image sets "
                              "(--images NPZ, --real SPLIT); recon always needs a run")
    if "recon" in metrics and run is not None and "encoder" in run.missing:
        raise EvaluationError("recon needs the encoder q_phi, which these weights leave out "
                              "(shipped for sampling only): evaluate a run or checkpoint folder")
    if scored and n < 10 and images is None:
        raise EvaluationError("n must be >= 10 (IS uses 10 splits; FID needs a covariance)")
    return scored


def _model_sets(run: Run, n: int, steps: Optional[int], batch_size: Optional[int],
                progress: bool) -> dict[str, np.ndarray]:
    """`n` samples of the run, as the sets "proposals" (g_alpha(z)) and "revised" (Langevin)."""
    cfg = run.cfg
    check_sampling_memory(n, cfg.model)
    pair = ancestral_sample(run.models, n, cfg.model.latent_dim, with_steps(cfg.langevin, steps),
                            batch_size, progress)
    return {"proposals": pair.proposals, "revised": pair.revised}


def _set_results(metrics: list[str], sets: dict[str, np.ndarray], prereq: Prerequisites,
                 protocol: dict, progress: bool) -> dict:
    """{metric: entry} of the metrics scored on image sets (fid, is, cls_fid, cls_is)."""
    results: dict = {}
    if "fid" in metrics or "is" in metrics:
        inc = inception_results(prereq.inception, sets, prereq.fid_stats, "fid" in metrics,
                                "is" in metrics, INCEPTION_BATCH, progress)
        for name, entry in inc.items():
            results[name] = {"protocol": protocol, **entry}
        if "fid" in results:
            results["fid"]["reference_stats"] = prereq.fid_stats_path
            results["fid"]["reference_images"] = prereq.fid_stats.n
    if "cls_fid" in metrics:
        results["cls_fid"] = {"protocol": protocol, "classifier": prereq.classifier_path,
                              **cls_fid_results(prereq.classifier, sets, prereq.reference)}
    if "cls_is" in metrics:
        results["cls_is"] = {"protocol": protocol, "classifier": prereq.classifier_path,
                             **cls_is_results(prereq.classifier, sets)}
    return results


def _reconstruction(run: Run, images: np.ndarray, steps: int, batch_size: int, z: str,
                    grid: Optional[Path], protocol: dict, progress: bool) -> dict:
    """Test images -> encoder (mean or sample) -> decoder -> Langevin: MSE / PSNR, a grid."""
    if z not in ("mu", "sample"):
        raise EvaluationError(f"z must be 'mu' or 'sample', got {z!r}")
    pair = reconstruct(run.models, images, with_steps(run.cfg.langevin, steps), use_mean=z == "mu",
                       batch_size=batch_size, progress=progress)
    proto = {**protocol, "num_samples": len(images), "langevin_steps": steps,
             "iteration": run.iteration, "reference": "test split"}
    out = {"protocol": proto, "z": z, "num_images": len(images),
           **recon_results(pair.proposals, pair.revised, images)}
    if grid is not None:
        save_grids(grid, [("observed (test)", images[:64]), ("decoded g(z)", pair.proposals[:64]),
                          (f"revised ({steps} Langevin steps)", pair.revised[:64])])
        out["grid"] = str(grid)
    return out


# ---- during training ------------------------------------------------------------------------------

def _scorer(cfg: Config, run_dir: Path, progress: bool
            ) -> tuple[str, Callable[[np.ndarray], float], str]:
    """(metric name, images -> score, plot title) of `eval.metric`. Loads what the metric needs
    now, so a missing classifier or Inception weights fail before the first iteration."""
    ev = cfg.eval
    if ev.metric == "fid":
        net = load_inception(ev.inception)  # one-line error without weights
        ref = reference_stats(net, cfg.data.name, cfg.data.root, ev.reference,
                              ev.reference_images, progress=progress)[0]
        score = lambda x: frechet_distance(feature_stats(
            inception_outputs(net, x, probs=False)[0]), ref)
        return "fid", score, f"Inception FID vs {ev.reference} ({ev.num_samples} samples)"
    clf = ensure_classifier(classifier_path(run_dir, ev.classifier), cfg.data.name, cfg.data.root,
                            ev.classifier_epochs, progress)
    return ("cls_fid", lambda x: clf.fid(x, ev.reference),
            f"classifier FID vs {ev.reference} (offline; not paper FID)")


def training_evaluation(models, cfg: Config, run_dir: Path, progress: bool = True,
                        averaged=None) -> Evaluation:
    """The in-training `Evaluation` (eval.every > 0): `eval.metric` (classifier FID, or Inception
    FID) of `eval.num_samples` proposals and revised samples (training Langevin steps), drawn
    from the same z each time; the revised samples' score chooses checkpoints/best. With
    `averaged` (the weight average, train.ema > 0) its samples are scored too, from the same z,
    and their score chooses checkpoints/best instead.
    Pass it to `core.generation.train_generation(..., evaluation=training_evaluation)`."""
    ev = cfg.eval
    name, score, title = _scorer(cfg, run_dir, progress)
    sets = [("", models)] + ([(PREFIX, averaged)] if averaged is not None else [])
    keys = [f"{name}_{prefix}{kind}" for prefix, _ in sets for kind in ("proposals", "revised")]

    def run() -> dict[str, float]:
        values = []
        for _, nets in sets:
            pair = unchanged_sample(nets, cfg.seed, ev.num_samples, cfg.model.latent_dim,
                                    cfg.langevin, cfg.train.num_chains)
            values += [score(pair.proposals), score(pair.revised)]
        return dict(zip(keys, values))

    return Evaluation(ev.every, keys, run, title, best=keys[-1])
