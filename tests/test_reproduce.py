"""Tables 1-6 from YAML: specs load and resolve, dry run, report writer, reuse/resume, a tiny table."""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

from ebm_vae.training.checkpoints import latest_checkpoint, write_checkpoint
from ebm_vae.reproduce.pipeline import Places, reproduce
from ebm_vae.reproduce.plan import data_root, last_wins, parse_data_roots, plan, run_state
from ebm_vae.reproduce.report import Row, plot_panels, render_csv, render_markdown, write_report
from ebm_vae.reproduce.spec import (TABLES_DIR, find_tables, load_table, metric_names,
                                   table_from_dict)
from ebm_vae.utils.provenance import code_version, short
from ebm_vae.utils.typed_yaml import ConfigError
from tests.conftest import TINY

TABLE_FILES = sorted(TABLES_DIR.glob("table*.yaml"))


def test_every_table_file_is_there():
    ids = {load_table(p).id for p in TABLE_FILES}
    assert ids == {"1", "2", "3a", "3b", "3c", "4", "5", "6"}


@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["paper", "quick"])
def test_every_run_of_every_table_resolves(path, scale, tmp_path):
    spec = load_table(path)
    runs = plan(spec, path, scale, tmp_path)
    s = getattr(spec.scales, scale)
    assert [(r.spec.label, r.seed) for r in runs] == [
        (r.label, seed) for r in spec.runs if s.runs is None or r.label in s.runs
        for seed in (s.seeds or [runs[0].cfg.seed])]
    for run in runs:  # each run's own override wins over the table's and the scale's
        for assignment in run.spec.set:
            key, value = assignment.split("=", 1)
            node = run.cfg
            for part in key.split("."):
                node = getattr(node, part)
            assert node == yaml.safe_load(value)
        assert run.run_dir.parent == tmp_path / scale


def test_paper_values_are_only_the_recovered_one():
    known = {(load_table(p).id, r.label): r.paper for p in TABLE_FILES for r in load_table(p).runs
             if r.paper is not None}
    assert known == {("1", "CIFAR-10"): 36.20}


def test_sweeps_hold_the_paper_setting():
    """Tables 4-6 vary one parameter around d = 200, l = 10, delta = 0.002, gamma = 2, and the
    base-setting runs of the three tables are one shared run folder."""
    base_dirs = set()
    for table, label in [("4", "l=10"), ("4", "delta=0.002"), ("5", "d=200"), ("6", "gamma=2")]:
        path = find_tables(table)[0]
        run = next(r for r in plan(load_table(path), path, "paper", Path("x")) if r.spec.label == label)
        c = run.cfg
        setting = (c.model.latent_dim, c.langevin.steps, c.langevin.step_size, c.train.gamma)
        assert setting == (200, 10, 0.002, 2.0)
        assert c.data.name == "cifar10"
        base_dirs.add(run.run_dir)
    assert len(base_dirs) == 1


def test_find_tables():
    assert [p.stem for p in find_tables("3")] == ["table3a_reconstruction", "table3b_facade_completion",
                                                  "table3c_paris_completion"]
    with pytest.raises(ConfigError, match="no table '9'"):
        find_tables("9")


def _raw_table() -> dict:
    return {"id": "9", "title": "t", "metric": "is", "config": "c.yaml",
            "runs": [{"label": "a", "group": "g", "x": 1.0}],
            "scales": {"paper": {"num_samples": 100}, "quick": {"num_samples": 100, "offline": True}}}


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(metirc="is"), "metirc"),
    (lambda r: r["runs"][0].pop("x"), "both 'group' and 'x'"),
    (lambda r: r["runs"].append({"label": "a"}), "unique"),
    (lambda r: r.update(metric="recon"), "offline"),
    (lambda r: r["scales"]["quick"].update(num_samples=5), "num_samples"),
    (lambda r: r["runs"][0].update(paper="high"), "runs.0.paper"),
    (lambda r: r["scales"].pop("quick"), "scales.quick"),
])
def test_bad_table_specs_are_clear_errors(change, message):
    raw = _raw_table()
    table_from_dict(raw)
    change(raw)
    with pytest.raises(ConfigError, match=message):
        table_from_dict(raw)


