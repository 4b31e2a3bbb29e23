"""The tensors of a TorchScript file, read without torch.

A TorchScript file (`torch.jit.save`) is a zip: `<dir>/data.pkl` pickles the module tree, each
sub-module an object of a class under `__torch__` whose state is a dict of its attributes (sub-modules,
tensors, plain values) in declaration order; each tensor is `torch._utils._rebuild_tensor_v2` of a
storage, given as a persistent id ('storage', torch.FloatStorage, key, location, numel) whose bytes
are the zip member `<dir>/data/<key>` (little-endian), plus offset, size and stride. The code
(`<dir>/code/`) is not read.

The unpickler is restricted: TorchScript objects become plain attribute dicts and only the tensor
rebuild, the storage types, `collections.OrderedDict` and `torch.jit._pickle.build_intlist` are
allowed; any other global is refused, so the pickle can run no code.
"""
from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ebm_vae.errors import UserError

STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                  "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
                  "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}


class TorchFileError(UserError, ValueError):
    """A file that is not a readable TorchScript zip; the message names the file (and tensor)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor not yet read: a view (offset, size, stride in elements) of a storage."""
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


class _ScriptObject:
    """A TorchScript object (module): its attributes, in order."""

    def __setstate__(self, state: dict) -> None:
        self.attrs = dict(state)


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_unused) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2 (requires_grad, hooks, metadata ignored)."""
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("collections", "OrderedDict"): OrderedDict,
            ("torch.jit._pickle", "build_intlist"): list}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(np.dtype(STORAGE_DTYPES[name]))
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        raise TorchFileError(f"{self.source}: refusing to unpickle {module}.{name} (only tensors "
                             "and TorchScript modules are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"{self.source}: unknown persistent id {str(pid)[:60]}")
        return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _walk(obj, name: str) -> Iterator[tuple[str, _TensorRef]]:
    """(dotted attribute path, tensor) of every tensor under `obj`, depth first, in order."""
    if isinstance(obj, _TensorRef):
        yield name, obj
        return
    if isinstance(obj, _ScriptObject):
        obj = obj.attrs
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, (list, tuple)) else ())
    for key, value in items:
        yield from _walk(value, f"{name}.{key}" if name else str(key))


def _array(archive: zipfile.ZipFile, folder: str, name: str, ref: _TensorRef,
           source: str) -> np.ndarray:
    """The tensor `ref` read from its storage record, checked against the record's size."""
    where, member = f"{source}: tensor {name}", f"{folder}data/{ref.storage.key}"
    try:
        raw = archive.read(member)
    except KeyError:
        raise TorchFileError(f"{where}: its data {member} is missing (truncated file?)") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise TorchFileError(f"{where}: cannot read {member} ({err}); damaged file?") from err
    item = ref.storage.dtype.itemsize
    if len(raw) != ref.storage.numel * item:
        raise TorchFileError(f"{where}: {member} has {len(raw)} bytes, expected "
                             f"{ref.storage.numel * item} (truncated file?)")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or (all(ref.size) and last >= ref.storage.numel):
        raise TorchFileError(f"{where}: size {ref.size} / stride {ref.stride} at offset "
                             f"{ref.offset} runs past its storage of {ref.storage.numel}")
    flat = np.frombuffer(raw, ref.storage.dtype)[ref.offset:]
    view = np.lib.stride_tricks.as_strided(flat, ref.size, [s * item for s in ref.stride])
    return view.astype(ref.storage.dtype.newbyteorder("="), copy=True)


def _open(src: str | Path | bytes, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(src) if isinstance(src, bytes) else src)
    except (zipfile.BadZipFile, OSError) as err:
        raise TorchFileError(f"{source} is not a complete zip file ({err}); a truncated "
                             "download or another format?") from err


def read_tensors(src: str | Path | bytes, source: str = "") -> list[tuple[str, np.ndarray]]:
    """(attribute path, array) of every tensor of a TorchScript file (path or bytes), in the
    order of the module tree (e.g. `net.layers.conv.weight`). `source` names it in errors."""
    source = source or ("the TorchScript bytes" if isinstance(src, bytes) else str(src))
    with _open(src, source) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchFileError(f"{source} is a zip but not a TorchScript file (no single "
                                 "<dir>/data.pkl)")
        folder = pickles[0][:-len("data.pkl")]
        order = f"{folder}byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise TorchFileError(f"{source}: big-endian tensors are not supported")
        try:
            root = _Unpickler(archive.read(pickles[0]), source).load()
        except TorchFileError:
            raise
        except Exception as err:  # a damaged pickle raises assorted types
            raise TorchFileError(f"{source}: cannot unpickle {pickles[0]}: {err}") from err
        return [(name, _array(archive, folder, name, ref, source)) for name, ref in _walk(root, "")]
