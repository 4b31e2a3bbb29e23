"""FID / IS / PSNR math against closed forms, and the offline classifier metric."""
from __future__ import annotations

import numpy as np
import pytest

from ebm_vae.eval.classifier import (ClassifierError, fit_classifier, load_classifier, predict,
                                     save_classifier)
from ebm_vae.eval.metrics import (FeatureStats, feature_stats, frechet_distance, inception_score,
                                  mse_psnr)


def test_fid_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    s = feature_stats(feats)
    assert abs(frechet_distance(s, s)) < 1e-6


def test_fid_between_gaussians_matches_the_closed_form():
    # diagonal covariances: ||mu1 - mu2||^2 + sum(a + b - 2 sqrt(a b))
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    expect = 5.0 + np.sum(a + b - 2 * np.sqrt(a * b))  # 5 + (1 + 1 + 0.25) = 7.25
    got = frechet_distance(FeatureStats(mu1, np.diag(a), 0), FeatureStats(mu2, np.diag(b), 0))
    assert got == pytest.approx(expect, abs=1e-9) and expect == pytest.approx(7.25)
    # full covariance S and c*S: Tr(S) (1 + c - 2 sqrt(c))
    m = np.random.default_rng(2).normal(size=(4, 4))
    cov = m @ m.T + np.eye(4)
    got = frechet_distance(FeatureStats(np.zeros(4), cov, 0), FeatureStats(np.zeros(4), 9 * cov, 0))
    assert got == pytest.approx(np.trace(cov) * (1 + 9 - 2 * 3), rel=1e-6)


def test_fid_estimated_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, size=(40000, 2))
    y = rng.normal(1.0, 2.0, size=(40000, 2))
    expect = 2 * 1.0 + 2 * (1 + 4 - 2 * 2)  # mean shift 1 per dim, sd 1 vs 2
    assert frechet_distance(feature_stats(x), feature_stats(y)) == pytest.approx(expect, abs=0.1)


def test_fid_handles_singular_covariances():
    feats = np.random.default_rng(4).normal(size=(50, 3))
    feats = np.concatenate([feats, feats[:, :1], np.zeros((50, 1))], axis=1)  # rank 3 of 5
    s = feature_stats(feats)
    value = frechet_distance(s, s)
    assert np.isfinite(value) and abs(value) < 1e-4
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(s, feature_stats(feats[:, :4]))


def test_fid_equals_the_sqrtm_formula_and_reuses_a_cached_root(tmp_path):
    from scipy import linalg
    rng = np.random.default_rng(6)
    a = feature_stats(rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)))
    b = feature_stats(rng.normal(1.0, 1.0, size=(200, 12)) @ rng.normal(size=(12, 12)))
    expect = (np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma)
              - 2 * np.trace(linalg.sqrtm(a.sigma @ b.sigma)).real)  # pytorch-fid's formula
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)
    b.with_sqrt().save(tmp_path / "ref.npz")
    cached = FeatureStats.load(tmp_path / "ref.npz")[0]
    assert cached.sigma_sqrt is not None and np.allclose(cached.sigma_sqrt @ cached.sigma_sqrt, b.sigma)
    assert frechet_distance(a, cached) == pytest.approx(expect, rel=1e-9)


def test_inception_score_of_uniform_and_of_balanced_one_hot_predictions():
    assert inception_score(np.full((100, 7), 1 / 7)) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(5)[np.tile(np.arange(5), 20)]  # each split of 10 holds every class twice
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score(one_hot[:5], splits=10)


def test_mse_and_psnr_on_the_unit_scale():
    x = np.zeros((2, 1, 4, 4), np.float32)
    assert mse_psnr(x + 0.2, x) == pytest.approx((0.01, 20.0))  # 0.1 on [0, 1] -> 20 dB


def test_feature_stats_round_trip(tmp_path):
    s = feature_stats(np.random.default_rng(5).normal(size=(20, 3)))
    s.save(tmp_path / "s.npz", dataset="mnist", split="train")
    back, meta = FeatureStats.load(tmp_path / "s.npz")
    assert np.allclose(back.mu, s.mu) and np.allclose(back.sigma, s.sigma) and back.n == 20
    assert meta == {"dataset": "mnist", "split": "train"}