def test_data_roots(tmp_path):
    roots, folder = parse_data_roots(["mnist=/a", str(tmp_path)])
    assert roots == {"mnist": "/a"} and folder == str(tmp_path)
    assert data_root("mnist", roots, folder) == "/a"
    (tmp_path / "cifar10").mkdir()
    assert data_root("cifar10", roots, folder) == str(tmp_path / "cifar10")
    with pytest.raises(ConfigError, match="fashion_mnist=PATH"):
        data_root("fashion_mnist", roots, folder)
    assert data_root("mnist", {}, None) is None


def test_dry_run_lists_the_runs(tmp_path):
    from tools.reproduce import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--table", "6", "--scale", "quick", "--dry-run", "--runs", str(tmp_path),
                     "--data-root", "mnist=/data/mnist"]) == 0
    text = out.getvalue()
    for gamma in ("1", "2", "3"):  # the quick scale's rows, 2 seeds each
        assert f"== run 'gamma={gamma}', seed 0 " in text and f"== run 'gamma={gamma}', seed 1 " in text
    assert "gamma=0.5" not in text
    assert text.count("[to train; target 1000 iterations]") == 6
    assert "'train.gamma=1.0'" in text and "'seed=1'" in text and "root: /data/mnist" in text and "device: cpu" in text
    assert "python tools/train.py -c" in text
    assert not any(tmp_path.iterdir())  # nothing trained or written


def _rows() -> list[Row]:
    return [Row("gamma=2", "train.gamma=2.0",
                {"cls_is": {"revised": 3.5, "revised_std": 0.25, "proposals": 2.0}},
                None, "mnist, 120 iterations", "gamma", 2.0, 0),
            Row("gamma=1", "train.gamma=1.0",
                {"cls_is": {"revised": 3.0, "revised_std": 0.5, "proposals": 1.5}},
                4.0, "mnist, 120 iterations", "gamma", 1.0, 0)]


def test_report_markdown_and_csv():
    spec = table_from_dict(_raw_table())
    md = render_markdown(spec, "quick", ["cls_is"], _rows())
    lines = md.splitlines()
    assert lines[0] == "# Table 9: t"
    assert "metrics `cls_is`" in lines[2] and "NOT comparable" in lines[2]
    header = ("| run | setting | seeds | classifier IS (revised samples) | std | classifier IS (VAE "
              "proposals) | paper (is) | protocol |")
    assert header in lines
    assert "| gamma=2 | train.gamma=2.0 | 0 | 3.5 | 0.25 | 2 | not recovered | mnist, 120 iterations |" in lines
    assert "| gamma=1 | train.gamma=1.0 | 0 | 3 | 0.5 | 1.5 | 4 | mnist, 120 iterations |" in lines
    table = list(csv.DictReader(io.StringIO(render_csv(["cls_is"], _rows()))))
    assert table[0]["cls_is.revised"] == "3.5" and table[0]["paper"] == "" and table[1]["paper"] == "4.0"
    assert table[0]["trained_with"] == "not recorded"
    assert "Made by" not in md
    rows = [dataclasses.replace(r, trained_with=c) for r, c in zip(_rows(), ["abc1234", "def5678"])]
    made = render_markdown(spec, "quick", ["cls_is"], rows, made_by="`reproduce.py --table 9`")
    assert ("Made by `reproduce.py --table 9`. Runs trained with commit abc1234 (1 run); def5678 "
            "(1 run); evaluated with commit not recorded (2 runs)") in made
    assert table[1]["x"] == "1.0" and table[1]["seed"] == "0"


