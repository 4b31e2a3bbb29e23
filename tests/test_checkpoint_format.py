"""One checkpoint format (folders of Paddle tensor files and a state.json) for runs, kept
snapshots and the offline classifier; the old single-file pickles are read only by
tools/convert_run.py, and every other tool refuses them in one line naming the converter."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from ebm_vae.training.checkpoints import (LEGACY_CHECKPOINT, LegacyFormatError, checkpoint_dirs,
                                      latest_checkpoint, load_checkpoint_into, read_checkpoint,
                                      write_checkpoint, write_kept)
from ebm_vae.core.config import config_from_dict, dump_config
from ebm_vae.core.models import build_models
from ebm_vae.eval.classifier import (TrainedClassifier, fit_classifier, load_classifier, predict,
                                     save_classifier)
from ebm_vae.eval.evaluate import ensure_classifier
from tests.conftest import old_modules, write_old_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import convert_run as convert_tool  # noqa: E402
import evaluate as evaluate_tool  # noqa: E402
import sample as sample_tool  # noqa: E402


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 8x8 images: a bright left or right half, plus noise."""
    y = rng.integers(0, 2, n)
    x = np.full((n, 1, 8, 8), -1.0, np.float32)
    for i, label in enumerate(y):
        x[i, 0, :, 4 * label:4 * label + 4] = 1.0
    return np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def clf() -> TrainedClassifier:
    rng = np.random.default_rng(5)
    return fit_classifier("mnist", {"train": _blobs(rng, 48), "test": _blobs(rng, 24)}, 1,
                          progress=False)


def _old_classifier(clf: TrainedClassifier) -> dict:
    """The payload of an old single-file classifier (classifier.ckpt)."""
    return {"dataset": clf.dataset, "image_shape": list(clf.image_shape),
            "test_accuracy": clf.test_accuracy, "state": clf.net.state_dict(),
            "stats": {s: {"mu": st.mu, "sigma": st.sigma, "n": st.n} for s, st in clf.stats.items()}}


