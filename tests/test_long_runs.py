"""Long runs: stabilisers as config keys, kept checkpoints, the best checkpoint, the collapse guard."""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from ebm_vae.core.config import config_from_dict
from ebm_vae.training.guards import BestKeeper, CollapseError, CollapseGuard
from ebm_vae.training.checkpoints import best_score, checkpoint_dirs, read_checkpoint
from ebm_vae.training.runs import export_weights, load_run
from ebm_vae.core.teach import ebm_loss, make_optimizers, teach_step
from ebm_vae.core.models import build_models
from ebm_vae.training.generation import train_generation
from ebm_vae.training.record import Evaluation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.utils.typed_yaml import ConfigError
from tests.conftest import assert_same_states

ROOT = Path(__file__).resolve().parents[1]


def _run(raw, images, out, max_iters, resume=False, evaluation=None):
    return train_generation(config_from_dict(raw), out, max_iters, resume, images=images,
                            progress=False, evaluation=evaluation)


# ---- config -----------------------------------------------------------------------------------

def test_stabilisers_off_and_on_validate(tiny_raw):
    off = config_from_dict(tiny_raw).train
    assert (off.data_noise, off.energy_penalty, off.keep_every) == (0, 0, 0)
    assert (off.collapse_factor, off.collapse_window, off.collapse_patience) == (20, 500, 10)
    tiny_raw["train"].update(data_noise=0.01, energy_penalty=1e-6, keep_every=100,
                             collapse_factor=100.0, collapse_window=50, collapse_patience=3)
    on = config_from_dict(tiny_raw).train
    assert (on.data_noise, on.energy_penalty, on.keep_every) == (0.01, 1e-6, 100)


@pytest.mark.parametrize("key,value", [("keep_every", -1), ("data_noise", -0.1),
                                       ("energy_penalty", -1.0), ("collapse_factor", -2.0),
                                       ("collapse_window", 0), ("collapse_patience", 0)])
def test_bad_stabiliser_values_name_the_key(tiny_raw, key, value):
    tiny_raw["train"][key] = value
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        config_from_dict(tiny_raw)


def test_train_tool_rejects_negative_keep_every_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "-c",
                          str(ROOT / "experiments" / "mnist_cpu.yaml"), "--out", str(tmp_path / "r"),
                          "--set", "train.keep_every=-5"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "train.keep_every" in out.stderr and "Traceback" not in out.stderr


# ---- the stabilisers' math ---------------------------------------------------------------------

def test_energy_penalty_adds_mean_squared_energies():
    w = paddle.to_tensor([[2.0], [-1.0]])
    f = lambda x: paddle.matmul(x, w).squeeze(1)  # f(x) = 2 x0 - x1
    x_data = paddle.to_tensor([[1.0, 0.0], [0.0, 1.0]])  # f = 2, -1
    x_rev = paddle.to_tensor([[1.0, 1.0], [2.0, 0.0]])  # f = 1, 4
    plain, _, _ = ebm_loss(f, x_data, x_rev)
    assert float(plain) == pytest.approx(2.5 - 0.5)
    loss, f_data, f_rev = ebm_loss(f, x_data, x_rev, energy_penalty=0.1)
    assert float(loss) == pytest.approx(2.0 + 0.1 * ((4 + 1) / 2 + (1 + 16) / 2))
    assert (float(f_data), float(f_rev)) == (0.5, 2.5)  # the logged means are unchanged


def _step(raw, data_noise):
    cfg = config_from_dict(raw)
    paddle.seed(0)
    models = build_models(cfg.model)
    train = dataclasses.replace(cfg.train, lr_ebm=1e-3, lr_vae=1e-3, beta1=0.5, beta2=0.999,
                                gamma=2.0, data_noise=data_noise, energy_penalty=0.0)
    cfg = dataclasses.replace(cfg, train=train)
    x = paddle.zeros([6, 1, 8, 8])
    paddle.seed(1)
    stats = teach_step(models, make_optimizers(models, train), x, cfg, 5).stats
    return stats


def test_data_noise_changes_what_the_ebm_sees_and_zero_is_the_paper(tiny_raw):
    assert _step(tiny_raw, 0.0) == _step(tiny_raw, 0.0)
    assert _step(tiny_raw, 0.0).f_data != _step(tiny_raw, 0.5).f_data


def test_diagnostics_are_logged(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path, 2)
    row = list(csv.DictReader(open(tmp_path / "log.csv")))[-1]
    for key in ("chain_move", "revised_abs_max", "langevin_grad_rms", "ebm_weight_norm"):
        assert float(row[key]) > 0, key