def test_report_over_seeds_shows_mean_and_sample_std_and_every_seed_in_the_csv():
    spec = table_from_dict(_raw_table())
    rows = [Row("gamma=2", "s", {"cls_fid": {"revised": v, "proposals": p}}, None, "p", "gamma", 2.0,
                seed) for seed, v, p in [(0, 10.0, 100.0), (1, 14.0, 80.0), (2, 12.0, 90.0)]]
    rows.append(Row("gamma=1", "s", {"cls_fid": {"revised": 20.0, "proposals": 50.0}}, None, "p",
                    "gamma", 1.0, 0))
    md = render_markdown(spec, "quick", ["cls_fid"], rows)
    assert "| gamma=2 | s | 0, 1, 2 | 12 ± 2 | 90 ± 10 | not recovered | p |" in md  # std ddof=1
    assert "| gamma=1 | s | 0 | 20 | 50 | not recovered | p |" in md
    assert "mean ± the sample standard deviation" in md
    table = list(csv.DictReader(io.StringIO(render_csv(["cls_fid"], rows))))
    assert [(r["run"], r["seed"], r["cls_fid.revised"]) for r in table] == [
        ("gamma=2", "0", "10.0"), ("gamma=2", "1", "14.0"), ("gamma=2", "2", "12.0"),
        ("gamma=1", "0", "20.0")]
    (title, series), (title_p, series_p) = plot_panels(["cls_fid"], rows)  # one panel each
    assert (title, title_p) == ("cls_fid vs gamma (revised)", "cls_fid vs gamma (VAE proposals)")
    assert series["revised, mean over seeds"] == ([1.0, 2.0], [20.0, 12.0])
    assert series["revised, lowest seed"] == ([1.0, 2.0], [20.0, 10.0])
    assert series_p["VAE proposals, highest seed"] == ([1.0, 2.0], [50.0, 100.0])


def test_seeds_plan_one_run_per_row_and_seed(tmp_path):
    raw = _raw_table()
    raw["scales"]["quick"]["seeds"] = [0, 1]
    raw["scales"]["quick"]["metrics"] = ["cls_fid", "cls_is"]
    raw["config"] = "../mnist_cpu.yaml"
    spec = table_from_dict(raw)
    path = TABLES_DIR / "table9.yaml"  # only its folder is used: configs resolve against it
    runs = plan(spec, path, "quick", tmp_path)
    assert [(r.spec.label, r.seed, r.cfg.seed) for r in runs] == [
        (r.label, s, s) for r in spec.runs for s in (0, 1)]
    assert len({r.run_dir for r in runs}) == len(runs)  # the seed is part of the folder's hash
    assert metric_names(spec, spec.scales.quick) == ["cls_fid", "cls_is"]
    for bad, message in [({"seeds": [1, 1]}, "distinct seeds"), ({"metrics": []}, "non-empty"),
                         ({"metrics": ["completion"]}, "'completion' goes with task")]:
        broken = _raw_table()
        broken["scales"]["quick"].update(bad)
        with pytest.raises(ConfigError, match=message):
            table_from_dict(broken)


def test_report_files_plot_only_sweeps(tmp_path):
    spec = table_from_dict(_raw_table())
    written = write_report(spec, "quick", ["cls_is"], _rows(), tmp_path)
    assert sorted(p.name for p in written) == ["table9.csv", "table9.md", "table9.png"]
    flat = [Row("MNIST", "base setting", {"cls_is": {"revised": 3.0}}, None, "p")]
    assert [p.suffix for p in write_report(spec, "quick", ["cls_is"], flat, tmp_path / "b")] == [".md", ".csv"]


def test_run_state_new_resume_done(tmp_path):
    assert run_state(tmp_path / "missing", 10) == ("new", 0)
    (tmp_path / "config.yaml").write_text("{}")  # interrupted before its first checkpoint
    assert run_state(tmp_path, 10) == ("new", 0)
    write_checkpoint(tmp_path, 6, {})
    assert run_state(tmp_path, 10) == ("resume", 6)
    assert run_state(tmp_path, 6) == ("done", 6)
    assert run_state(tmp_path, 4) == ("done", 6)


