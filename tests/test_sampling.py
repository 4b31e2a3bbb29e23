"""Loading runs, ancestral sampling, interpolation, reconstruction, the sample/evaluate tools and
the training-time evaluation hook, on tiny models."""
from __future__ import annotations

import csv
import gzip
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from ebm_vae.core.config import config_from_dict, dump_config
from ebm_vae.core.langevin import langevin
from ebm_vae.core.models import build_models
from ebm_vae.training.checkpoints import read_checkpoint, write_checkpoint
from ebm_vae.training.runs import export_weights, load_run
from ebm_vae.training.states import CheckpointError
from ebm_vae.core.sampling import ancestral_sample, interpolate, reconstruct, with_steps
from ebm_vae.training.generation import train_generation
from ebm_vae.eval.classifier import fit_classifier, save_classifier
from ebm_vae.eval.evaluate import training_evaluation
from ebm_vae.utils.provenance import code_version, command_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import evaluate as evaluate_tool  # noqa: E402
import sample as sample_tool  # noqa: E402


def _no_bn_batch_stats(raw: dict) -> dict:
    raw["model"]["bn_batch_stats"] = False  # outputs independent of batch composition
    return raw


def _make_run(raw: dict, run_dir: Path, seed: int = 11) -> None:
    """A run folder with a config and a checkpoint of models initialised with `seed`."""
    cfg = config_from_dict(raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    paddle.seed(seed)
    models = build_models(cfg.model)
    write_checkpoint(run_dir, 7, models._asdict())


def test_load_run_restores_the_checkpoint_or_the_initialisation(tiny_raw, tmp_path):
    _make_run(tiny_raw, tmp_path)
    run = load_run(tmp_path)
    saved = read_checkpoint(tmp_path)["modules"]["decoder"]
    got = run.models.decoder.state_dict()
    assert run.iteration == 7 and all(np.array_equal(got[k].numpy(), saved[k].numpy()) for k in saved)
    assert not run.models.decoder.training and not run.models.encoder.training
    fresh = load_run(tmp_path, untrained=True)
    paddle.seed(tiny_raw["seed"])
    init = build_models(config_from_dict(tiny_raw).model).decoder.state_dict()
    assert fresh.iteration == 0
    assert all(np.array_equal(fresh.models.decoder.state_dict()[k].numpy(), init[k].numpy()) for k in init)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_run(tmp_path / "nope")


def _two_checkpoints(raw: dict, run_dir: Path) -> dict[int, dict]:
    """A run folder with checkpoints at iterations 3 and 5 (of different models; the pruning of
    older ones is undone by writing 5 first); returns each one's decoder state."""
    cfg = config_from_dict(raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    decoders = {}
    for it in (5, 3):
        paddle.seed(it)
        layers = build_models(cfg.model)._asdict()
        write_checkpoint(run_dir, it, layers)
        decoders[it] = {k: v.numpy() for k, v in layers["decoder"].state_dict().items()}
    return decoders


def test_a_checkpoint_folder_loads_that_checkpoint_and_exports_it(tiny_raw, tmp_path):
    run_dir = tmp_path / "run"
    decoders = _two_checkpoints(tiny_raw, run_dir)
    older = run_dir / "checkpoints" / "iter_0000003"
    for path, it in ((run_dir, 5), (older, 3)):
        run = load_run(path)
        got = run.models.decoder.state_dict()
        assert run.iteration == it and all(np.array_equal(got[k].numpy(), decoders[it][k])
                                           for k in decoders[it])
    out = export_weights(older, tmp_path / "weights")
    assert (out / "config.yaml").read_bytes() == (run_dir / "config.yaml").read_bytes()
    shipped = load_run(out).models.decoder.state_dict()
    assert all(np.array_equal(shipped[k].numpy(), decoders[3][k]) for k in decoders[3])
    (older / "state.json").unlink()
    with pytest.raises(CheckpointError, match="iter_0000003 is not a complete checkpoint"):
        load_run(older)


def test_ancestral_sample_is_decoder_then_langevin_in_batches(tiny_raw, tmp_path):
    _make_run(_no_bn_batch_stats(tiny_raw), tmp_path)
    run = load_run(tmp_path)
    lv = with_steps(run.cfg.langevin, 0)
    paddle.seed(1)
    pair = ancestral_sample(run.models, 7, 4, lv, batch_size=7, progress=False)
    paddle.seed(1)
    z = paddle.randn([7, 4])  # the first draw of `revise`
    with paddle.no_grad():
        expect = run.models.decoder(z).numpy()
    assert pair.proposals.shape == (7, 1, 8, 8) and np.allclose(pair.proposals, expect, atol=1e-6)
    assert np.array_equal(pair.revised, pair.proposals)  # 0 Langevin steps
    # 3 batches (3 + 3 + 1) give 7 samples; deterministic Langevin = langevin() on the proposals
    lv = with_steps(run.cfg.langevin, 3)
    lv = lv.__class__(**{**lv.__dict__, "noise": False})
    pair = ancestral_sample(run.models, 7, 4, lv, batch_size=3, progress=False)
    assert pair.revised.shape == (7, 1, 8, 8)
    again = langevin(run.models.ebm, paddle.to_tensor(pair.proposals), lv).numpy()
    assert np.allclose(pair.revised, again, atol=1e-5) and not np.allclose(pair.revised, pair.proposals)


def test_interpolation_paths_start_and_end_at_the_decoded_endpoints(tiny_raw, tmp_path):
    _make_run(_no_bn_batch_stats(tiny_raw), tmp_path)
    run = load_run(tmp_path)
    paddle.seed(2)
    pair = interpolate(run.models, 4, with_steps(run.cfg.langevin, 0), pairs=3, points=5)
    paddle.seed(2)
    z_a, z_b = paddle.randn([3, 4]), paddle.randn([3, 4])
    with paddle.no_grad():
        start, end = run.models.decoder(z_a).numpy(), run.models.decoder(z_b).numpy()
    assert pair.proposals.shape == (15, 1, 8, 8)
    assert np.allclose(pair.proposals[0::5], start, atol=1e-5)
    assert np.allclose(pair.proposals[4::5], end, atol=1e-5)


def test_reconstruct_uses_the_encoder_mean_or_a_sample(tiny_raw, tiny_images, tmp_path):
    _make_run(_no_bn_batch_stats(tiny_raw), tmp_path)
    run = load_run(tmp_path)
    lv = with_steps(run.cfg.langevin, 0)
    mean = reconstruct(run.models, tiny_images, lv, use_mean=True, batch_size=5, progress=False)
    with paddle.no_grad():
        expect = run.models.decoder(run.models.encoder(paddle.to_tensor(tiny_images))[0]).numpy()
    assert np.allclose(mean.proposals, expect, atol=1e-5)
    sampled = reconstruct(run.models, tiny_images, lv, use_mean=False, batch_size=5, progress=False)
    assert sampled.proposals.shape == expect.shape and not np.allclose(sampled.proposals, expect)


def test_sample_tool_writes_npz_grid_and_interpolation(tiny_raw, tmp_path):
    _make_run(tiny_raw, tmp_path)
    assert sample_tool.main(["--ckpt", str(tmp_path), "--n", "9", "--steps", "1", "--proposals",
                             "--no-progress"]) == 0
    with np.load(tmp_path / "samples.npz") as f:
        assert f["images"].shape == (9, 1, 8, 8) and f["proposals"].shape == (9, 1, 8, 8)
        assert f["images"].min() >= -1 and f["images"].max() <= 1
    assert (tmp_path / "samples.png").is_file()
    assert sample_tool.main(["--ckpt", str(tmp_path), "--interpolate", "--pairs", "2"]) == 0
    assert (tmp_path / "interpolation.png").is_file()
    assert sample_tool.main(["--ckpt", str(tmp_path / "missing")]) == 2


# ---- tools/evaluate.py on a 28x28 model and IDX files ------------------------------------------

def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_run(tiny_raw, tmp_path) -> Path:
    """Fake MNIST files (bright left vs right halves as 2 labels) and a tiny 28x28 run on them."""
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 64), ("t10k", 24)]:
        y = rng.integers(0, 2, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(y):
            x[i, :, 14 * label:14 * label + 14] += 190
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", x)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y)
    raw = tiny_raw
    raw["data"]["root"] = str(tmp_path)
    raw["model"].update(image_size=28, decoder={"act": "relu", "layers": [
        {"channels": 4, "kernel": 7, "stride": 1, "batch_norm": True},  # 1 -> 7
        {"channels": 4, "kernel": 4, "stride": 2, "padding": 1},  # 7 -> 14
        {"channels": 1, "kernel": 4, "stride": 2, "padding": 1}]})  # 14 -> 28
    _make_run(raw, tmp_path / "run")
    return tmp_path / "run"


def test_evaluate_tool_cls_fid_recon_and_clear_prerequisite_errors(mnist_run, capsys, monkeypatch):
    run = str(mnist_run)
    monkeypatch.delenv("EBM_VAE_INCEPTION", raising=False)
    assert evaluate_tool.main(["--ckpt", run, "--metrics", "cls_fid", "--n", "10"]) == 2
    assert "--train-classifier" in capsys.readouterr().err
    assert evaluate_tool.main(["--ckpt", run, "--train-classifier", "--epochs", "1", "--no-progress"]) == 0
    assert (mnist_run / "classifier" / "state.json").is_file()
    assert evaluate_tool.main(["--ckpt", run, "--metrics", "cls_fid,recon", "--n", "12", "--steps", "1",
                               "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cls_fid" in out and "PSNR" in out
    res = json.loads((mnist_run / "eval.json").read_text())
    assert res["cls_fid"]["protocol"]["num_samples"] == 12
    assert res["cls_fid"]["protocol"]["langevin_steps"] == 1
    assert res["cls_fid"]["protocol"]["reference"] == "train"
    assert res["cls_fid"]["protocol"]["code"] == code_version()  # which code made the number
    assert res["cls_fid"]["protocol"]["command"] == command_line()
    assert {"proposals", "revised"} <= set(res["cls_fid"]) and "NOT comparable" in res["cls_fid"]["note"]
    assert res["recon"]["z"] == "mu" and res["recon"]["num_images"] == 24
    assert res["recon"]["decoded"]["psnr_db"] > 0 and (mnist_run / "reconstruction.png").is_file()
    # real held-out images score far below an untrained model's samples
    assert evaluate_tool.main(["--ckpt", run, "--real", "test", "--n", "24", "--no-progress"]) == 0
    assert "no Inception weights found" in capsys.readouterr().err  # the default metric: cls_fid
    assert evaluate_tool.main(["--ckpt", run, "--untrained", "--n", "24", "--steps", "0",
                               "--no-progress"]) == 0
    real = json.loads((mnist_run / "eval_real_test.json").read_text())["cls_fid"]["real_test"]
    untrained = json.loads((mnist_run / "eval_untrained.json").read_text())["cls_fid"]["revised"]
    assert real < untrained
    # Inception metrics without weights: a clear error before any sampling
    assert evaluate_tool.main(["--ckpt", run, "--metrics", "fid", "--n", "10"]) == 2
    assert "pt_inception" in capsys.readouterr().err
    assert evaluate_tool.main(["--ckpt", run, "--metrics", "fid,bogus"]) == 2
    # with weights found, the default metric is the paper's FID (these fake ones are refused)
    paddle.save({"fc.weight": np.zeros((2, 2), np.float32)}, str(mnist_run / "fake.pdparams"))
    capsys.readouterr()
    assert evaluate_tool.main(["--ckpt", run, "--inception", str(mnist_run / "fake.pdparams"),
                               "--n", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "scoring fid" in err and "--reference-n" in err  # says which metric, and its cost
    assert "does not match the FID Inception network" in err
    # one checkpoint folder: the run's classifier; outputs in the run folder (the trainer deletes
    # older checkpoint folders), named by the checkpoint
    folder = write_checkpoint(mnist_run, 7, load_run(mnist_run).models._asdict())
    assert evaluate_tool.main(["--ckpt", str(folder), "--n", "12", "--steps", "1",
                               "--no-progress"]) == 0
    res = json.loads((mnist_run / "eval_iter_0000007.json").read_text())
    assert res["cls_fid"]["protocol"]["num_samples"] == 12 and not (folder / "eval.json").exists()
    assert sample_tool.main(["--ckpt", str(folder), "--n", "4", "--steps", "1", "--no-progress"]) == 0
    assert (mnist_run / "samples_iter_0000007.npz").is_file()


def test_training_time_evaluation_logs_and_plots_without_changing_training(mnist_run, tmp_path):
    cfg_path = mnist_run / "config.yaml"
    import yaml
    raw = yaml.safe_load(cfg_path.read_text())
    splits = {}
    from ebm_vae.data.datasets import load_split
    for s in ("train", "test"):
        splits[s] = load_split("mnist", raw["data"]["root"], s)
    save_classifier(tmp_path / "clf", fit_classifier("mnist", splits, 1, progress=False))
    images = splits["train"][0][:12]
    raw["train"].update(sample_every=3, log_every=1)
    plain = train_generation(config_from_dict(raw), tmp_path / "plain", 4, images=images, progress=False)
    raw["eval"] = {"every": 2, "num_samples": 6, "classifier": str(tmp_path / "clf")}
    evald = train_generation(config_from_dict(raw), tmp_path / "eval", 4, images=images, progress=False,
                             evaluation=training_evaluation)
    for name in ("ebm", "encoder", "decoder"):
        a, b = getattr(plain.models, name).state_dict(), getattr(evald.models, name).state_dict()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "eval" / "log.csv")))
    fid = [float(r["cls_fid_revised"]) for r in rows]
    assert [math.isnan(v) for v in fid] == [True, False, True, False] and fid[1] > 0
    assert "cls_fid_revised" not in open(tmp_path / "plain" / "log.csv").readline()


def test_training_time_evaluation_scores_the_weight_average_and_keeps_its_best(mnist_run, tmp_path):
    import yaml
    from ebm_vae.training.checkpoints import best_score
    from ebm_vae.data.datasets import load_split
    raw = yaml.safe_load((mnist_run / "config.yaml").read_text())
    splits = {s: load_split("mnist", raw["data"]["root"], s) for s in ("train", "test")}
    save_classifier(tmp_path / "clf", fit_classifier("mnist", splits, 1, progress=False))
    raw["train"].update(ema=0.5)
    raw["eval"] = {"every": 2, "num_samples": 6, "classifier": str(tmp_path / "clf")}
    train_generation(config_from_dict(raw), tmp_path / "r", 4, images=splits["train"][0][:12],
                     progress=False, evaluation=training_evaluation)
    rows = list(csv.DictReader(open(tmp_path / "r" / "log.csv")))
    raw_fid = [float(r["cls_fid_revised"]) for r in rows if r["iteration"] in ("2", "4")]
    ema_fid = [float(r["cls_fid_ema_revised"]) for r in rows if r["iteration"] in ("2", "4")]
    assert all(v > 0 for v in raw_fid + ema_fid) and raw_fid != ema_fid
    key, value, it = best_score(tmp_path / "r")
    assert key == "cls_fid_ema_revised" and value == min(ema_fid)
    assert evaluate_tool.main(["--ckpt", str(tmp_path / "r" / "checkpoints" / "best"), "--ema",
                               "--metrics", "cls_fid", "--classifier", str(tmp_path / "clf"),
                               "--n", "12", "--steps", "1", "--no-progress"]) == 0
    res = json.loads((tmp_path / "r" / "eval_ema_best.json").read_text())
    assert res["cls_fid"]["protocol"]["source"] == "ema" and res["cls_fid"]["revised"] > 0