# ---- kept checkpoints ----------------------------------------------------------------------------

def _kept(run: Path) -> list[int]:
    return [it for it, _ in checkpoint_dirs(run)]


def test_keep_every_keeps_multiples_and_survives_resume(tiny_raw, tiny_images, tmp_path):
    tiny_raw["train"].update(checkpoint_every=1, keep_every=3, epochs=4)
    _run(tiny_raw, tiny_images, tmp_path, 7)
    assert _kept(tmp_path) == [3, 6, 7]
    _run(tiny_raw, tiny_images, tmp_path, 10, resume=True)
    assert _kept(tmp_path) == [3, 6, 9, 10]


def test_without_keep_every_only_the_newest_stays(tiny_raw, tiny_images, tmp_path):
    tiny_raw["train"].update(checkpoint_every=1)
    _run(tiny_raw, tiny_images, tmp_path, 4)
    assert _kept(tmp_path) == [4]


# ---- the best checkpoint -------------------------------------------------------------------------

def _scripted(scores: dict[int, float], higher: bool = False):
    """An evaluation hook whose score at the n-th evaluation is scores[n]."""
    calls = []

    def hook(models, cfg, run_dir, progress, averaged=None):
        def run():
            calls.append(len(calls) + 1)
            return {"score": scores[len(calls)]}
        return Evaluation(1, ["score"], run, "score", best="score", higher_is_better=higher)
    return hook


def test_best_is_replaced_only_by_a_better_score_and_loads(tiny_raw, tiny_images, tmp_path):
    tiny_raw["eval"] = {"every": 1}
    tiny_raw["train"].update(checkpoint_every=1, keep_every=1)
    _run(tiny_raw, tiny_images, tmp_path, 5,
         evaluation=_scripted({1: 5.0, 2: 3.0, 3: 4.0, 4: 3.0, 5: 9.0}))
    assert best_score(tmp_path) == ("score", 3.0, 2)
    best = read_checkpoint(tmp_path / "checkpoints" / "best")
    same = read_checkpoint(tmp_path / "checkpoints" / "iter_0000002")
    assert best["iteration"] == 2
    for name, state in same["modules"].items():
        for k, v in state.items():
            np.testing.assert_array_equal(best["modules"][name][k].numpy(), v.numpy(), err_msg=k)
    run = load_run(tmp_path / "checkpoints" / "best")  # loads like any checkpoint folder
    assert run.iteration == 2
    # resumed: the kept score carries over; only a strictly better one replaces it
    _run(tiny_raw, tiny_images, tmp_path, 7, resume=True,
         evaluation=_scripted({1: 2.5, 2: 2.9}))
    assert best_score(tmp_path) == ("score", 2.5, 6)


def test_best_with_higher_is_better(tmp_path):
    layer = paddle.nn.Linear(2, 1)
    keeper = BestKeeper(tmp_path, "psnr", higher_is_better=True)
    assert keeper.offer(1, {"ebm": layer}, {"psnr": 10.0})
    assert not keeper.offer(2, {"ebm": layer}, {"psnr": 9.0})
    assert not keeper.offer(3, {"ebm": layer}, {"psnr": float("nan")})
    assert keeper.offer(4, {"ebm": layer}, {"psnr": 11.0})
    assert best_score(tmp_path) == ("psnr", 11.0, 4)
    assert json.loads((tmp_path / "checkpoints" / "best" / "state.json").read_text())["iteration"] == 4


# ---- the collapse guard --------------------------------------------------------------------------

def _rows(gaps):
    return [{"f_data": g / 2, "f_revised": -g / 2} for g in gaps]


def test_guard_fires_on_a_runaway_energy_gap():
    rng = np.random.default_rng(0)
    normal = 1e6 * np.exp(rng.normal(0, 1, 600))  # gaps swinging over an order of magnitude
    runaway = 1e6 * np.geomspace(1, 1e4, 200)  # the gap grows 10,000-fold in 200 iterations
    guard = CollapseGuard(factor=100, window=500, patience=10)
    fired = [i for i, row in enumerate(_rows(np.concatenate([normal, runaway])))
             if guard.check(i, row) is not None]
    assert fired and 600 < fired[0] < 800


def test_guard_is_silent_on_a_normal_log_and_when_off():
    rng = np.random.default_rng(1)
    gaps = 1e6 * np.exp(rng.normal(0, 1.5, 5000)) * np.linspace(1, 5, 5000)  # noisy, slow drift
    for factor in (100, 0):
        guard = CollapseGuard(factor=factor, window=500, patience=10)
        assert all(guard.check(i, row) is None for i, row in enumerate(_rows(gaps)))