def test_tiny_table_trains_reuses_and_resumes(tmp_path, tiny_images, monkeypatch):
    """Two runs of an 8x8 sweep, reconstruction metric: trained, then reused, then resumed."""
    import ebm_vae.training.generation
    import ebm_vae.data.datasets

    data, roots = tmp_path / "mnist", []

    def fake_split(name, root, split="train"):
        roots.append(root)
        images = tiny_images[:12] if split == "train" else tiny_images[12:]
        return images, np.zeros(len(images), np.int64)

    monkeypatch.setattr(ebm_vae.data.datasets, "load_split", fake_split)  # evaluation's data
    monkeypatch.setattr(ebm_vae.training.generation, "load_split", fake_split)  # training's data
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(batch_size=4, num_chains=4)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    table = {"id": "t", "title": "tiny", "metric": "recon", "config": "tiny.yaml",
             "runs": [{"label": f"gamma={g}", "group": "gamma", "x": g, "set": [f"train.gamma={g}"]}
                      for g in (1.0, 2.0)],
             "scales": {"paper": {"num_samples": 0},
                        "quick": {"num_samples": 4, "max_iters": 2, "eval_langevin": "train"}}}
    path = tmp_path / "tablet.yaml"
    path.write_text(yaml.safe_dump(table))
    places = Places(tmp_path / "runs", tmp_path / "results", {"mnist": str(data)})
    args = dict(scale_name="quick", places=places, progress=False)
    reproduce(path, **args, report_only=True)  # nothing trained yet: an empty, marked report
    md = (tmp_path / "results" / "tablet.md").read_text()
    assert ("**Incomplete: 2 runs not in this report yet**: gamma=1.0 seed 3 (not started); "
            "gamma=2.0 seed 3 (not started).") in md and "| gamma=" not in md
    assert "Runs trained with" not in md
    assert not (tmp_path / "runs" / "quick").exists() or not any((tmp_path / "runs" / "quick").iterdir())
    written = reproduce(path, **args)
    assert sorted(p.name for p in written) == ["tablet.csv", "tablet.md", "tablet.png"]
    rows = list(csv.DictReader(open(tmp_path / "results" / "tablet.csv")))
    assert [r["run"] for r in rows] == ["gamma=1.0", "gamma=2.0"]
    assert all(float(r["recon.psnr_revised"]) > 0 and "2 iterations, 4 test images" in r["protocol"] for r in rows)
    assert set(roots) == {str(data)}  # --data-root reached the data loading
    code = short(code_version())  # the commits that trained and evaluated each run
    assert all(r["trained_with"] == code and r["evaluated_with"] == code for r in rows)
    md = (tmp_path / "results" / "tablet.md").read_text()
    assert f"report written by commit {code}. Runs trained with commit {code} (2 runs)" in md
    planned = plan(load_table(path), path, "quick", tmp_path / "runs", {"mnist": str(data)})
    run_dirs = [r.run_dir for r in planned]
    assert [run_state(d, 2) for d in run_dirs] == [("done", 2), ("done", 2)]
    ckpt_times = [(latest_checkpoint(d) / "state.json").stat().st_mtime_ns for d in run_dirs]
    reproduce(path, **args)  # everything reused: no training
    assert [(latest_checkpoint(d) / "state.json").stat().st_mtime_ns for d in run_dirs] == ckpt_times
    full = (tmp_path / "results" / "tablet.csv").read_text()
    reproduce(path, **args, report_only=True)  # from the cache: the same report
    assert (tmp_path / "results" / "tablet.csv").read_text() == full
    assert "Incomplete" not in (tmp_path / "results" / "tablet.md").read_text()
    table["scales"]["quick"]["max_iters"] = 3  # a longer target resumes the same folders
    path.write_text(yaml.safe_dump(table))
    reproduce(path, **args, report_only=True)
    assert "gamma=1.0 seed 3 (at iteration 2 of 3); gamma=2.0 seed 3 (at iteration 2 of 3)" in (
        tmp_path / "results" / "tablet.md").read_text()
    assert [run_state(d, 3) for d in run_dirs] == [("resume", 2), ("resume", 2)]  # untouched
    reproduce(path, **args)
    assert [run_state(d, 3) for d in run_dirs] == [("done", 3), ("done", 3)]
    rows = list(csv.DictReader(open(tmp_path / "results" / "tablet.csv")))
    assert all("3 iterations" in r["protocol"] for r in rows)


