"""Candidates for the EBM update's parameter gradient (step 4), none of them kept: d/dtheta of
sum_n s_n f(x_n) for 64 data and 64 revised images (s = -1/64, +1/64, as L_theta), by autograd
(what training runs), by the chain rule written out with forward operations (each conv's weight
gradient as a convolution of its input with the output gradient, dilated by the stride, or as an
im2col matmul), run eagerly and compiled into a oneDNN predictor as core/compiled_grad.py does
for the input gradient, and by `paddle.jit.to_static` of the EBM. Prints milliseconds (minimum of
--repeats) and each candidate's relative L2 distance to autograd (docs/speed.md).

    python bench/param_grad.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

from ebm_vae.utils.runtime import configure_cpu
from timing import best_ms


def param_gradient_layer(ebm, weight_grad: str):
    """(f(x), d(sum_n s_n f(x_n))/dtheta) with theta and s as inputs (EnergyGradient's layout)."""
    import paddle
    import paddle.nn.functional as F

    from ebm_vae.core.compiled_grad import EnergyGradient

    class ParamGradient(EnergyGradient):
        def forward(self, x, s, theta):
            w = self.unpack(theta)
            inputs, pre, h = [], [], x
            for i, (stride, pad, _) in enumerate(self.layers):
                inputs.append(h)
                pre.append(F.conv2d(h, w[2 * i], w[2 * i + 1], stride=stride, padding=pad))
                h = F.leaky_relu(pre[-1], self.slope)
            head_w, head_b = w[-2], w[-1]
            f = F.conv2d(h, head_w, head_b).flatten(1).sum(axis=1)
            sc = s.reshape([-1, 1, 1, 1])
            grads = [paddle.expand((h * sc).sum(axis=0, keepdim=True), head_w.shape),
                     paddle.expand(s.sum().reshape([1]), head_b.shape)]
            g = sc * head_w.sum(axis=0, keepdim=True)  # d(sum s f)/dh_L
            for i in reversed(range(len(self.layers))):
                stride, pad, extra = self.layers[i]
                g = paddle.where(pre[i] > 0, g, g * self.slope)  # leaky ReLU
                k = self.shapes[2 * i][-1]
                padded = F.pad(inputs[i], pad)
                if weight_grad == "conv":  # dW[o, i] = sum_n,y,x g[n, o, y, x] h[n, i, s y + a, s x + b]
                    dw = F.conv2d(padded.transpose([1, 0, 2, 3]), g.transpose([1, 0, 2, 3]),
                                  dilation=stride)[:, :, :k, :k].transpose([1, 0, 2, 3])
                else:
                    cols = F.unfold(padded, [k, k], strides=stride)  # [N, i k k, L]
                    n, o = g.shape[0], g.shape[1]
                    dw = paddle.matmul(g.reshape([n, o, -1]).transpose([1, 0, 2]).reshape([o, -1]),
                                       cols.transpose([0, 2, 1]).reshape([-1, cols.shape[1]]))
                    dw = dw.reshape(self.shapes[2 * i])
                grads = [dw, g.sum(axis=[0, 2, 3])] + grads
                if i > 0:
                    g = F.conv2d_transpose(g, w[2 * i], stride=stride, padding=pad,
                                           output_padding=extra)
            return f, paddle.concat([t.flatten() for t in grads])
    return ParamGradient(ebm)


def rows_for(config: str, repeats: int, threads: int, static_only: bool = False
             ) -> list[tuple[str, float, float]]:
    import paddle

    from ebm_vae.core.compiled_grad import ebm_weights
    from ebm_vae.core.config import load_config
    from ebm_vae.core.models import build_models
    from ebm_vae.utils import onednn

    cfg = load_config(config)
    paddle.seed(0)
    ebm = build_models(cfg.model).ebm
    size, n = cfg.model.image_size, 64
    x = paddle.rand([2 * n, cfg.model.channels, size, size]) * 2 - 1
    s = paddle.to_tensor(np.r_[-np.ones(n), np.ones(n)].astype("float32") / n)
    weights = ebm_weights(ebm)
    theta = paddle.concat([t.flatten() for t in weights])

    def autograd(net):
        def run():
            ebm.clear_gradients()
            (net(x) * s).sum().backward()
            return np.concatenate([t.grad.numpy().ravel() for t in weights])
        return run
    exact = autograd(ebm)()

    def row(name, fn, grad):
        gap = np.linalg.norm(grad - exact) / np.linalg.norm(exact)
        return (name, best_ms(fn, repeats), gap)
    rows = [row("autograd (training's path)", autograd(ebm), exact)]
    static = paddle.jit.to_static(build_models(cfg.model).ebm, full_graph=True)
    static.set_state_dict(ebm.state_dict())
    weights_static = ebm_weights(static)

    def static_run():
        static.clear_gradients()
        (static(x) * s).sum().backward()
        return np.concatenate([t.grad.numpy().ravel() for t in weights_static])
    rows.append(row("paddle.jit.to_static, autograd", static_run, static_run()))
    if static_only:
        return rows
    specs = [paddle.static.InputSpec([None, cfg.model.channels, size, size], "float32"),
             paddle.static.InputSpec([None], "float32"),
             paddle.static.InputSpec([theta.shape[0]], "float32")]
    feed = [x.numpy(), s.numpy(), theta.numpy()]
    for weight_grad in ("conv", "im2col"):
        layer = param_gradient_layer(ebm, weight_grad)
        rows.append(row(f"written out ({weight_grad}), eager", lambda: layer(x, s, theta),
                        layer(x, s, theta)[1].numpy()))
        predictor = onednn.build_predictor(param_gradient_layer(ebm, weight_grad), specs, threads)
        rows.append(row(f"written out ({weight_grad}), oneDNN predictor",
                        lambda: onednn.run(predictor, feed), onednn.run(predictor, feed)[1]))
    return rows


def static_onednn(config: str, repeats: int, threads: int) -> str:
    """The to_static row with FLAGS_use_mkldnn=1, in a child process (it may crash)."""
    env = dict(os.environ, FLAGS_use_mkldnn="1")
    done = subprocess.run([sys.executable, __file__, "--configs", config, "--repeats", str(repeats),
                           "--threads", str(threads), "--child"], env=env, capture_output=True,
                          text=True)
    lines = done.stdout.split()
    if done.returncode == 0 and lines:
        return f"{float(lines[-1]):8.1f}"
    why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
    return f"fails ({why})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--configs", nargs="+", default=["experiments/mnist_cpu.yaml",
                                                     "experiments/cifar10_cpu.yaml"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    configure_cpu(args.threads)
    if args.child:
        print(rows_for(args.configs[0], args.repeats, args.threads, static_only=True)[-1][1])
        return
    print(f"{'config':20s} {'candidate':42s} {'ms':>8s} {'vs autograd':>12s} {'rel. L2':>8s}")
    for config in args.configs:
        rows = rows_for(config, args.repeats, args.threads)
        for name, ms, gap in rows:
            print(f"{os.path.basename(config):20s} {name:42s} {ms:8.1f} {rows[0][1] / ms:11.2f}x "
                  f"{gap:8.1e}", flush=True)
        print(f"{os.path.basename(config):20s} {'paddle.jit.to_static, FLAGS_use_mkldnn=1':42s} "
              f"{static_onednn(config, args.repeats, args.threads)}", flush=True)


if __name__ == "__main__":
    main()
