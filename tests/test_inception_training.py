"""The in-training Inception FID (eval.metric: fid) on tiny shapes, with random Inception weights:
it is logged for proposals and revised samples (and the weight average's) and chooses best/."""
from __future__ import annotations

import csv
import math

import paddle
import pytest

from ebm_vae.training.checkpoints import best_score
from ebm_vae.core.config import config_from_dict
from ebm_vae.training.generation import train_generation
from ebm_vae.eval import fid_reference
from ebm_vae.eval.evaluate import training_evaluation
from ebm_vae.eval.inception import FIDInceptionV3
from ebm_vae.utils.cache import CACHE_ENV


@pytest.mark.slow
def test_in_training_inception_fid_is_logged_and_keeps_best(tiny_raw, tiny_images, tmp_path,
                                                            monkeypatch):
    paddle.seed(0)
    weights = tmp_path / "random_inception.pdparams"
    paddle.save(FIDInceptionV3(logits=False).state_dict(), str(weights))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(fid_reference.datasets, "load_split",
                        lambda name, root, split: (tiny_images, None))
    tiny_raw["eval"] = {"every": 2, "metric": "fid", "inception": str(weights),
                        "num_samples": 3, "reference_images": 4}
    tiny_raw["train"]["ema"] = 0.9
    run = tmp_path / "run"
    train_generation(config_from_dict(tiny_raw), run, 2, images=tiny_images, progress=False,
                     evaluation=training_evaluation)
    with open(run / "log.csv") as f:
        last = list(csv.DictReader(f))[-1]
    keys = ["fid_proposals", "fid_revised", "fid_ema_proposals", "fid_ema_revised"]
    assert all(math.isfinite(float(last[k])) and float(last[k]) >= 0 for k in keys), last
    assert best_score(run)[:2] == ("fid_ema_revised", float(last["fid_ema_revised"]))
    assert list((tmp_path / "cache" / "fid_stats").glob("inception_*_train_4_*.npz"))
