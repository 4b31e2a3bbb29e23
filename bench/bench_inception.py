"""Time the FID Inception's pool3 features on CPU: Paddle eager (dygraph) vs the oneDNN predictor
of `ebm_vae.eval.inception_onednn`, on the same images, and how far apart their features are.

    python bench/bench_inception.py                      # 128 CIFAR-sized random images, 1 thread
    python bench/bench_inception.py --images 256 --threads 2 --weights FILE

Prints one table: seconds per image (build time of the predictor separately), the speed ratio
measured in this run, and the largest absolute difference of the pool3 features. Without
converted weights (see `tools/convert_inception.py`) the network keeps its random init.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import paddle

from ebm_vae.errors import UserError
from ebm_vae.eval import inception_onednn
from ebm_vae.eval.inception import FIDInceptionV3, load_inception, preprocess
from ebm_vae.utils.runtime import configure_cpu


def network(weights: str | None) -> tuple[FIDInceptionV3, str]:
    """The FID Inception with converted weights if any, else random init (said in the table)."""
    try:
        return load_inception(weights), "converted FID weights"
    except UserError:
        net = FIDInceptionV3(logits=False)
        net.eval()
        return net, "random init (no converted weights)"


def timed(fn, batches: list[paddle.Tensor]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.concatenate([fn(x) for x in batches])
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128, help="images to embed (default 128)")
    ap.add_argument("--batch", type=int, default=50, help="batch size (default 50, as FID)")
    ap.add_argument("--threads", type=int, default=1, help="math threads (default 1)")
    ap.add_argument("--weights", default=None, help="converted .pdparams (default: the cache's)")
    args = ap.parse_args()
    configure_cpu(args.threads)
    net, label = network(args.weights)
    images = np.random.RandomState(0).uniform(-1, 1, (args.images, 3, 32, 32)).astype(np.float32)
    batches = [preprocess(images[i:i + args.batch]) for i in range(0, args.images, args.batch)]
    with paddle.no_grad():
        t_eager, f_eager = timed(lambda x: net(x).numpy(), batches)
        start = time.perf_counter()
        inception_onednn.forward(net, batches[0][:1], args.threads)  # builds the predictor
        t_build = time.perf_counter() - start
        t_fast, f_fast = timed(lambda x: inception_onednn.forward(net, x, args.threads), batches)
    n = args.images
    print(f"FID Inception pool3, {n} images, batch {args.batch}, {args.threads} thread(s), "
          f"{label}, Paddle {paddle.__version__}")
    print(f"{'path':<22}{'s/image':>10}{'build s':>10}{'speed':>8}")
    print(f"{'eager (dygraph)':<22}{t_eager / n:>10.3f}{'-':>10}{1.0:>8.2f}")
    print(f"{'oneDNN predictor':<22}{t_fast / n:>10.3f}{t_build:>10.1f}{t_eager / t_fast:>8.2f}")
    print(f"max |pool3 eager - pool3 oneDNN| = {np.abs(f_eager - f_fast).max():.2e} "
          f"(pool3 scale: max {np.abs(f_eager).max():.2f})")


if __name__ == "__main__":
    main()