def test_guard_stops_training_keeping_the_saved_state(tiny_raw, tiny_images, tmp_path):
    tiny_raw["train"].update(checkpoint_every=1, collapse_factor=1e-9, collapse_window=2,
                             collapse_patience=1)  # any gap is a "runaway" once the window is full
    with pytest.raises(CollapseError, match=r"iteration 3: the energy gap .*--resume"):
        _run(tiny_raw, tiny_images, tmp_path, 6)
    assert _kept(tmp_path) == [2]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]


# ---- curves of several runs ----------------------------------------------------------------------

def test_curves_tool_writes_long_csv_and_png(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path / "a", 4)
    tiny_raw["train"]["data_noise"] = 0.1
    _run(tiny_raw, tiny_images, tmp_path / "b", 4)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "curves.py"), "--run",
                          f"base={tmp_path / 'a'}", "--run", f"noise={tmp_path / 'b'}", "--metric",
                          "energy_gap", "--metric", "ebm_weight_norm", "--log-scale", "energy_gap",
                          "--every", "2", "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "cmp.csv")))
    assert {(r["config"], int(r["iteration"]), r["metric"]) for r in rows} == {
        (c, i, m) for c in ("base", "noise") for i in (2, 4) for m in ("energy_gap", "ebm_weight_norm")}
    log = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    gap = next(float(r["value"]) for r in rows if r["config"] == "base" and r["iteration"] == "4"
               and r["metric"] == "energy_gap")
    assert gap == pytest.approx(float(log[3]["f_data"]) - float(log[3]["f_revised"]))
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "curves.py"), "--run",
                          f"a={tmp_path / 'a'}", "--metric", "nosuch", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "error: no run logged nosuch"


def test_eval_every_with_inception_fid_but_no_weights_fails_before_training(tiny_raw, tiny_images,
                                                                          tmp_path):
    from ebm_vae.eval.evaluate import training_evaluation
    from ebm_vae.eval.inception import InceptionWeightsError
    tiny_raw["eval"] = {"every": 1, "metric": "fid", "inception": str(tmp_path / "none.pdparams")}
    with pytest.raises(InceptionWeightsError, match="none.pdparams not found"):
        _run(tiny_raw, tiny_images, tmp_path / "r", 2, evaluation=training_evaluation)
    assert not (tmp_path / "r" / "log.csv").exists()


def test_eval_metric_must_be_known(tiny_raw):
    tiny_raw["eval"] = {"every": 5, "metric": "inception_score"}
    with pytest.raises(ConfigError, match=r"eval\.metric"):
        config_from_dict(tiny_raw)


# ---- continuing from trained weights (--init) ----------------------------------------------------

def test_init_starts_a_new_run_at_the_weights_iteration(tiny_raw, tiny_images, tmp_path):
    # 16 images / batch 6 = 3 iterations per epoch; decay every epoch: the schedule must go on
    tiny_raw["train"].update(lr_decay_epochs=1.0, checkpoint_every=1, keep_every=1)
    _run(tiny_raw, tiny_images, tmp_path / "full", 5)
    export_weights(tmp_path / "full" / "checkpoints" / "iter_0000002", tmp_path / "weights")
    train_generation(config_from_dict(tiny_raw), tmp_path / "more", 4, images=tiny_images,
                     progress=False, init=tmp_path / "weights")
    first = read_checkpoint(tmp_path / "more" / "checkpoints" / "iter_0000002")
    shipped = read_checkpoint(tmp_path / "full" / "checkpoints" / "iter_0000002")
    for net in ("ebm", "encoder", "decoder"):
        for k, v in shipped["modules"][net].items():
            np.testing.assert_array_equal(first["modules"][net][k].numpy(), v.numpy())
    rows = list(csv.DictReader(open(tmp_path / "more" / "log.csv")))
    full = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [3, 4]
    assert [(r["epoch"], r["lr_ebm"]) for r in rows] == [(r["epoch"], r["lr_ebm"]) for r in full[2:4]]
    # not an exact resume: the optimisers started again
    assert rows[0]["loss_ebm"] == full[2]["loss_ebm"] and rows[1]["loss_ebm"] != full[3]["loss_ebm"]
    _run(tiny_raw, tiny_images, tmp_path / "more", 5, resume=True)
    assert [int(r["iteration"]) for r in csv.DictReader(open(tmp_path / "more" / "log.csv"))] == [3, 4, 5]


