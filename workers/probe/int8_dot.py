"""int8 conv / dense kernels in the layout a dot-product instruction wants.

x86 AVX-512 VNNI (``vpdpbusd``) multiplies 4 unsigned bytes of the activation by 4 signed bytes
of each of 16 output channels and adds them into 16 int32 lanes; ARMv8.2 ``sdot`` does the same
with signed bytes and 4 output channels. MetaSchedule tensorizes a block with those
instructions (TVM's ``dot_16x4_vnni`` / ``dot_4x4_i8i8s32_sdot`` intrinsics, applied by its
default x86 / ARM rules when the target has the feature) only when the block's reduction is
over 4 contiguous input channels and its weights are a compact (out block, 4) tile. So on such
a profile an int8 conv (groups = 1) or dense becomes:

- activations in NHWC (channels last), padded with zeros to a multiple of 4 channels; on VNNI
  as uint8 (the calibrated uint8 levels themselves), on ARM as int8 (levels - 128);
- weights packed as ``[OC/B, KH, KW, IC/4, B, 4]`` int8 (B = 16 on VNNI, 4 on ARM; padded
  output channels have zero weights and are sliced off) by pad / reshape / transpose ops on
  the weight constant, which constant folding turns into the packed constant at compile time;
- an int32 accumulator ``[N, OH, OW, OC/B, B]``, reshaped, sliced and transposed back to NCHW
  for the requantization.

Depthwise and grouped convs keep the plain path (a 3x3 depthwise reduction is 9 products per
output: nothing for a 4-wide dot product to pack).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PATHS = ("vnni", "sdot")


def out_block(path: str) -> int:
    """Output channels per dot-product tile: 16 (VNNI, 512-bit) or 4 (ARM, 128-bit)."""
    return 16 if path == "vnni" else 4


def act_dtype(path: str) -> str:
    """The activation dtype the instruction multiplies: uint8 (VNNI) or int8 (sdot)."""
    return "uint8" if path == "vnni" else "int8"


def _ceil(n: int, m: int) -> int:
    return -(-n // m) * m


def pack_conv_weight(w: np.ndarray, path: str) -> np.ndarray:
    """int8 ``[OC, IC, KH, KW]`` -> ``[OC/B, KH, KW, IC/4, B, 4]``, zero-padded."""
    ob = out_block(path)
    oc, ic, kh, kw = w.shape
    padded = np.zeros((_ceil(oc, ob), _ceil(ic, 4), kh, kw), dtype=np.int8)
    padded[:oc, :ic] = w
    p = padded.reshape(-1, ob, padded.shape[1] // 4, 4, kh, kw)
    return np.ascontiguousarray(p.transpose(0, 4, 5, 2, 1, 3))


def pack_dense_weight(w: np.ndarray, path: str) -> np.ndarray:
    """int8 ``[N, K]`` -> ``[N/B, K/4, B, 4]``, zero-padded."""
    ob = out_block(path)
    n, k = w.shape
    padded = np.zeros((_ceil(n, ob), _ceil(k, 4)), dtype=np.int8)
    padded[:n, :k] = w
    p = padded.reshape(-1, ob, padded.shape[1] // 4, 4)
    return np.ascontiguousarray(p.transpose(0, 2, 1, 3))


def _conv_te(stride: list[int], dilation: list[int]) -> Any:
    from tvm import te

    sh, sw = stride
    dh, dw = dilation

    def conv(x: Any, w: Any) -> Any:
        n, h, wd, _ = x.shape
        oco, kh, kw, ico, ob, ib = w.shape
        oh = (h - (kh - 1) * dh - 1) // sh + 1
        ow = (wd - (kw - 1) * dw - 1) // sw + 1
        ry = te.reduce_axis((0, kh), "ry")
        rx = te.reduce_axis((0, kw), "rx")
        rco = te.reduce_axis((0, ico), "rco")
        rci = te.reduce_axis((0, ib), "rci")
        return te.compute(
            (n, oh, ow, oco, ob),
            lambda b, i, j, o, oi: te.sum(
                x[b, i * sh + ry * dh, j * sw + rx * dw, rco * ib + rci].astype("int32")
                * w[o, ry, rx, rco, oi, rci].astype("int32"),
                axis=[ry, rx, rco, rci],
            ),
            name="qconv2d_dot",
        )

    return conv


def _dense_te(x: Any, w: Any) -> Any:
    from tvm import te

    n, _ = x.shape
    no, ko, ob, ib = w.shape
    rko = te.reduce_axis((0, ko), "rko")
    rki = te.reduce_axis((0, ib), "rki")
    return te.compute(
        (n, no, ob),
        lambda b, o, oi: te.sum(
            x[b, rko * ib + rki].astype("int32") * w[o, rko, oi, rki].astype("int32"),
            axis=[rko, rki],
        ),
        name="qdense_dot",
    )


def _shape(expr: Any) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _pack_conv(bb: Any, w: Any, path: str) -> Any:
    """Relax ops computing :func:`pack_conv_weight` of the int8 ``[OC, IC, KH, KW]`` ``w``."""
    from tvm import relax

    e, ob = bb.emit, out_block(path)
    oc, ic, kh, kw = _shape(w)
    if oc % ob or ic % 4:
        pad = [0, _ceil(oc, ob) - oc, 0, _ceil(ic, 4) - ic, 0, 0, 0, 0]
        w = e(relax.op.nn.pad(w, pad, pad_value=0.0))
    w = e(relax.op.reshape(w, [_ceil(oc, ob) // ob, ob, _ceil(ic, 4) // 4, 4, kh, kw]))
    return e(relax.op.permute_dims(w, [0, 4, 5, 2, 1, 3]))


def _pack_dense(bb: Any, w: Any, path: str) -> Any:
    """Relax ops computing :func:`pack_dense_weight` of the int8 ``[N, K]`` ``w``."""
    from tvm import relax

    e, ob = bb.emit, out_block(path)
    n, k = _shape(w)
    if n % ob or k % 4:
        w = e(relax.op.nn.pad(w, [0, _ceil(n, ob) - n, 0, _ceil(k, 4) - k], pad_value=0.0))
    w = e(relax.op.reshape(w, [_ceil(n, ob) // ob, ob, _ceil(k, 4) // 4, 4]))
    return e(relax.op.permute_dims(w, [0, 2, 1, 3]))


def emit_conv(bb: Any, xq: Any, w: Any, stride: list[int], dilation: list[int], path: str) -> Any:
    """The int32 accumulator (NCHW) of an already padded, quantized NCHW input ``xq`` and the
    int8 ``[OC, IC, KH, KW]`` weights ``w`` (groups = 1)."""
    from tvm import relax

    e = bb.emit
    oc, ic = _shape(w)[:2]
    x = e(relax.op.permute_dims(xq, [0, 2, 3, 1]))
    if ic % 4:
        x = e(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 0, 0, _ceil(ic, 4) - ic], pad_value=0.0))
    packed = _pack_conv(bb, w, path)
    acc = bb.emit_te(_conv_te(stride, dilation), x, packed, primfunc_name_hint="qconv2d_dot")
    n, oh, ow, oco, ob = _shape(acc)
    acc = e(relax.op.reshape(acc, [n, oh, ow, oco * ob]))
    if oco * ob != oc:
        acc = e(relax.op.strided_slice(acc, axes=[3], begin=[0], end=[oc]))
    return e(relax.op.permute_dims(acc, [0, 3, 1, 2]))


def emit_dense(bb: Any, xq: Any, w: Any, path: str) -> Any:
    """The int32 accumulator ``[N, OUT]`` of a quantized ``[N, IN]`` input and int8 ``[OUT, IN]``
    weights ``w``."""
    from tvm import relax

    e = bb.emit
    out, k = _shape(w)
    x = xq
    if k % 4:
        x = e(relax.op.nn.pad(x, [0, 0, 0, _ceil(k, 4) - k], pad_value=0.0))
    packed = _pack_dense(bb, w, path)
    acc = bb.emit_te(_dense_te, x, packed, primfunc_name_hint="qdense_dot")
    n, no, ob = _shape(acc)
    acc = e(relax.op.reshape(acc, [n, no * ob]))
    if no * ob != out:
        acc = e(relax.op.strided_slice(acc, axes=[1], begin=[0], end=[out]))
    return acc