def _assert_same_classifier(a: TrainedClassifier, b: TrainedClassifier) -> None:
    assert (a.dataset, a.image_shape, a.test_accuracy) == (b.dataset, b.image_shape, b.test_accuracy)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k].numpy(), sb[k].numpy(), err_msg=k)
    assert a.stats.keys() == b.stats.keys()
    for s in a.stats:
        assert a.stats[s].mu.dtype == b.stats[s].mu.dtype == np.float64
        np.testing.assert_array_equal(a.stats[s].mu, b.stats[s].mu)
        np.testing.assert_array_equal(a.stats[s].sigma, b.stats[s].sigma)
        assert a.stats[s].n == b.stats[s].n


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def _tiny_run(raw: dict, run_dir: Path, seed: int = 4):
    """A run folder with a config; returns its (seeded) networks."""
    cfg = config_from_dict(raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    paddle.seed(seed)
    return build_models(cfg.model)._asdict()


# ---------------------------------------------------------------------------------------------
# the classifier folder

def test_classifier_round_trip_in_the_folder_format(clf, tmp_path):
    path = save_classifier(tmp_path / "classifier", clf)
    assert path == tmp_path / "classifier"
    assert sorted(p.name for p in path.iterdir()) == ["net.pdparams", "state.json", "stats.pdparams"]
    meta = json.loads((path / "state.json").read_text())
    assert meta["format"] == 1 and meta["kind"] == "classifier" and meta["dataset"] == "mnist"
    assert meta["files"] == {"net": "net.pdparams", "stats": "stats.pdparams"}
    back = load_classifier(path)
    _assert_same_classifier(back, clf)
    x = _blobs(np.random.default_rng(1), 8)[0]
    np.testing.assert_array_equal(predict(back.net, x)[0], predict(clf.net, x)[0])
    # saving again replaces it whole, leaving nothing else behind
    save_classifier(path, clf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier"]
    _assert_same_classifier(load_classifier(path), clf)
    assert ensure_classifier(path, "mnist", None, 1, progress=False).dataset == "mnist"


# ---------------------------------------------------------------------------------------------
# old pickles: refused in one line everywhere but the converter

def test_an_old_classifier_file_is_refused_with_the_converter_hint(clf, tmp_path, capsys):
    old = write_old_checkpoint(tmp_path / "classifier.ckpt", _old_classifier(clf))
    for given in (old, tmp_path / "classifier"):  # the file, or the folder that replaces it
        with pytest.raises(LegacyFormatError, match=f"python tools/convert_run.py {old}"):
            load_classifier(given)
        with pytest.raises(LegacyFormatError):  # not trained anew over it
            ensure_classifier(given, "mnist", None, 1, progress=False)
        assert evaluate_tool.main(["--dataset", "mnist", "--real", "test", "--metrics", "cls_fid",
                                   "--classifier", str(given), "--n", "10"]) == 2
        assert f"convert it with `python tools/convert_run.py {old}`" in _error_line(capsys)
    assert not (tmp_path / "classifier").exists()


def test_an_old_run_and_an_old_snapshot_are_refused_with_the_converter_hint(tiny_raw, tmp_path,
                                                                           capsys):
    run = tmp_path / "run"
    nets = _tiny_run(tiny_raw, run)
    legacy = write_old_checkpoint(run / LEGACY_CHECKPOINT, {"iteration": 5,
                                                            "modules": old_modules(nets)})
    with pytest.raises(LegacyFormatError, match=f"convert_run.py {legacy}`"):
        latest_checkpoint(run)
    hint = f"python tools/convert_run.py {legacy}"
    assert sample_tool.main(["--ckpt", str(run), "--n", "2", "--no-progress"]) == 2
    assert hint in _error_line(capsys)
    assert evaluate_tool.main(["--ckpt", str(run), "--metrics", "recon", "--no-progress"]) == 2
    assert hint in _error_line(capsys)
    snap = write_old_checkpoint(run / "snapshots" / "iter_0000005.ckpt",
                                {"iteration": 5, "modules": old_modules(nets)})
    for given in (snap, run / "snapshots" / "iter_0000005"):
        with pytest.raises(LegacyFormatError, match=f"convert_run.py {snap}`"):
            load_checkpoint_into(given, nets)
    with pytest.raises(LegacyFormatError):
        read_checkpoint(snap)


# ---------------------------------------------------------------------------------------------
# the converter: each old kind to a folder beside it, the same tensors

def test_convert_run_converts_an_old_classifier(clf, tmp_path, capsys):
    old = write_old_checkpoint(tmp_path / "mnist.ckpt", _old_classifier(clf))
    assert convert_tool.main([str(old)]) == 0
    assert f"wrote {tmp_path / 'mnist'} from {old}" in capsys.readouterr().err
    _assert_same_classifier(load_classifier(tmp_path / "mnist"), clf)
    assert old.is_file()  # left in place; the folder beside it is what loads
    assert convert_tool.main([str(old)]) == 2
    assert "exists already: nothing to convert" in _error_line(capsys)


def test_convert_run_converts_an_old_snapshot_and_an_old_run(tiny_raw, tmp_path, capsys):
    run = tmp_path / "run"
    nets = _tiny_run(tiny_raw, run)
    opt = paddle.optimizer.Adam(0.01, parameters=nets["ebm"].parameters())
    nets["ebm"](paddle.randn([2, 1, 8, 8])).sum().backward()
    opt.step()
    objects = {**nets, "opt_ebm": opt}
    modules = old_modules(objects)
    snap = write_old_checkpoint(run / "snapshots" / "iter_0000003.ckpt",
                                {"iteration": 3, "modules": modules})
    assert convert_tool.main([str(snap)]) == 0
    folder = run / "snapshots" / "iter_0000003"
    assert f"wrote {folder} from {snap}" in capsys.readouterr().err
    legacy = write_old_checkpoint(run / LEGACY_CHECKPOINT, {"iteration": 4, "modules": modules})
    assert convert_tool.main([str(run)]) == 0
    assert f"from {legacy}" in capsys.readouterr().err
    for found, it in ((folder, 3), (latest_checkpoint(run), 4)):
        state = read_checkpoint(found)
        assert state["iteration"] == it and sorted(state["modules"]) == sorted(modules)
        for name, tensors in modules.items():
            for k, v in tensors.items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(state["modules"][name][k].numpy(), v)
        assert load_checkpoint_into(found, objects) == it
    assert convert_tool.main([str(snap)]) == 2
    assert "nothing to convert" in _error_line(capsys)
    other = write_old_checkpoint(tmp_path / "other.ckpt", {"something": 1})
    assert convert_tool.main([str(other)]) == 2
    assert "not an old-format checkpoint of this project" in _error_line(capsys)
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x04junk")
    assert convert_tool.main([str(tmp_path / "junk.ckpt")]) == 2
    assert "is corrupt or not an old-format checkpoint" in _error_line(capsys)


# ---------------------------------------------------------------------------------------------
# kept checkpoints (a training-time evaluation's states)

def test_write_kept_folders_are_never_pruned_and_load(tiny_raw, tmp_path):
    run = tmp_path / "run"
    nets = _tiny_run(tiny_raw, run)
    kept = write_kept(run / "snapshots", 2, nets)
    assert kept == run / "snapshots" / "iter_0000002"
    for it in (2, 3, 4):
        write_checkpoint(run, it, nets)
    assert [i for i, _ in checkpoint_dirs(run)] == [4] and (kept / "state.json").is_file()
    before = (kept / "ebm.pdparams").read_bytes()
    other = _tiny_run(tiny_raw, tmp_path / "other", seed=9)
    assert write_kept(run / "snapshots", 2, other) == kept  # an existing one is kept as it is
    assert (kept / "ebm.pdparams").read_bytes() == before
    assert load_checkpoint_into(kept, other) == 2
    got, want = other["decoder"].state_dict(), nets["decoder"].state_dict()
    assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want)
