"""Lower a compressed network to Relax with each layer at the precision it deploys at.

Per conv / linear (its ``hw`` bits and the activation quantizer in front of it):

- ``int8``: weights <= 8 bits and 8-bit activations. The layer becomes the custom op
  ``hwnas::qconv2d`` / ``hwnas::qlinear``; in PyTorch it computes the fake-quant reference, in
  Relax it is real integer arithmetic: quantize the input to int8 (asymmetric, the calibrated
  scale and zero point), pad with the zero point, an int8 x int8 -> int32 conv / matmul, subtract
  the zero-point correction, then requantize (int32 -> float, times input scale x per-channel
  weight scale, plus bias) in the compiled graph.
- ``fp16``: weights and activations <= 16 bits on a profile that supports fp16 (CUDA): the
  layer computes in float16 between casts.
- ``fp32``: everything else.

A float (fp16 / fp32) layer keeps its activation quantizer (``hwnas::act_quant``, the same
float arithmetic as :class:`~workers.compress.quantize.ActQuant`): a ``w16a8`` layer on a CPU
without fp16 computes in float32 on 8-bit-quantized inputs, as the model does. Dropping it
(as before) made mixed 16-/8-bit candidates disagree with PyTorch (argmax agreement down to
0.949). Quantizing to int8 multiplies by the float32 reciprocal of the scale, as
``torch.fake_quantize_per_tensor_affine`` does, so ties round the same way.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hw_profiles import Profile
from workers.compress.codes import weight_levels
from workers.compress.quantize import ActQuant, QuantInput
from workers.models import LayerSpec, set_module, spec_of
from workers.probe import int8_dot
from workers.probe.dot_check import usable_int8_dot


def _inv(scale: float) -> float:
    """float32(1 / float32(scale)): the reciprocal fake_quantize_per_tensor_affine multiplies by."""
    return float(np.float32(1.0) / np.float32(scale))


def _int8_fake_quant(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """What the int8 kernels see of ``x``: quantized to int8 levels and back."""
    return (torch.clamp(torch.round(x * _inv(scale)) + zp, -128, 127) - zp) * scale


@torch.library.custom_op("hwnas::act_quant", mutates_args=())
def act_quant(x: torch.Tensor, scale: float, zp: int, levels: int, ste: bool) -> torch.Tensor:
    """:meth:`ActQuant.forward` in eval mode, for a quantizer kept before a float layer."""
    if not ste:  # 8 bits: torch.fake_quantize_per_tensor_affine's arithmetic, bit for bit
        return (torch.clamp(torch.round(x * _inv(scale)) + zp, 0, levels) - zp) * scale
    q = torch.clamp(torch.round(x / scale) + zp, 0, levels)
    return x + ((q - zp) * scale - x)  # the straight-through formula's float arithmetic


@act_quant.register_fake
def _(x, scale, zp, levels, ste):  # type: ignore[no-untyped-def]
    return torch.empty_like(x)


class _ActQuant(nn.Module):
    """A calibrated activation quantizer as the ``hwnas::act_quant`` op."""

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        self.scale, self.zp = float(act.scale), int(act.zero_point)
        self.levels, self.ste = int(act.levels), act.bits != 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = act_quant(x, self.scale, self.zp, self.levels, self.ste)
        return out


class _Quantized(nn.Module):
    """A float (fp32 / fp16) layer behind its activation quantizer."""

    def __init__(self, act: ActQuant, layer: nn.Module) -> None:
        super().__init__()
        self.act, self.layer = _ActQuant(act), layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(self.act(x))
        return out


@torch.library.custom_op("hwnas::qconv2d", mutates_args=())
def qconv2d(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor,
    x_scale: float,
    x_zp: int,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """Fake-quant reference of the int8 conv (``x_zp`` in the int8 domain)."""
    w = w_q.to(x.dtype) * w_scale.view(-1, 1, 1, 1)
    return F.conv2d(_int8_fake_quant(x, x_scale, x_zp), w, bias, stride, padding, dilation, groups)


@qconv2d.register_fake
def _(x, w_q, w_scale, bias, x_scale, x_zp, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    return F.conv2d(x, w_q.to(x.dtype), bias, stride, padding, dilation, groups)


@torch.library.custom_op("hwnas::qlinear", mutates_args=())
def qlinear(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor,
    x_scale: float,
    x_zp: int,
) -> torch.Tensor:
    """Fake-quant reference of the int8 linear layer."""
    w = w_q.to(x.dtype) * w_scale.view(-1, 1)
    return F.linear(_int8_fake_quant(x, x_scale, x_zp), w, bias)


@qlinear.register_fake
def _(x, w_q, w_scale, bias, x_scale, x_zp):  # type: ignore[no-untyped-def]
    return F.linear(x, w_q.to(x.dtype), bias)


class _Int8Layer(nn.Module):
    """Integer weights + scales of one conv / linear and its input quantizer."""

    w_q: torch.Tensor
    w_scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, layer: nn.Conv2d | nn.Linear, act: ActQuant) -> None:
        super().__init__()
        q, scale = weight_levels(layer.weight.detach(), spec_of(layer))
        self.register_buffer("w_q", q.to(torch.int8))
        self.register_buffer("w_scale", scale.float())
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(q.shape[0])
        self.register_buffer("bias", b.float().clone())
        self.x_scale = float(act.scale)
        self.x_zp = int(act.zero_point) - 128  # uint8 levels shifted into int8
        self.conv: tuple[list[int], list[int], list[int], int] | None = None
        if isinstance(layer, nn.Conv2d):
            pad = layer.padding
            if isinstance(pad, str):
                raise ValueError(f"string padding {pad!r} is not supported by the int8 lowering")
            self.conv = (list(layer.stride), list(pad), list(layer.dilation), layer.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = (x, self.w_q, self.w_scale, self.bias, self.x_scale, self.x_zp)
        out: torch.Tensor = qlinear(*a) if self.conv is None else qconv2d(*a, *self.conv)
        return out


class _Half(nn.Module):
    """Compute ``layer`` in float16 between casts."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = copy.deepcopy(layer).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x.half()).float()
        return out


