"""Optional VisualDL output (train.visualdl / --visualdl): scalars and grids in RUN/vdl/, a
one-line refusal without the package, and a failing writer that does not stop training."""
from __future__ import annotations

import argparse
import csv
import math
import sys
import types

import pytest

from ebm_vae.core.config import config_from_dict
from ebm_vae.training.generation import train_generation
from ebm_vae.utils.cli import add_train_args, resolve, run_tool
from ebm_vae.utils.typed_yaml import ConfigError


def _train(raw, images, out, iters=3):
    raw["train"]["visualdl"] = True
    return train_generation(config_from_dict(raw), out, iters, False, images=images,
                            progress=False)


class _FakeWriter:
    """Stands in for visualdl.LogWriter and records what it is given."""
    calls: list = []

    def __init__(self, logdir):
        type(self).calls.append(("open", logdir))

    def add_scalar(self, tag, value, step):
        type(self).calls.append(("scalar", tag, value, step))

    def add_image(self, tag, img, step):
        type(self).calls.append(("image", tag, img.shape, step))

    def close(self):
        type(self).calls.append(("close",))


@pytest.fixture
def fake_visualdl(monkeypatch):
    _FakeWriter.calls = []
    monkeypatch.setitem(sys.modules, "visualdl", types.SimpleNamespace(LogWriter=_FakeWriter))
    return _FakeWriter.calls


@pytest.fixture
def no_visualdl(monkeypatch):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # import visualdl -> ImportError


def test_writer_gets_every_finite_log_value_and_every_grid(fake_visualdl, tiny_raw, tiny_images,
                                                           tmp_path):
    _train(tiny_raw, tiny_images, tmp_path)
    assert fake_visualdl[0] == ("open", str(tmp_path / "vdl")) and fake_visualdl[-1] == ("close",)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    expected = {(k, int(r["iteration"])): float(v) for r in rows for k, v in r.items()
                if k != "iteration" and v != "" and math.isfinite(float(v))}
    got = {(c[1], c[3]): c[2] for c in fake_visualdl if c[0] == "scalar"}
    assert got.keys() == expected.keys() and ("loss_ebm", 3) in got
    assert all(got[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-12) for k in got)
    images = [c for c in fake_visualdl if c[0] == "image"]
    assert [c[3] for c in images] == [2, 3] and images[0][1] == "samples"
    assert images[0][2][2] == 3 and images[0][2][1] > 2 * 8 * 8  # RGB, two panels wide


def test_a_failing_writer_warns_once_and_training_goes_on(monkeypatch, fake_visualdl, tiny_raw,
                                                          tiny_images, tmp_path, capsys):
    def broken(self, tag, value, step):
        raise RuntimeError("disk full")
    monkeypatch.setattr(_FakeWriter, "add_scalar", broken)
    assert _train(tiny_raw, tiny_images, tmp_path) is not None
    assert capsys.readouterr().err.count("VisualDL output") == 1
    assert len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 3
    assert not [c for c in fake_visualdl if c[0] == "image"]  # stopped after the failure


def test_without_the_package_the_flag_is_refused_in_one_line(no_visualdl, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    args = parser.parse_args(["-c", "experiments/mnist_cpu.yaml", "--visualdl",
                              "--out", str(tmp_path / "run")])
    assert run_tool(lambda: resolve(args, config_from_dict) and None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install visualdl" in err[0] and err[0].startswith("error:")
    assert not (tmp_path / "run").exists()


def test_without_the_package_the_config_key_is_refused_before_training(no_visualdl, tiny_raw,
                                                                       tiny_images, tmp_path):
    with pytest.raises(ConfigError, match="pip install visualdl"):
        _train(tiny_raw, tiny_images, tmp_path)
    assert not (tmp_path / "log.csv").exists()


def test_without_the_flag_nothing_is_imported_or_written(no_visualdl, tiny_raw, tiny_images,
                                                         tmp_path):
    train_generation(config_from_dict(tiny_raw), tmp_path, 2, False, images=tiny_images,
                     progress=False)
    assert (tmp_path / "log.csv").is_file() and not (tmp_path / "vdl").exists()


def test_real_visualdl_writes_readable_records(tiny_raw, tiny_images, tmp_path):
    visualdl = pytest.importorskip("visualdl")  # installed by pip install -e .[vdl]
    _train(tiny_raw, tiny_images, tmp_path)
    files = sorted((tmp_path / "vdl").glob("vdlrecords.*"))
    assert len(files) == 1
    reader = visualdl.LogReader(file_path=str(files[0]))
    steps = [r.id for r in reader.get_data("scalar", "loss_ebm")]
    assert steps == [1, 2, 3]
    assert [r.id for r in reader.get_data("image", "samples")] == [2, 3]