def test_an_init_run_resumes_exactly_from_its_first_checkpoint(tiny_raw, tiny_images, tmp_path):
    # the first checkpoint holds the fresh (empty) optimisers: resuming from it is the same run
    _run(tiny_raw, tiny_images, tmp_path / "full", 2)
    export_weights(tmp_path / "full" / "checkpoints" / "iter_0000002", tmp_path / "weights")
    for name, its in (("whole", 4), ("cut", 2)):
        train_generation(config_from_dict(tiny_raw), tmp_path / name, its, images=tiny_images,
                         progress=False, init=tmp_path / "weights")
    _run(tiny_raw, tiny_images, tmp_path / "cut", 4, resume=True)
    assert_same_states(tmp_path / "cut", tmp_path / "whole")  # networks and both Adams


def test_sampler_only_weights_sample_and_init_starts_a_fresh_encoder(tiny_raw, tiny_images,
                                                                     tmp_path, capsys):
    from ebm_vae.eval.evaluate import EvaluationError, _check_request
    _run(tiny_raw, tiny_images, tmp_path / "full", 2)
    out = export_weights(tmp_path / "full", tmp_path / "weights", sampler_only=True)
    assert not (out / "encoder.pdparams").exists()
    run = load_run(out)
    assert run.missing == ("encoder",) and run.iteration == 2
    from ebm_vae.utils.runtime import seed_all
    seed_all(run.cfg.seed)  # load_run builds the networks seeded, as a new run does
    fresh = build_models(run.cfg.model)
    for k, v in fresh.encoder.state_dict().items():
        np.testing.assert_array_equal(run.models.encoder.state_dict()[k].numpy(), v.numpy())
    with pytest.raises(EvaluationError, match="recon needs the encoder"):
        _check_request(run, ["recon"], SimpleNamespace(metrics=["recon"]), None, 10)
    train_generation(config_from_dict(tiny_raw), tmp_path / "more", 3, images=tiny_images,
                     progress=False, init=out)
    assert "holds no encoder weights: starting encoder fresh" in capsys.readouterr().err
    first = read_checkpoint(tmp_path / "more" / "checkpoints" / "iter_0000003")
    assert first["iteration"] == 3


def test_init_with_another_architecture_is_one_clear_error(tiny_raw, tiny_images, tmp_path):
    _run(tiny_raw, tiny_images, tmp_path / "a", 1)
    tiny_raw["model"]["latent_dim"] = 3
    with pytest.raises(TrainingError, match="cannot start from .*a"):
        train_generation(config_from_dict(tiny_raw), tmp_path / "b", 2, images=tiny_images,
                         progress=False, init=tmp_path / "a")


def test_train_tool_refuses_init_with_resume_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--resume",
                          str(tmp_path), "--init", str(ROOT / "pretrained" / "mnist")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: --init starts a new run")


# ---- the weight average (train.ema) --------------------------------------------------------------

def test_weight_average_follows_the_known_recursion():
    from ebm_vae.core.ema import WeightAverage
    from typing import NamedTuple

    class Nets(NamedTuple):
        ebm: paddle.nn.Layer

    nets = Nets(paddle.nn.Linear(3, 2))
    start = nets.ebm.weight.numpy().copy()
    average, d, target = WeightAverage(nets, 0.9), 0.9, np.full((3, 2), 2.0, np.float32)
    nets.ebm.weight.set_value(paddle.to_tensor(target))
    for _ in range(5):
        average.update(nets)  # w_avg <- d w_avg + (1 - d) w, with w fixed at `target`
    want = d ** 5 * start + (1 - d ** 5) * target
    np.testing.assert_allclose(average.models.ebm.weight.numpy(), want, rtol=1e-5)
    assert average.models.ebm.weight.stop_gradient and not average.models.ebm.training
    average.reset(nets)
    np.testing.assert_array_equal(average.models.ebm.weight.numpy(), target)
    assert list(average.modules()) == ["ema_ebm"]


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_ema_outside_0_1_names_the_key(tiny_raw, value):
    assert config_from_dict(tiny_raw).train.ema == 0
    tiny_raw["train"]["ema"] = value
    with pytest.raises(ConfigError, match=r"train\.ema"):
        config_from_dict(tiny_raw)


