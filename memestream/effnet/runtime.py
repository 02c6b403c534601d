"""EfficientNet-Lite0 embeddings at run time: preprocessing and one ONNX Runtime session.

What a Spark Python worker imports to embed images: numpy, OpenCV and ``onnxruntime`` (on
first use), never ``onnx`` nor the weights reader. The graph it runs is built once, when a
model is trained, by :mod:`memestream.effnet.graph`; the names and sizes both sides agree on
(input and output names, input side and normalisation) are defined here.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from memestream.errors import DataError, ModelError

EMBED_DIM = 1280
INPUT_SIDE = 224
NUM_CLASSES = 1000
#: Input normalisation of the TF EfficientNet-Lite checkpoints: (rgb - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
INPUT_NAME = "image"
EMBED_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"
#: Images per session.run call. Measured on one thread: throughput is flat from 1 to 32 (4 was
#: marginally best) while activations cost ~11 MB of RSS per image in flight, so keep it small.
DEFAULT_CHUNK = 4


def _to_rgb(img: np.ndarray, index: int, side: int = INPUT_SIDE) -> np.ndarray:
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
    small = cv2.resize(np.ascontiguousarray(img), (side, side), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB if small.ndim == 2 else cv2.COLOR_BGR2RGB)


def preprocess(images_bgr: Sequence[np.ndarray], side: int = INPUT_SIDE) -> np.ndarray:
    """uint8 BGR (as cv2 decodes), BGRA or grayscale images -> float32 (n, 3, side, side)
    network input (224 for Lite0; the graph's own input side for the larger variants)."""
    n = len(images_bgr)
    rgb = np.empty((n, side, side, 3), dtype=np.uint8)
    for i, img in enumerate(images_bgr):
        rgb[i] = _to_rgb(img, i, side)
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
        shape_in = list(inputs[0].shape[1:]) if len(inputs) == 1 else []
        ok_input = (len(inputs) == 1 and inputs[0].name == INPUT_NAME and len(shape_in) == 3 and shape_in[0] == 3
                    and isinstance(shape_in[1], int) and shape_in[1] == shape_in[2] and shape_in[1] >= 32)
        #: the graph's input side: 224 (Lite0), 240 (Lite1), 260 (Lite2)
        self.side = int(shape_in[1]) if ok_input else INPUT_SIDE
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
            out[start : start + len(part)] = self._session.run([output], {INPUT_NAME: preprocess(part, self.side)})[0]
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
    ``sparkfiles:NAME`` is a graph shipped with ``SparkContext.addFile`` (a model read from
    a Hadoop URI, :func:`memestream.uris.local_asset`).
    """
    from memestream.uris import local_asset

    path = Path(local_asset(onnx_path))
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
