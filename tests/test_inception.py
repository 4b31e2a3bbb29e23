"""The FID Inception network: shapes (random weights, 1 image), preprocessing, pooling quirks,
weight conversion and the no-weights error."""
from __future__ import annotations

import sys

import numpy as np
import paddle
import pytest

from ebm_vae.eval import inception
from ebm_vae.eval.inception import (InceptionWeightsError, convert_file, convert_state_dict,
                                    expected_shapes, load_inception, preprocess)


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
    assert convert_file(tmp_path / "pt.npz", tmp_path / "w.pdparams") == sum(v.size for v in sd.values())
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
    with pytest.raises(InceptionWeightsError, match="pt_inception-2015-12-05.*convert_inception"):
        load_inception(None)
    with pytest.raises(InceptionWeightsError, match="not found"):
        load_inception(str(tmp_path / "missing.pdparams"))


def test_pth_without_torch_explains_the_npz_route(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    (tmp_path / "w.pth").write_bytes(b"not read")
    with pytest.raises(InceptionWeightsError, match="np.savez"):
        convert_file(tmp_path / "w.pth", tmp_path / "w.pdparams")


def test_pth_is_read_when_torch_is_installed(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"fc.weight": torch.ones(3, 2), "fc.bias": torch.zeros(3)}, tmp_path / "w.pth")
    state = inception.read_torch_state(tmp_path / "w.pth")
    assert state["fc.weight"].shape == (3, 2) and isinstance(state["fc.bias"], np.ndarray)