def _blobs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 8x8 images: a bright left half or a bright right half, plus noise."""
    y = rng.integers(0, 2, n)
    x = np.full((n, 1, 8, 8), -1.0, np.float32)
    for i, label in enumerate(y):
        x[i, 0, :, 4 * label:4 * label + 4] = 1.0
    return np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32), y


def test_classifier_learns_and_its_fid_ranks_real_above_noise(tmp_path):
    rng = np.random.default_rng(6)
    splits = {"train": _blobs(rng, 256), "test": _blobs(rng, 128)}
    clf = fit_classifier("toy", splits, epochs=3, progress=False)
    assert clf.test_accuracy > 0.95
    real = _blobs(rng, 128)[0]
    noise = rng.uniform(-1, 1, real.shape).astype(np.float32)
    assert clf.fid(real, "test") < 0.2 * clf.fid(noise, "test")
    save_classifier(tmp_path / "c", clf)
    back = load_classifier(tmp_path / "c")
    assert np.allclose(predict(back.net, real)[0], predict(clf.net, real)[0])
    assert back.dataset == "toy" and back.image_shape == (1, 8, 8)
    with pytest.raises(ClassifierError, match="trained on toy"):
        back.fid(np.zeros((4, 3, 8, 8), np.float32), "test")


def test_missing_classifier_says_how_to_train_one(tmp_path):
    with pytest.raises(ClassifierError, match="--train-classifier"):
        load_classifier(tmp_path / "none")


def test_a_classifier_checkpoint_with_the_wrong_content_is_one_clear_line(tmp_path, capsys):
    """tools/evaluate.py --classifier PATH: a file of bytes, a run checkpoint, mismatched
    weights, a missing statistics file -> exit 2."""
    import shutil
    import sys
    from pathlib import Path

    import paddle

    from ebm_vae.training.checkpoints import write_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import evaluate as evaluate_tool

    (tmp_path / "bytes").write_bytes(b"\x00not a checkpoint at all")
    shutil.move(write_checkpoint(tmp_path, 3, {}), tmp_path / "run")
    clf = fit_classifier("mnist", {"train": _blobs(np.random.default_rng(7), 32),
                                   "test": _blobs(np.random.default_rng(8), 16)}, 1, progress=False)
    save_classifier(tmp_path / "good", clf)
    for name in ("shapes", "nostats"):
        shutil.copytree(tmp_path / "good", tmp_path / name)
    weights = paddle.load(str(tmp_path / "shapes" / "net.pdparams"))
    weights["convs.0.weight"] = paddle.zeros([5, 1, 3, 3])
    paddle.save(weights, str(tmp_path / "shapes" / "net.pdparams"))
    (tmp_path / "nostats" / "stats.pdparams").unlink()
    for name, why in [("bytes", "is a file, not a checkpoint folder"), ("run", "has no net, stats"),
                      ("shapes", "do not fit the network"), ("nostats", "stats.pdparams not found")]:
        path = tmp_path / name
        with pytest.raises(ClassifierError, match=why):
            load_classifier(path)
        code = evaluate_tool.main(["--dataset", "mnist", "--real", "test", "--metrics", "cls_fid",
                                   "--classifier", str(path), "--n", "10"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        assert "is not a classifier checkpoint" in err and why in err
    assert load_classifier(tmp_path / "good").dataset == "mnist"


def test_one_evaluation_path_scores_image_sets_with_the_classifier_metrics():
    """eval.evaluate on given image sets: cls_fid and cls_is (the vocabulary the tables use)."""
    from ebm_vae.eval.evaluate import (METRICS, EvaluationError, Request, Sources,
                                       classifier_score, evaluate, prerequisites)

    assert METRICS == ("fid", "is", "cls_fid", "cls_is", "recon")
    rng = np.random.default_rng(9)
    clf = fit_classifier("toy", {"train": _blobs(rng, 128), "test": _blobs(rng, 64)}, 2, progress=False)
    real = _blobs(rng, 40)[0]
    noise = rng.uniform(-1, 1, real.shape).astype(np.float32)
    pre = prerequisites(["cls_fid", "cls_is"], "toy", sources=Sources(classifier=clf),
                        reference="test")
    res = evaluate(None, ["cls_is", "cls_fid"], pre,
                   Request({"real": real, "noise": noise}, "file", seed=1))
    assert list(res) == ["cls_is", "cls_fid"]
    assert res["cls_is"]["real"] == pytest.approx(list(classifier_score(clf, real)))
    assert res["cls_fid"]["real"] == pytest.approx(clf.fid(real, "test"))
    assert res["cls_fid"]["real"] < res["cls_fid"]["noise"]
    proto = res["cls_fid"]["protocol"]
    assert proto == {"source": "file", "dataset": "toy", "num_samples": 40, "langevin_steps": None,
                     "reference": "test", "seed": 1, "iteration": None, "run": None}
    assert "NOT comparable" in res["cls_is"]["note"] and res["cls_is"] is not res["cls_fid"]
    with pytest.raises(EvaluationError, match="unknown metrics"):
        prerequisites(["cls_fid", "fdi"], "toy", sources=Sources(classifier=clf))
    with pytest.raises(EvaluationError, match="loaded for"):
        evaluate(None, ["recon"], pre, Request({"real": real}))
    with pytest.raises(ClassifierError, match="trained on toy, not mnist"):
        prerequisites(["cls_is"], "mnist", sources=Sources(classifier=clf))


def test_evaluate_tool_scores_a_sample_file_with_cls_fid_and_cls_is(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import evaluate as evaluate_tool

    rng = np.random.default_rng(10)
    clf = fit_classifier("mnist", {"train": _blobs(rng, 64), "test": _blobs(rng, 32)}, 1, progress=False)
    save_classifier(tmp_path / "c", clf)
    images = _blobs(rng, 30)[0]
    np.savez(tmp_path / "s.npz", images=images, proposals=images[::-1])
    assert evaluate_tool.main(["--dataset", "mnist", "--images", str(tmp_path / "s.npz"), "--metrics",
                               "cls_fid,cls_is", "--classifier", str(tmp_path / "c"),
                               "--reference", "test", "--n", "20", "--out", str(tmp_path / "e.json"),
                               "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cls_fid") and "\ncls_is" in out
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["cls_is"]["protocol"]["num_samples"] == 20 and res["cls_is"]["protocol"]["source"] == "file"
    from ebm_vae.eval.evaluate import classifier_score

    assert res["cls_is"]["images"] == pytest.approx(list(classifier_score(clf, images[:20])))
    assert res["cls_fid"]["proposals"] == pytest.approx(clf.fid(images[::-1][:20], "test"))
    np.savez(tmp_path / "bad.npz", x=images)
    assert evaluate_tool.main(["--dataset", "mnist", "--images", str(tmp_path / "bad.npz"),
                               "--classifier", str(tmp_path / "c"), "--n", "20"]) == 2
    assert "has no array `images`" in capsys.readouterr().err