def test_classifier_score_is_the_inception_score_of_the_classifier_softmax(tiny_images):
    import paddle
    import paddle.nn.functional as F

    from ebm_vae.eval.classifier import Classifier, TrainedClassifier, predict, quantize
    from ebm_vae.eval.evaluate import classifier_score
    from ebm_vae.eval.metrics import inception_score

    paddle.seed(0)
    net = Classifier(1)
    net.eval()
    clf = TrainedClassifier(net, "mnist", (1, 8, 8), 0.5, {})
    # 200 images: 16 in 10 splits of one image would score 1 whatever the probabilities
    images = np.linspace(-1, 1, 200, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 8, 8),
                                                                                      np.float32)
    images = images * np.linspace(0.2, 1, 8, dtype=np.float32)[None, None, None, :]
    images = images[np.random.default_rng(1).permutation(200)]
    with paddle.no_grad():
        probs = F.softmax(net(paddle.to_tensor(quantize(images))), axis=1).numpy()
    expect = inception_score(probs, splits=10)
    assert classifier_score(clf, images) == pytest.approx(expect, rel=1e-5)
    assert expect[0] > 1.0 + 1e-6 and expect[1] > 0  # the comparison above can tell errors apart
    # closed forms: confident predictions (a scaled-up head) score exp(H(label histogram)) per
    # split; a head of zeros (uniform probabilities) scores exactly 1
    with paddle.no_grad():
        net.head.weight.set_value(paddle.randn(net.head.weight.shape) * 1e7)
        net.head.bias.set_value(paddle.zeros(net.head.bias.shape))
    labels = predict(net, images)[1]
    assert len(set(labels.tolist())) >= 2  # a non-trivial histogram
    per_split = []
    for part in labels.reshape(10, 20):
        hist = np.bincount(part, minlength=10) / 20.0
        per_split.append(np.exp(-sum(p * np.log(p) for p in hist if p > 0)))
    assert classifier_score(clf, images) == pytest.approx((np.mean(per_split), np.std(per_split)),
                                                         rel=1e-4)
    assert np.mean(per_split) > 1.2
    with paddle.no_grad():
        net.head.weight.set_value(paddle.zeros(net.head.weight.shape))
    assert classifier_score(clf, images) == pytest.approx((1.0, 0.0), abs=1e-9)
    with pytest.raises(FileNotFoundError, match="shape"):
        classifier_score(clf, tiny_images[:, :, :4, :4])