def test_the_average_is_checkpointed_resumes_exactly_and_never_feeds_training(tiny_raw, tiny_images,
                                                                             tmp_path):
    _run(tiny_raw, tiny_images, tmp_path / "plain", 4)
    tiny_raw["train"]["ema"] = 0.5
    _run(tiny_raw, tiny_images, tmp_path / "whole", 4)
    _run(tiny_raw, tiny_images, tmp_path / "cut", 2)
    _run(tiny_raw, tiny_images, tmp_path / "cut", 4, resume=True)
    assert_same_states(tmp_path / "whole", tmp_path / "cut")
    whole = read_checkpoint(tmp_path / "whole")["modules"]
    plain = read_checkpoint(tmp_path / "plain")["modules"]
    for net in ("ebm", "encoder", "decoder"):
        for k, v in plain[net].items():
            np.testing.assert_array_equal(whole[net][k].numpy(), v.numpy(), err_msg=k)
        assert any(not np.array_equal(whole["ema_" + net][k].numpy(), v.numpy())
                   for k, v in whole[net].items())


def test_the_average_exports_as_weights_and_a_run_without_one_says_so(tiny_raw, tiny_images,
                                                                     tmp_path):
    from ebm_vae.training.states import CheckpointError
    tiny_raw["train"]["ema"] = 0.5
    _run(tiny_raw, tiny_images, tmp_path / "r", 2)
    export_weights(tmp_path / "r", tmp_path / "w", averaged=True)
    saved = read_checkpoint(tmp_path / "r")["modules"]["ema_decoder"]
    run = load_run(tmp_path / "w")
    assert run.iteration == 2
    for k, v in run.models.decoder.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k].numpy(), err_msg=k)
    tiny_raw["train"]["ema"] = 0.0
    _run(tiny_raw, tiny_images, tmp_path / "none", 2)
    with pytest.raises(CheckpointError, match="holds no weight average"):
        export_weights(tmp_path / "none", tmp_path / "w2", averaged=True)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_run.py"), str(tmp_path / "r"),
                          "--ema"], capture_output=True, text=True)
    assert out.returncode != 0 and "--ema goes with --weights-only" in out.stderr
    assert "Traceback" not in out.stderr


def test_init_starts_the_average_at_the_loaded_weights_and_it_is_scored(tiny_raw, tiny_images,
                                                                        tmp_path):
    _run(tiny_raw, tiny_images, tmp_path / "full", 2)
    export_weights(tmp_path / "full", tmp_path / "weights")
    tiny_raw["train"].update(ema=0.9, checkpoint_every=1, keep_every=1)
    tiny_raw["eval"] = {"every": 1}
    seen = []

    def hook(models, cfg, run_dir, progress, averaged=None):
        seen.append(averaged)
        return Evaluation(1, ["score"], lambda: {"score": 1.0}, "score", best="score")
    train_generation(config_from_dict(tiny_raw), tmp_path / "more", 3, images=tiny_images,
                     progress=False, init=tmp_path / "weights", evaluation=hook)
    assert seen[0] is not None and type(seen[0]).__name__ == "Models"
    first = read_checkpoint(tmp_path / "more" / "checkpoints" / "iter_0000002")["modules"]
    for net in ("ebm", "encoder", "decoder"):
        for k, v in first[net].items():
            np.testing.assert_array_equal(first["ema_" + net][k].numpy(), v.numpy(), err_msg=k)


def test_tools_sample_and_evaluate_the_average_of_a_checkpoint(tiny_raw, tiny_images, tmp_path):
    from ebm_vae.training.states import CheckpointError
    tiny_raw["train"]["ema"] = 0.5
    _run(tiny_raw, tiny_images, tmp_path / "r", 2)
    saved = read_checkpoint(tmp_path / "r")["modules"]["ema_ebm"]
    run = load_run(tmp_path / "r", averaged=True)
    for k, v in run.models.ebm.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k].numpy(), err_msg=k)
    export_weights(tmp_path / "r", tmp_path / "w")
    with pytest.raises(CheckpointError, match="holds exported weights, not a checkpoint"):
        load_run(tmp_path / "w", averaged=True)
    tool = [sys.executable, str(ROOT / "tools" / "sample.py"), "--ckpt", str(tmp_path / "r"),
            "--n", "4", "--steps", "1", "--no-progress", "--ema"]
    out = subprocess.run(tool, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "samples_ema.npz").is_file()
    bad = subprocess.run([*tool[:3], str(tmp_path / "w"), *tool[4:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "weight average" in bad.stderr
    export_weights(tmp_path / "r", tmp_path / "avg", averaged=True)
    with pytest.raises(CheckpointError, match=r"already an average, says weights\.json"):
        load_run(tmp_path / "avg", averaged=True)
