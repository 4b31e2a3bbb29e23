"""Evaluation of a run: FID / IS (Inception), classifier-feature FID (offline), reconstruction.

Image sets are evaluated by name: a model gives "proposals" (g_alpha(z)) and "revised" (after
Langevin); a sample file gives its arrays; real images give "real_<split>" (the floor of FID).
Every result carries its protocol (sample count, reference set, Langevin steps).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ebm_vae.core.config import Config
from ebm_vae.eval.classifier import (ClassifierError, TrainedClassifier, fit_classifier,
                                     load_classifier, save_classifier)
from ebm_vae.eval.metrics import (FeatureStats, feature_stats, frechet_distance, inception_score,
                                  mse_psnr)

CLASSIFIER_FILE = "classifier.ckpt"
CLS_FID_NOTE = ("classifier-feature FID (a small CNN trained on the dataset's labels): compares "
                "runs with each other; NOT comparable to Inception FIDs in papers")
FID_NOTE = "FID Inception (pytorch-fid port of inception-2015-12-05), pool3 features"
IS_NOTE = "Inception Score, softmax of the 1008 unbiased logits (OpenAI code), 10 splits"


def default_inception_stats(dataset: str, split: str) -> Path:
    return Path("stats") / f"inception_{dataset}_{split}.npz"


def classifier_path(run_dir: Optional[Path], given: Optional[str]) -> Path:
    if given:
        return Path(given)
    if run_dir is None:
        raise ClassifierError("give a classifier file (--classifier PATH) or a run folder (--ckpt)")
    return Path(run_dir) / CLASSIFIER_FILE


def train_and_save_classifier(path: Path, dataset: str, root: Optional[str], epochs: int,
                              seed: int = 0, progress: bool = True) -> TrainedClassifier:
    """Train the offline-metric classifier on a dataset's train split (accuracy and statistics
    on both splits) and cache it at `path`."""
    from ebm_vae.data.datasets import load_split

    splits = {s: load_split(dataset, root, s) for s in ("train", "test")}
    clf = fit_classifier(dataset, splits, epochs, seed, progress)
    save_classifier(path, clf)
    return clf


def ensure_classifier(path: Path, dataset: str, root: Optional[str], epochs: int,
                      progress: bool = True) -> TrainedClassifier:
    """Load the classifier at `path`, training and caching it there first if it is missing."""
    if not path.is_file():
        print(f"training the evaluation classifier on {dataset} -> {path}")
        return train_and_save_classifier(path, dataset, root, epochs, progress=progress)
    clf = load_classifier(path)
    if clf.dataset != dataset:
        raise ClassifierError(f"{path} was trained on {clf.dataset}, not {dataset}")
    return clf


def cls_fid_results(clf: TrainedClassifier, sets: dict[str, np.ndarray], reference: str) -> dict:
    out = {name: clf.fid(images, reference) for name, images in sets.items()}
    return {**out, "classifier_test_accuracy": clf.test_accuracy, "note": CLS_FID_NOTE}


def classifier_score(clf: TrainedClassifier, images: np.ndarray) -> tuple[float, float]:
    """The Inception Score formula on the offline classifier's class probabilities (mean, std
    over 10 splits; at most the number of classes). Like cls_fid, NOT comparable to paper IS."""
    import paddle
    import paddle.nn.functional as F

    from ebm_vae.eval.classifier import predict

    clf.check_images(images, "images")
    feats, _ = predict(clf.net, images)
    with paddle.no_grad():
        probs = F.softmax(clf.net.head(paddle.to_tensor(feats.astype(np.float32))), axis=1).numpy()
    return inception_score(probs, splits=10)


def inception_results(net, sets: dict[str, np.ndarray], reference: Optional[FeatureStats],
                      want_fid: bool, want_is: bool, batch_size: int, progress: bool) -> dict:
    """{'fid': {set: value}, 'is': {set: [mean, std]}} for the requested metrics."""
    from ebm_vae.eval.inception import inception_outputs

    fid: dict = {"note": FID_NOTE}
    iscore: dict = {"note": IS_NOTE, "splits": 10}
    for name, images in sets.items():
        feats, probs = inception_outputs(net, images, batch_size, progress)
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


def training_evaluation(models, cfg: Config, run_dir: Path, progress: bool = True):
    """The classifier-FID `Evaluation` for `fit` (eval.every > 0): FID of `eval.num_samples`
    proposals and revised samples (training Langevin steps), drawn from the same z each time."""
    import paddle

    from ebm_vae.core.sampling import ancestral_sample
    from ebm_vae.core.train import Evaluation
    from ebm_vae.utils.runtime import seed_all

    ev = cfg.eval
    clf = ensure_classifier(classifier_path(run_dir, ev.classifier), cfg.data.name, cfg.data.root,
                            ev.classifier_epochs, progress)
    keys = ["cls_fid_proposals", "cls_fid_revised"]

    def run() -> dict[str, float]:
        # side-effect free: modes and states (batch-norm running statistics) are restored
        modes = [m.training for m in models]
        states = [{k: v.numpy() for k, v in m.state_dict().items()} for m in models]
        for m in models:
            m.eval()
        seed_all(cfg.seed)  # common random numbers: every evaluation starts from the same z
        try:
            pair = ancestral_sample(models, ev.num_samples, cfg.model.latent_dim, cfg.langevin,
                                    cfg.train.num_chains, progress=False)
        finally:
            for m, mode, state in zip(models, modes, states):
                m.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
                m.train() if mode else m.eval()
        return dict(zip(keys, (clf.fid(pair.proposals, ev.reference),
                               clf.fid(pair.revised, ev.reference))))

    title = f"classifier FID vs {ev.reference} (offline; not paper FID)"
    return Evaluation(ev.every, keys, run, title)
