"""The CPU speed settings (ebm_vae.utils.runtime.configure_cpu) and the benchmark's FLOP count.

Settings are process-wide, so each runtime case runs in its own Python process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Revise 6 tiny chains under a tiny EBM (2 convs, stride 2 'SAME' included), seeded, optionally
# after configure_cpu; print the result and the settings seen by the process.
LANGEVIN_SCRIPT = r"""
import json, os, sys
import paddle
import ebm_vae, ebm_vae.core.config, ebm_vae.core.langevin, ebm_vae.core.models, ebm_vae.utils.runtime, ebm_vae.core.teach
from ebm_vae.core.config import ConvLayer, EBMConfig, LangevinConfig
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import EBM
before = {"mkl": os.environ.get("MKL_DEBUG_CPU_TYPE")}
settings = json.loads(sys.argv[1]) if sys.argv[1] != "none" else {}
gradient = settings.pop("gradient", "autograd")
applied = ebm_vae.utils.runtime.configure_cpu(**settings) if settings else {}
paddle.seed(3)
ebm = EBM(EBMConfig([ConvLayer(8, 5, 2), ConvLayer(16, 3, 1)], out_dim=3), 2, 9, 0.05, 0.2)
x = paddle.uniform([6, 2, 9, 9], min=-1.0, max=1.0)
y = langevin(ebm, x, LangevinConfig(steps=4, step_size=0.05, ref_sigma=1.0, noise=True, gradient=gradient))
print("OUT " + json.dumps({"before": before, "applied": applied, "y": y.numpy().tolist()}))
"""


def _run(arg: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", LANGEVIN_SCRIPT, arg], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("OUT ")][-1]
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def default_run() -> dict:
    return _run("none")


def test_import_is_side_effect_free(default_run):
    # importing every core module did not set the MKL switch
    assert default_run["before"] == {"mkl": None}


@pytest.mark.parametrize("settings", [{"threads": 2}, {"threads": 1, "gradient": "onednn"}])
def test_tuned_langevin_matches_default(default_run, settings):
    tuned = _run(json.dumps(settings))
    assert tuned["applied"]["threads"] == settings["threads"]
    y0, y1 = np.array(default_run["y"]), np.array(tuned["y"])
    assert y0.shape == (6, 2, 9, 9)
    assert np.abs(y0).max() > 0.1  # a real result, not all zeros
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-6)


def test_configure_cpu_rejects_bad_threads():
    from ebm_vae.utils.runtime import configure_cpu
    with pytest.raises(ValueError, match="threads"):
        configure_cpu(threads=0)


def _bench(name: str = "bench_train"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_flop_count_known_answer():
    from ebm_vae.core.config import load_config
    bench = _bench()
    m = load_config(ROOT / "experiments" / "mnist.yaml", []).model
    # 14*14*64*1*25 + 7*7*128*64*9 + 7*7*256*128*9 + head 7*7*256*100
    assert bench.ebm_macs(m) == 313_600 + 3_612_672 + 14_450_688 + 1_254_400
    # 1x1x200 -> 4x4x256 (k4), 4x4x256 -> 128 (k3), 7x7x128 -> 64 (k3), 14x14x64 -> 1 (k3)
    assert bench.decoder_macs(m) == 200 * 256 * 16 + 16 * 256 * 128 * 9 + 49 * 128 * 64 * 9 + 196 * 64 * 9
    fl = bench.flops(m, chains=10, batch=4, steps=2)
    assert fl["langevin_step"] == 4 * bench.ebm_macs(m) * 10


def test_profile_rows_cover_every_layer_and_phase():
    import paddle
    from ebm_vae.core.config import load_config
    from ebm_vae.core.models import build_models
    prof = _bench("profile_step")
    cfg = load_config(ROOT / "experiments" / "mnist.yaml", [
        "train.num_chains=2", "train.batch_size=2", "langevin.steps=1", "model.image_size=8",
        "model.ebm.conv=[{channels: 4, kernel: 3, stride: 2}]",
        "model.encoder.conv=[{channels: 4, kernel: 3, stride: 2}]",
        "model.decoder.layers=[{channels: 1, kernel: 8, stride: 1}]", "model.latent_dim=3"])
    models = build_models(cfg.model)
    rows = prof.layer_rows(models.ebm, paddle.uniform([2, 1, 8, 8], min=-1.0, max=1.0), 0.2, 1)
    assert [name.split()[0] for name, _ in rows] == ["conv1", "head"]
    assert all(len(times) == 7 and min(times) >= 0 for _, times in rows)
    phases = prof.phase_rows(cfg, models, 1)
    assert len(phases) == 5 and all(ms >= 0 for _, ms in phases)