def layer_precision(spec: LayerSpec, act: ActQuant | None, profile: Profile) -> str:
    """``int8``, ``fp16`` or ``fp32``: what a layer computes in on ``profile``.

    Integer-coded weights (int, ternary, binary) behind 8-bit activations run as int8 kernels;
    k-means (codebook) weights compute as dense float32, sparse weights as dense (no sparse
    kernels on these targets)."""
    abits = act.bits if act is not None and act.ready else 32
    if spec.int_coded and abits <= 8:
        return "int8"
    if spec.wformat == "kmeans":
        return "fp32"
    if profile.supports.fp16 and spec.wbits <= 16 and abits <= 16:
        return "fp16"
    return "fp32"


def deployable(net: nn.Module, profile: Profile) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``net`` with every layer at its deployed precision, and the layer counts per
    precision. Calling the copy in PyTorch computes the same as the fake-quant ``net``."""
    out = copy.deepcopy(net).eval()
    counts: Counter[str] = Counter()
    modules = list(out.named_modules())
    wrapped = {f"{n}.layer" for n, m in modules if isinstance(m, QuantInput)}
    for name, m in modules:
        layer: nn.Module | None = None
        act: ActQuant | None = None
        if isinstance(m, QuantInput) and isinstance(m.layer, nn.Conv2d | nn.Linear):
            layer, act = m.layer, m.act
        elif isinstance(m, nn.Conv2d | nn.Linear) and name not in wrapped:
            layer = m
        if layer is None:
            continue
        precision = layer_precision(spec_of(layer), act, profile)
        counts[precision] += 1
        new: nn.Module = layer
        if precision == "int8":
            assert act is not None and isinstance(layer, nn.Conv2d | nn.Linear)
            new = _Int8Layer(layer, act)
        elif precision == "fp16":
            new = _Half(layer)
        if act is not None and act.ready and precision != "int8":
            new = _Quantized(act, new)  # the float layer sees the quantized inputs, as in net
        if new is not m:
            set_module(out, name, new)
    return out, dict(counts)


def _relax_qconv2d(node: Any, importer: Any, dot: str = "none") -> Any:
    from tvm import relax

    x, w_q, w_scale, bias = (importer.env[a] for a in node.args[:4])
    x_scale, x_zp, stride, padding, dilation, groups = node.args[4:10]
    bb = importer.block_builder
    if any(padding):  # pad the float input with 0.0: it quantizes to the zero point exactly
        pad = [0, 0, 0, 0, padding[0], padding[0], padding[1], padding[1]]
        x = bb.emit(relax.op.nn.pad(x, pad, pad_value=0.0))
    if dot in int8_dot.PATHS and groups == 1:
        zp = x_zp + 128 if int8_dot.act_dtype(dot) == "uint8" else x_zp
        xq = _quantize(bb, x, x_scale, zp, int8_dot.act_dtype(dot))
        acc = int8_dot.emit_conv(bb, xq, w_q, list(stride), list(dilation), dot)
        return _requantize(bb, acc, w_q, w_scale, bias, x_scale, zp, axes=[1, 2, 3], nd=4)
    xq = _quantize(bb, x, x_scale, x_zp)
    acc = bb.emit(relax.op.nn.conv2d(xq, w_q, stride, 0, dilation, groups, out_dtype="int32"))
    return _requantize(bb, acc, w_q, w_scale, bias, x_scale, x_zp, axes=[1, 2, 3], nd=4)


def _relax_qlinear(node: Any, importer: Any, dot: str = "none") -> Any:
    from tvm import relax

    x, w_q, w_scale, bias = (importer.env[a] for a in node.args[:4])
    x_scale, x_zp = node.args[4:6]
    bb = importer.block_builder
    if dot in int8_dot.PATHS and x.ty.ndim == 2:
        zp = x_zp + 128 if int8_dot.act_dtype(dot) == "uint8" else x_zp
        xq = _quantize(bb, x, x_scale, zp, int8_dot.act_dtype(dot))
        acc = int8_dot.emit_dense(bb, xq, w_q, dot)
        return _requantize(bb, acc, w_q, w_scale, bias, x_scale, zp, axes=[1], nd=2)
    xq = _quantize(bb, x, x_scale, x_zp)
    wt = bb.emit(relax.op.permute_dims(w_q))
    acc = bb.emit(relax.op.matmul(xq, wt, out_dtype="int32"))
    return _requantize(bb, acc, w_q, w_scale, bias, x_scale, x_zp, axes=[1], nd=2)


def _quantize(bb: Any, x: Any, scale: float, zp: int, dtype: str = "int8") -> Any:
    """float -> int8 (or uint8) levels. Scale and zero point are 1-element tensor constants, not
    literals, so the compiled kernels (and their tuning records) do not depend on calibration
    values."""
    from tvm import relax

    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    s_inv = _scalar_tensor(_inv(scale))
    z = _scalar_tensor(float(zp))
    q = bb.emit(relax.op.round(bb.emit(relax.op.multiply(x, s_inv))))
    q = bb.emit(relax.op.clip(bb.emit(relax.op.add(q, z)), lo, hi))
    return bb.emit(relax.op.astype(q, dtype))


def _scalar_tensor(value: float) -> Any:
    import numpy as np
    from tvm import relax

    return relax.const(np.array([value], dtype="float32"))


def _requantize(
    bb: Any,
    acc: Any,
    w_q: Any,
    w_scale: Any,
    bias: Any,
    x_scale: float,
    x_zp: int,
    *,
    axes: list[int],
    nd: int,
) -> Any:
    """int32 accumulator -> float: subtract zp x sum(w), scale per channel, add bias."""
    from tvm import relax

    shape = [1, -1] + [1] * (nd - 2)
    e = bb.emit
    if x_zp:
        w_sum = e(relax.op.sum(e(relax.op.astype(w_q, "int32")), axis=axes))
        corr = e(relax.op.multiply(w_sum, relax.const(x_zp, "int32")))
        acc = e(relax.op.subtract(acc, e(relax.op.reshape(corr, shape))))
    scale = e(relax.op.multiply(w_scale, relax.const(x_scale, "float32")))
    y = e(relax.op.multiply(e(relax.op.astype(acc, "float32")), e(relax.op.reshape(scale, shape))))
    return e(relax.op.add(y, e(relax.op.reshape(bias, shape))))


def _relax_act_quant(node: Any, importer: Any) -> Any:
    """``hwnas::act_quant`` as the same float ops (scale and zero point tensor constants)."""
    from tvm import relax

    x = importer.env[node.args[0]]
    scale, zp, levels, ste = node.args[1:5]
    e = importer.block_builder.emit
    s, z = _scalar_tensor(scale), _scalar_tensor(float(zp))
    if ste:
        q = e(relax.op.round(e(relax.op.divide(x, s))))
    else:
        q = e(relax.op.round(e(relax.op.multiply(x, _scalar_tensor(_inv(scale))))))
    q = e(relax.op.clip(e(relax.op.add(q, z)), 0, levels))
    out = e(relax.op.multiply(e(relax.op.subtract(q, z)), s))
    return e(relax.op.add(x, e(relax.op.subtract(out, x)))) if ste else out


def converters(int8_dot_path: str = "none") -> dict[str, Any]:
    """The Relax converters of hwnas's custom ops; int8 convs and dense layers use the
    dot-product layout of :mod:`workers.probe.int8_dot` when ``int8_dot_path`` is one."""
    return {
        "qconv2d.default": lambda n, i: _relax_qconv2d(n, i, int8_dot_path),
        "qlinear.default": lambda n, i: _relax_qlinear(n, i, int8_dot_path),
        "act_quant.default": _relax_act_quant,
    }


CUSTOM_CONVERTERS = converters()


def to_relax(
    model: nn.Module,
    example: torch.Tensor,
    profile: Profile | None = None,
    *,
    int8_dot_path: str | None = None,
) -> Any:
    """torch.export the eval-mode ``model`` (e.g. from :func:`deployable`) into Relax, int8
    layers in the layout of ``profile``'s int8 dot-product path (none without a profile), or
    of ``int8_dot_path`` when given (tests check each layout's numerics on any host).

    Raises:
        Int8DotError: the profile demands an instruction the probing CPU lacks.
    """
    from tvm.relax.frontend.torch import from_exported_program

    if int8_dot_path is None:
        int8_dot_path = usable_int8_dot(profile)[0] if profile is not None else "none"
    with torch.no_grad():
        ep = torch.export.export(model.eval(), (example,))
    return from_exported_program(
        ep, unwrap_unit_return_tuple=True, custom_convert_map=converters(int8_dot_path)
    )
