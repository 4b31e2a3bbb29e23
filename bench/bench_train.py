#!/usr/bin/env python
"""Benchmark Langevin revision, teach_step and sampling against this machine's matmul ceiling.

For each experiment config (real batch and chain sizes unless --quick) and each runtime setting
it reports: seconds per Langevin step, per whole teach_step, sampling images/s, achieved GFLOP/s
from an analytic count of the layers' multiply-adds, the numpy float32 matmul rate measured in
the same worker (the ceiling), their ratio, and the worker's peak memory. Each case runs in its
own subprocess (clean thread settings, own peak RSS). Where PyTorch is installed, the same EBM in
PyTorch is timed as a second reference. The last line is
`langevin_share=<x> step_share=<y>` (achieved / ceiling, first config, tuned runtime).

  python bench/bench_train.py --quick
  python bench/bench_train.py --cases paddle-default,tuned --repeats 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "experiments" / "mnist.yaml", ROOT / "experiments" / "cifar10.yaml"]
# name -> (configure_cpu applied?, threads, langevin.gradient); "tuned" is what the tools run
CASES = {"paddle-default": (False, None, "autograd"), "tuned": (True, None, "auto"),
         "tuned-1thread": (True, 1, "auto"), "tuned-autograd": (True, None, "autograd"),
         "tuned-autograd-1thread": (True, 1, "autograd")}
QUICK = {"chains": 100, "batch": 100, "steps": 5, "sample_steps": 5}


# ---------------------------------------------------------------- analytic FLOP count

def conv_stack_macs(layers, size: int, cin: int) -> tuple[int, int, int]:
    """Multiply-adds of a 'SAME' conv stack on one image; also its output size and channels."""
    macs = 0
    for layer in layers:
        size = math.ceil(size / layer.stride)
        macs += size * size * layer.channels * cin * layer.kernel ** 2
        cin = layer.channels
    return macs, size, cin


def ebm_macs(m) -> int:
    """Multiply-adds of one EBM forward pass on one image ('SAME' convs, then the 'valid' head)."""
    macs, size, cin = conv_stack_macs(m.ebm.conv, m.image_size, m.channels)
    return macs + size * size * cin * m.ebm.out_dim


def encoder_macs(m) -> int:
    macs, size, cin = conv_stack_macs(m.encoder.conv, m.image_size, m.channels)
    return macs + 2 * size * size * cin * m.latent_dim  # mean and log-sigma heads


def decoder_macs(m) -> int:
    """Transposed convs: every input pixel scatters a kernel x kernel x out-channels patch."""
    size, cin, macs = 1, m.latent_dim, 0
    for layer in m.decoder.layers:
        macs += size * size * cin * layer.channels * layer.kernel ** 2
        size, cin = layer.out_size(size), layer.channels
    return macs


def flops(m, chains: int, batch: int, steps: int) -> dict[str, float]:
    """FLOPs (2 per multiply-add). Langevin: forward + input gradient (2 x forward) per chain and
    step. Training: forward + backward (backward = 2 x forward) for the EBM on data and samples and
    for the encoder and decoder on the samples, plus the decoder's proposal forward pass."""
    e, q, g = ebm_macs(m), encoder_macs(m), decoder_macs(m)
    lstep = 2 * 2 * e * chains
    train = 2 * (3 * e * (batch + chains) + 3 * (q + g) * chains + g * chains)
    return {"langevin_step": lstep, "teach_step": steps * lstep + train}


# ---------------------------------------------------------------- worker (one case, subprocess)

