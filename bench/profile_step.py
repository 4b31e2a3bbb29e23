#!/usr/bin/env python
"""Where the CPU time of a training iteration goes: per EBM layer and op, and per phase.

Per layer of the EBM (at `--chains` images): the convolution alone, + its bias add, + the leaky
ReLU, each forward only and forward + input gradient (what a Langevin step computes), next to one
matmul of the layer's im2col size (the arithmetic at the machine's matmul rate). Per phase of one
`teach_step`: decoding the proposals, the Langevin steps, the EBM update (forward + backward +
Adam), the VAE update and the host syncs of the statistics. Times are the minimum of `--repeats`.

  python bench/profile_step.py --configs experiments/mnist.yaml --threads 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from timing import best_ms  # noqa: E402


def layer_rows(ebm, x, slope: float, repeats: int) -> list[tuple[str, list[float]]]:
    """[(layer name, [conv, +bias, +act forward; the same with the input gradient; matmul])]."""
    import paddle
    import paddle.nn.functional as F

    rows = []
    convs = [m for m in ebm.features if isinstance(m, paddle.nn.Conv2D)] + [ebm.head]
    for i, conv in enumerate(convs):
        last = conv is ebm.head
        stages = [lambda v, c=conv: F.conv2d(v, c.weight, None, c._stride, c._padding),
                  lambda v, c=conv: c(v),
                  lambda v, c=conv: c(v) if last else F.leaky_relu(c(v), slope)]
        times = [best_ms(lambda s=s: float(s(x).sum()), repeats) for s in stages]
        times += [best_ms(lambda s=s: float(_input_grad(s, x).sum()), repeats) for s in stages]
        y = conv(x)
        k = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
        a = paddle.randn([y.shape[0] * y.shape[2] * y.shape[3], k])
        b = paddle.randn([k, conv.weight.shape[0]])
        times.append(best_ms(lambda: float((a @ b).sum()), repeats))
        rows.append((f"{'head' if last else f'conv{i + 1}'} {list(conv.weight.shape)}", times))
        x = y if last else F.leaky_relu(y, slope)
    return rows


def _input_grad(fn, x):
    import paddle
    v = x.detach()
    v.stop_gradient = False
    return paddle.grad(fn(v).sum(), v)[0]


def phase_rows(cfg, models, repeats: int) -> list[tuple[str, float]]:
    """ms of each phase of one teach_step (each ends in a host sync, so they add up)."""
    import paddle

    from ebm_vae.core.langevin import langevin
    from ebm_vae.core.teach import ebm_loss, make_optimizers, vae_loss

    t, m, lv = cfg.train, cfg.model, cfg.langevin
    opt_e, opt_v = make_optimizers(models, t)
    x_data = paddle.uniform([t.batch_size, m.channels, m.image_size, m.image_size], min=-1.0, max=1.0)
    with paddle.no_grad():
        x_hat = models.decoder(paddle.randn([t.num_chains, m.latent_dim]))
    x_tilde = langevin(models.ebm, x_hat, lv)

    def decode():
        with paddle.no_grad():
            float(models.decoder(paddle.randn([t.num_chains, m.latent_dim])).sum())

    def update(opt, loss):
        opt.clear_grad()
        loss.backward()
        opt.step()
        float(loss)

    return [("decode g(z)", best_ms(decode, repeats)),
            (f"Langevin ({lv.steps} steps)", best_ms(lambda: float(langevin(models.ebm, x_hat, lv).sum()), repeats)),
            ("EBM update (f on data and samples, backward, Adam)",
             best_ms(lambda: update(opt_e, ebm_loss(models.ebm, x_data, x_tilde)[0]), repeats)),
            ("VAE update (encoder, decoder, backward, Adam)",
             best_ms(lambda: update(opt_v, vae_loss(models.encoder, models.decoder, x_tilde, t.gamma)[0]), repeats)),
            ("host syncs (8 statistics)", best_ms(lambda: [float(x_tilde.abs().max()) for _ in range(8)], repeats))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", type=Path,
                   default=[ROOT / "experiments" / "mnist.yaml", ROOT / "experiments" / "cifar10.yaml"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chains", type=int, default=100, help="chains = data images (default 100)")
    p.add_argument("--steps", type=int, default=5, help="Langevin steps of the phase profile")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import paddle

    from ebm_vae.core.config import load_config
    from ebm_vae.core.models import build_models
    from ebm_vae.utils.runtime import configure_cpu, seed_all

    configure_cpu(args.threads)
    for path in args.configs:
        cfg = load_config(path, [f"train.num_chains={args.chains}", f"train.batch_size={args.chains}",
                                 f"langevin.steps={args.steps}"])
        seed_all(0)
        models = build_models(cfg.model)
        m = cfg.model
        x = paddle.uniform([args.chains, m.channels, m.image_size, m.image_size], min=-1.0, max=1.0)
        print(f"## {path.stem}, {args.chains} images, {args.threads} thread(s); ms")
        print("layer | conv | +bias | +act | conv dx | +bias dx | +act dx | matmul")
        for name, times in layer_rows(models.ebm, x, m.leaky_slope, args.repeats):
            print(name + " | " + " | ".join(f"{v:.1f}" for v in times), flush=True)
        for name, ms in phase_rows(cfg, models, args.repeats):
            print(f"{name} | {ms:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
