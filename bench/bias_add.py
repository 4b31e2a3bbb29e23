"""The per-channel bias add of a convolution, Paddle's way ([N, C, H, W] + [1, C, 1, 1]) against
ebm_vae.core.layers' ([N, C, H*W] + [C, 1]), and the EBMs' input gradient with Paddle's conv layers
against the project's (docs/speed.md). Prints a table of milliseconds (minimum of --repeats) and
the ratio Paddle / ours, measured in one process.

    python bench/bias_add.py --threads 1
"""
from __future__ import annotations

import argparse

from ebm_vae.utils.runtime import configure_cpu
from timing import best_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    configure_cpu(args.threads)
    import paddle
    import paddle.nn as nn

    from ebm_vae.core import layers
    from ebm_vae.core.config import load_config
    from ebm_vae.core.langevin import energy_grad, frozen
    from ebm_vae.core.models import build_models

    fast = layers.Conv2D.forward
    rows = []
    y, b = paddle.randn([100, 64, 32, 32]), paddle.randn([64])
    rows.append(("bias add [100, 64, 32, 32]", lambda: y + b.reshape([1, 64, 1, 1]),
                 lambda: layers.add_channel_bias(y, b)))
    for name in ("mnist_cpu", "cifar10_cpu"):
        cfg = load_config(f"experiments/{name}.yaml")
        paddle.seed(0)
        ebm = build_models(cfg.model).ebm
        size = cfg.model.image_size
        x = paddle.randn([64, cfg.model.channels, size, size]) * 0.5

        def grad(forward, ebm=ebm, x=x):
            layers.Conv2D.forward = forward
            with frozen(ebm):
                return energy_grad(ebm, x)
        rows.append((f"{name} df/dx, 64 chains", lambda g=grad: g(nn.Conv2D.forward),
                     lambda g=grad: g(fast)))
    print(f"{'case':34s} {'Paddle ms':>10s} {'ours ms':>10s} {'ratio':>6s}")
    for name, plain, ours in rows:
        a, c = best_ms(plain, args.repeats), best_ms(ours, args.repeats)
        print(f"{name:34s} {a:10.1f} {c:10.1f} {a / c:6.2f}")
    layers.Conv2D.forward = fast


if __name__ == "__main__":
    main()