def matmul_rate(n: int = 2048, repeats: int = 3) -> float:
    """numpy float32 n x n matmul rate in GFLOP/s (best of `repeats`)."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_paddle(spec: dict) -> dict:
    import paddle

    from ebm_vae.core.config import load_config
    from ebm_vae.core.langevin import langevin
    from ebm_vae.core.models import build_models
    from ebm_vae.core.teach import make_optimizers, teach_step
    from ebm_vae.utils.runtime import configure_cpu, seed_all, set_device

    set_device(spec["device"])
    applied = configure_cpu(spec["threads"]) if spec["tuned"] and spec["device"] == "cpu" else {}
    ceiling = matmul_rate()
    cfg = load_config(spec["config"], spec["overrides"])
    seed_all(0)
    models = build_models(cfg.model)
    t, lv, m = cfg.train, cfg.langevin, cfg.model
    optimizers = make_optimizers(models, t)
    shape = [m.channels, m.image_size, m.image_size]
    x_data = paddle.uniform([t.batch_size] + shape, min=-1.0, max=1.0)
    x0 = paddle.uniform([t.num_chains] + shape, min=-1.0, max=1.0)
    k = min(lv.steps, 3) or 1

    def lsteps():
        float(langevin(models.ebm, x0, lv, k).sum())

    def step():
        teach_step(models, optimizers, x_data, cfg, t.num_chains)

    def sample():
        with paddle.no_grad():
            x = models.decoder(paddle.randn([t.num_chains, m.latent_dim]))
        float(langevin(models.ebm, x, lv, cfg.sample.steps).sum())

    out = {"applied": applied}
    for name, fn, per in [("langevin_step", lsteps, k), ("teach_step", step, 1), ("sample", sample, 1)]:
        fn()  # warm-up
        out[name] = min(_timed(fn) for _ in range(spec["repeats"])) / per
    out["ceiling"] = max(ceiling, matmul_rate())
    if spec["device"] == "gpu":
        out["gpu_peak_mib"] = paddle.device.cuda.max_memory_allocated() / 2 ** 20
    return out


def run_torch(spec: dict) -> dict:
    """The same EBM (TF 'SAME' convs + leaky ReLU + valid head) in PyTorch: Langevin step only."""
    import torch
    import torch.nn.functional as F

    from ebm_vae.core.config import load_config
    from ebm_vae.utils.runtime import default_threads

    torch.set_num_threads(spec["threads"] or default_threads())  # as the tuned Paddle case
    ceiling = matmul_rate()
    cfg = load_config(spec["config"], spec["overrides"])
    m, lv = cfg.model, cfg.langevin
    size, cin, layers = m.image_size, m.channels, []
    for layer in m.ebm.conv:
        out = math.ceil(size / layer.stride)
        pad = max((out - 1) * layer.stride + layer.kernel - size, 0)
        w = torch.randn(layer.channels, cin, layer.kernel, layer.kernel) * m.init_std
        layers.append((w, torch.zeros(layer.channels), layer.stride,
                       (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)))
        size, cin = out, layer.channels
    head = torch.randn(m.ebm.out_dim, cin, size, size) * m.init_std

    def f(x):
        for w, b, s, p in layers:
            x = F.leaky_relu(F.conv2d(F.pad(x, p), w, b, s), m.leaky_slope)
        return F.conv2d(x, head).sum()

    x = torch.rand(cfg.train.num_chains, m.channels, m.image_size, m.image_size) * 2 - 1
    k = min(lv.steps, 3) or 1

    def lsteps():
        y = x
        for _ in range(k):
            y = y.detach().requires_grad_(True)
            g, = torch.autograd.grad(f(y), y)
            y = y + 0.5 * lv.step_size ** 2 * (g - y / lv.ref_sigma ** 2) + lv.step_size * torch.randn_like(y)
        float(y.sum())

    lsteps()
    best = min(_timed(lsteps) for _ in range(spec["repeats"])) / k
    return {"langevin_step": best, "ceiling": max(ceiling, matmul_rate()), "applied": {}}


def worker(spec: dict) -> None:
    import resource
    result = run_torch(spec) if spec["framework"] == "torch" else run_paddle(spec)
    result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- driver

def run_case(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {spec['case']} on {spec['config']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def overrides_for(quick: bool, chains: int | None, steps: int | None) -> list[str]:
    o = []
    c = chains or (QUICK["chains"] if quick else None)
    if c:
        o += [f"train.num_chains={c}", f"train.batch_size={c}"]
    s = steps or (QUICK["steps"] if quick else None)
    if s:
        o += [f"langevin.steps={s}", f"sample.steps={s}"]
    return o


def has_torch() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", type=Path, default=CONFIGS, help="experiment YAML files")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['chains']} chains and data images, {QUICK['steps']} Langevin steps "
                   "(the table says what was used)")
    p.add_argument("--chains", type=int, help="override num_chains and batch_size")
    p.add_argument("--steps", type=int, help="override langevin.steps and sample.steps")
    p.add_argument("--cases", default="tuned-autograd,tuned",
                   help=f"comma-separated runtime settings, from: {', '.join(CASES)} (+ torch if installed)")
    p.add_argument("--threads", type=int, help="threads for the tuned cases (default: all cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (min is kept)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="Paddle device (on gpu the ceiling column stays the CPU numpy rate)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    from ebm_vae.core.config import load_config
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from {list(CASES)}")
    if has_torch() and not args.no_torch and args.device == "cpu":
        cases.append("torch")
    overrides = overrides_for(args.quick, args.chains, args.steps)
    print(f"# load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"overrides: {' '.join(overrides) or 'none (real sizes)'}; min of {args.repeats}", flush=True)
    head = (f"{'config':8} {'case':15} {'chains':>6} {'steps':>5} {'s/Lstep':>8} {'s/teach':>8} "
            f"{'img/s':>7} {'L GF/s':>7} {'T GF/s':>7} {'np GF/s':>7} {'L share':>7} {'T share':>7} {'MiB':>6}")
    print(head)
    rows, final = [], None
    for path in args.configs:
        cfg = load_config(path, overrides)
        fl = flops(cfg.model, cfg.train.num_chains, cfg.train.batch_size, cfg.langevin.steps)
        for case in cases:
            tuned, threads, gradient = CASES.get(case, (False, None, "autograd"))
            spec = {"case": case, "config": str(path), "repeats": args.repeats,
                    "overrides": overrides + [f"langevin.gradient={gradient}"],
                    "framework": "torch" if case == "torch" else "paddle", "tuned": tuned,
                    "threads": threads or args.threads, "device": args.device}
            r = run_case(spec)
            lgf = fl["langevin_step"] / r["langevin_step"] / 1e9
            tgf = fl["teach_step"] / r["teach_step"] / 1e9 if "teach_step" in r else float("nan")
            ips = cfg.train.num_chains / r["sample"] if "sample" in r else float("nan")
            row = {"config": path.stem, "case": case, "chains": cfg.train.num_chains,
                   "steps": cfg.langevin.steps, **r, "langevin_gflops": lgf, "teach_gflops": tgf,
                   "images_per_s": ips, "langevin_share": lgf / r["ceiling"],
                   "step_share": tgf / r["ceiling"]}
            rows.append(row)
            print(f"{path.stem:8} {case:15} {row['chains']:>6} {row['steps']:>5} "
                  f"{r['langevin_step']:8.3f} {r.get('teach_step', float('nan')):8.2f} {ips:7.1f} "
                  f"{lgf:7.1f} {tgf:7.1f} {r['ceiling']:7.1f} {row['langevin_share']:7.2f} "
                  f"{row['step_share']:7.2f} {r['maxrss_mib']:6.0f}", flush=True)
            if final is None and case == "tuned":
                final = row
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    final = final or next(r for r in rows if r["case"] != "torch")
    print(f"langevin_share={final['langevin_share']:.3f} step_share={final['step_share']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
