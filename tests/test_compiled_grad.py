"""The EBM's input gradient written out and compiled with oneDNN (core/compiled_grad.py,
`langevin.gradient`): equal to autograd (bit for bit eagerly, to rounding through the predictor),
following weight changes, and falling back to autograd with one line where it cannot serve."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import paddle
import pytest

from ebm_vae.core import compiled_grad
from ebm_vae.core.compiled_grad import EnergyGradient, compiled_gradient, ebm_weights, same_padding
from ebm_vae.core.config import ConvLayer, EBMConfig, LangevinConfig, config_from_dict
from ebm_vae.core.langevin import energy_grad, frozen, langevin
from ebm_vae.core.models import EBM, build_models
from ebm_vae.core.teach import make_optimizers, teach_step
from ebm_vae.utils import onednn
from ebm_vae.utils.typed_yaml import ConfigError

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="Paddle without oneDNN")
LV = LangevinConfig(steps=10, step_size=0.05, ref_sigma=1.0, noise=True)


def tiny_ebm(seed: int = 0, size: int = 9) -> EBM:
    """Strides 2 with odd sizes ('SAME' pads one more pixel after), a stride-1 layer, 3 heads."""
    paddle.seed(seed)
    cfg = EBMConfig([ConvLayer(6, 5, 2), ConvLayer(8, 3, 1), ConvLayer(8, 4, 2)], out_dim=3)
    return EBM(cfg, 2, size, 0.1, 0.2)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_same_padding_is_tf_same():
    assert same_padding(28, 5, 2) == (1, 2, 14)  # the odd pixel after, as TF
    assert same_padding(32, 4, 2) == (1, 1, 16)
    assert same_padding(7, 3, 2) == (1, 1, 4)
    assert same_padding(8, 1, 2) == (0, 0, 4)


def test_written_out_gradient_equals_autograd_bit_for_bit():
    ebm = tiny_ebm()
    x = paddle.uniform([5, 2, 9, 9], min=-1.0, max=1.0)
    theta = paddle.concat([t.flatten() for t in ebm_weights(ebm)])
    with paddle.no_grad():
        f, grad = EnergyGradient(ebm)(x, theta)
    with frozen(ebm):
        exact = energy_grad(ebm, x)
    np.testing.assert_array_equal(f.numpy(), ebm(x).numpy())
    np.testing.assert_array_equal(grad.numpy(), exact.numpy())


@needs_onednn
def test_compiled_gradient_matches_autograd_and_follows_new_weights():
    ebm = tiny_ebm()
    x = paddle.uniform([7, 2, 9, 9], min=-1.0, max=1.0)
    auto = lambda v: energy_grad(ebm, v)  # noqa: E731
    with frozen(ebm):
        first = compiled_gradient(ebm, "onednn", auto)(x).numpy()
        assert rel_l2(first, auto(x).numpy()) < 1e-5
        for p in ebm.parameters():  # an optimiser step: oneDNN must not keep the old filters
            p.set_value(p * 1.5 + 0.01)
        again = compiled_gradient(ebm, "onednn", auto)(x).numpy()
        assert rel_l2(again, auto(x).numpy()) < 1e-5 and rel_l2(again, first) > 0.1


@needs_onednn
def test_another_predictor_in_between_leaves_no_stale_filters(capfd):
    """Training's in-training FID runs the Inception predictor between Langevin runs: oneDNN's
    cache setting acts process-wide, so that predictor must not make the EBM's keep old filters."""
    ebm = tiny_ebm()
    x = paddle.uniform([7, 2, 9, 9], min=-1.0, max=1.0)
    auto = lambda v: energy_grad(ebm, v)  # noqa: E731
    other = paddle.nn.Sequential(paddle.nn.Conv2D(2, 4, 3), paddle.nn.ReLU(), paddle.nn.Conv2D(4, 4, 3))
    spec = [paddle.static.InputSpec([None, 2, 9, 9], "float32")]
    predictor = onednn.build_predictor(other, spec, 1)
    with frozen(ebm):
        for step in range(3):
            grad = compiled_gradient(ebm, "onednn", auto)
            assert grad is not None, capfd.readouterr().err
            assert rel_l2(grad(x).numpy(), auto(x).numpy()) < 1e-5
            for n in (7, 3, 7):
                onednn.run(predictor, [np.random.rand(n, 2, 9, 9).astype(np.float32)])
            for p in ebm.parameters():
                p.set_value(p * 1.2 + 0.01)
    assert "unavailable" not in capfd.readouterr().err


@needs_onednn
def test_langevin_chains_agree_and_chunks_do_not_matter():
    ebm = tiny_ebm(1)
    x = paddle.uniform([6, 2, 9, 9], min=-1.0, max=1.0)
    out = {}
    for gradient, chunk in [("autograd", None), ("onednn", None), ("onednn", 4)]:
        paddle.seed(5)
        out[gradient, chunk] = langevin(ebm, x, replace(LV, gradient=gradient, chunk_size=chunk)).numpy()
    moved = out["autograd", None] - x.numpy()
    assert np.abs(moved).max() > 0.1  # the chains moved
    for key in [("onednn", None), ("onednn", 4)]:
        assert np.abs(out[key] - out["autograd", None]).max() <= 1e-5 * np.abs(moved).max()