def test_dry_run_shows_each_runs_paper_value(tmp_path, capsys):
    from tools.reproduce import main

    assert main(["--table", "1", "--dry-run", "--runs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "== run 'CIFAR-10', seed 0 (paper fid: 36.2): " in text
    assert "== run 'MNIST', seed 0 (paper fid: not recovered): " in text
    assert "== run 'Fashion-MNIST', seed 0 (paper fid: not recovered): " in text
    assert "runs; metrics fid\n" in text
    assert main(["--table", "1", "--scale", "quick", "--dry-run", "--runs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "== run 'CIFAR-10', seed 0 (paper fid: 36.2): " in text
    assert "runs; metrics cls_fid (the paper's metric is fid; classifier metrics are NOT comparable)\n" in text


def test_an_unknown_dataset_in_data_root_is_refused(tmp_path, capsys):
    from tools.reproduce import main

    assert main(["--table", "6", "--scale", "quick", "--dry-run", "--runs", str(tmp_path),
                 "--data-root", "bogus=/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --data-root bogus=/x: unknown dataset")
    assert "mnist, fashion_mnist, cifar10, cmp_facade, paris_street_view" in err
    with pytest.raises(ConfigError, match="no folder after"):
        parse_data_roots(["mnist="])
    assert not any(tmp_path.iterdir())


def test_both_tools_evaluate_through_eval_evaluate(monkeypatch):
    """The one evaluation path: reproduce's runs go through eval.evaluate.evaluate; every table
    metric is in its vocabulary."""
    import tools.evaluate
    from ebm_vae.eval import evaluate as ev
    from ebm_vae.reproduce import pipeline
    from ebm_vae.reproduce.spec import metric_names

    assert pipeline.evaluate is ev.evaluate and tools.evaluate.evaluate is ev.evaluate
    for path in TABLE_FILES:
        spec = load_table(path)
        for scale in (spec.scales.paper, spec.scales.quick):
            assert set(metric_names(spec, scale)) <= {*ev.METRICS, "completion"}


def test_eval_every_without_the_evaluation_hook_is_refused(tiny_raw, tmp_path, tiny_images):
    from ebm_vae.core.config import config_from_dict
    from ebm_vae.training.generation import train_generation
    from ebm_vae.training.stopping import TrainingError

    tiny_raw["eval"] = {"every": 1, "num_samples": 4}
    with pytest.raises(TrainingError, match="evaluation=ebm_vae.eval.evaluate.training_evaluation"):
        train_generation(config_from_dict(tiny_raw), tmp_path / "run", 1, images=tiny_images,
                         progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_being_trained_by_another_process_is_waited_for(tmp_path):
    """Tables share runs: a second trainer of the same folder blocks until the first is done."""
    import threading
    import time

    from ebm_vae.reproduce.pipeline import wait_for_run

    events = []

    def second():
        with wait_for_run(tmp_path / "run"):
            events.append("second")
    with wait_for_run(tmp_path / "run"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        events.append("first done")
    t.join(5)
    assert events == ["first done", "second"]


def test_a_rows_override_replaces_the_tables_value_for_the_same_key():
    assert last_wins(["train.gamma=2.0", "seed=0", "train.gamma=1.0"]) == ["seed=0", "train.gamma=1.0"]
    spec = load_table(TABLES_DIR / "table6_gamma.yaml")
    runs = plan(spec, TABLES_DIR / "table6_gamma.yaml", "quick", Path("unused"))
    for r in runs:
        gammas = [o for o in r.overrides if o.startswith("train.gamma=")]
        assert len(gammas) == 1 and float(gammas[0].split("=")[1]) == r.cfg.train.gamma


def test_the_quick_scale_uses_the_papers_metric_where_the_inception_weights_allow_it():
    fid_table, is_table = load_table(TABLES_DIR / "table1_fid.yaml"), load_table(
        TABLES_DIR / "table2_is.yaml")
    quick, paper = fid_table.scales.quick, fid_table.scales.paper
    assert metric_names(fid_table, quick) == ["cls_fid"]  # no weights: the offline stand-in
    assert metric_names(fid_table, quick, frozenset({"fid"})) == ["fid"]
    assert metric_names(is_table, is_table.scales.quick, frozenset({"fid"})) == ["cls_is"]  # pool3 only
    assert metric_names(is_table, is_table.scales.quick, frozenset({"fid", "is"})) == ["is"]
    assert metric_names(fid_table, paper) == ["fid"]  # the paper scale never falls back


def test_only_fid_names_the_cut_reference_in_its_protocol(tmp_path):
    from ebm_vae.reproduce.pipeline import cache_key, protocol
    path = TABLES_DIR / "table1_fid.yaml"
    spec = load_table(path)
    quick = spec.scales.quick
    run = plan(spec, path, "quick", tmp_path)[0]
    assert "5000 images of the train split" in protocol(run, "fid", quick, 150)
    assert "vs the train split" in protocol(run, "cls_fid", quick, 150)  # its reference: the split
    assert "ref=5000" in cache_key(run, "fid", quick, 150)
    assert "ref=" not in cache_key(run, "cls_fid", quick, 150)