@needs_onednn
def test_one_training_iteration_agrees(tiny_raw):
    tiny_raw["model"]["ebm"]["conv"].append({"channels": 4, "kernel": 3, "stride": 1})
    params = {}
    for gradient in ("autograd", "onednn"):
        tiny_raw["langevin"]["gradient"] = gradient
        cfg = config_from_dict(tiny_raw)
        paddle.seed(0)
        models = build_models(cfg.model)
        x = paddle.uniform([6, 1, 8, 8], min=-1.0, max=1.0)
        teach_step(models, make_optimizers(models, cfg.train), x, cfg, 5)
        params[gradient] = {k: v.numpy() for k, v in models.ebm.state_dict().items()}
    for k, v in params["autograd"].items():
        np.testing.assert_allclose(params["onednn"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)


def _chain(ebm, gradient: str, cond=()) -> np.ndarray:
    paddle.seed(2)
    x = paddle.uniform([3, 2, 9, 9], min=-1.0, max=1.0)
    return langevin(ebm, x, replace(LV, gradient=gradient), cond=cond).numpy()


def test_other_networks_fall_back_to_autograd_with_one_line(capfd):
    class Tilted(paddle.nn.Layer):  # an energy the compiled path does not cover
        def __init__(self):
            super().__init__()
            self.ebm = tiny_ebm()

        def forward(self, x):
            return self.ebm(x) - (x ** 2).flatten(1).sum(axis=1)
    net = Tilted()
    exact = _chain(net, "autograd")
    np.testing.assert_array_equal(_chain(net, "auto"), exact)  # auto: autograd, silently
    assert capfd.readouterr().err == ""
    np.testing.assert_array_equal(_chain(net, "onednn"), exact)
    np.testing.assert_array_equal(_chain(net, "onednn"), exact)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unavailable" in err[0] and "Tilted" in err[0]  # once per network


def test_paddle_without_onednn_falls_back_with_one_line(monkeypatch, capfd):
    monkeypatch.setattr(onednn, "available", lambda: False)
    ebm = tiny_ebm()
    exact = _chain(ebm, "autograd")
    np.testing.assert_array_equal(_chain(ebm, "auto"), exact)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built without oneDNN" in err[0] and "using autograd" in err[0]


@needs_onednn
def test_a_disagreeing_compiled_gradient_is_dropped_for_autograd(monkeypatch, capfd):
    monkeypatch.setattr(compiled_grad.CompiledGradient, "CHECK_TOLERANCE", -1.0)  # every gap fails
    ebm = tiny_ebm(4)
    exact = _chain(ebm, "autograd")
    np.testing.assert_array_equal(_chain(ebm, "onednn"), exact)
    np.testing.assert_array_equal(_chain(ebm, "onednn"), exact)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from autograd" in err[0]


def test_conditional_ebm_chains_use_autograd(capfd):
    from ebm_vae.completion.config import completion_config_from_dict
    from ebm_vae.completion.networks import build_conditional_models, condition
    conv = [{"channels": 4, "kernel": 3, "stride": 2}]
    cfg = completion_config_from_dict({
        "data": {"name": "cmp_facade"}, "mask": {"kind": "center", "size": 4},
        "model": {"image_size": 8, "channels": 3, "latent_dim": 2,
                  "ebm": {"conv": conv, "head": "patch"}, "encoder": {"conv": conv},
                  "decoder": {"down": [4], "bottleneck": 4}},
        "langevin": {"steps": 3, "step_size": 0.05},
        "train": {"epochs": 1, "batch_size": 2, "num_chains": 1, "gamma": 2.0, "lr_ebm": 0.001,
                  "lr_vae": 0.001}})
    paddle.seed(0)
    ebm = build_conditional_models(cfg.model).ebm
    masks = paddle.zeros([3, 1, 8, 8])
    masks[:, :, 2:6, 2:6] = 1.0
    c = condition(paddle.uniform([3, 3, 8, 8], min=-1.0, max=1.0), masks)
    out = {}
    for gradient in ("autograd", "auto"):
        paddle.seed(1)
        y = paddle.uniform([3, 3, 8, 8], min=-1.0, max=1.0)
        out[gradient] = langevin(ebm, y, replace(cfg.langevin, gradient=gradient),
                                 cond=ebm.chain_inputs(c)).numpy()
    np.testing.assert_array_equal(out["auto"], out["autograd"])
    assert capfd.readouterr().err == ""


def test_bad_gradient_setting_is_a_one_line_config_error(tiny_raw):
    tiny_raw["langevin"]["gradient"] = "fast"
    with pytest.raises(ConfigError, match=r"langevin.gradient.*one of \['auto', 'onednn', 'autograd'\]"):
        config_from_dict(tiny_raw)
