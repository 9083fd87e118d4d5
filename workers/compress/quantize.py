"""Quantization: symmetric per-channel weights, asymmetric per-tensor activations; PTQ and QAT.

Weights below 32 bits are coded as :mod:`workers.compress.codes` says (integer levels,
ternary or binary, times a per-output-channel scale; 16 bits = float16; k-means layers by
their codebook, :mod:`workers.compress.cluster`). Activations with ``abits`` < 32 are
fake-quantized at the input of each conv / linear (:class:`ActQuant`), their range set by
calibration with an observer:
``minmax``, ``percentile`` (0.01 / 99.99 %) or ``mse`` (the clipping range that minimises
quantization error on the calibration sample).

- PTQ: :func:`calibrate` activations, then :func:`quantize_weights` (weights rounded in place).
- QAT: calibrate, :func:`attach_fake_quant` (weights fake-quantized, straight-through
  estimator), fine-tune, :func:`bake`.

8-bit tensors use ``torch.fake_quantize_*`` ops, which export to ONNX as QuantizeLinear /
DequantizeLinear (QDQ) pairs; see :func:`qdq_weights` for where the export keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from workers.compress.codes import channel_scales, coded, qmax, weight_levels  # noqa: F401
from workers.models import CompressibleNet, LayerSpec, set_module, spec_of, weight_layers

Observer = Literal["minmax", "percentile", "mse"]
OBSERVERS: tuple[Observer, ...] = ("minmax", "percentile", "mse")
_SAMPLE = 65_536  # activation values kept per quantizer for calibration


def quantize_int(
    w: torch.Tensor, bits: int, observer: str = "minmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (int32) and per-channel float scales of ``bits``-bit ``int`` weights."""
    return weight_levels(w, LayerSpec(wbits=bits, wformat="int"), observer)


def fake_quant(w: torch.Tensor, bits: int, observer: str = "minmax") -> torch.Tensor:
    """What a ``bits``-bit weight of the default format computes as (16 bits = float16)."""
    return coded(w, LayerSpec(wbits=bits), observer)


class _STEQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, w: torch.Tensor, spec: LayerSpec
    ) -> torch.Tensor:
        return coded(w, spec)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return grads[0], None


class WeightFakeQuant(nn.Module):
    """Parametrization for QAT: coded weights forward (integer levels, ternary, binary or
    float16), gradients straight through (STE)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _STEQuant.apply(w, self.spec)
        return out


class QDQWeight(nn.Module):
    """Parametrization for export: a (baked) integer-coded weight (int, ternary, binary)
    through fake_quantize_per_channel_affine, which ONNX export turns into QuantizeLinear /
    DequantizeLinear with axis 0. The scale is the layer's own (:func:`weight_levels`), so
    DequantizeLinear gives back exactly the baked weights.

    The symmetric levels [-qmax, qmax] are stored as uint8 with zero point 128 (same values):
    with uint8 activations that lets ONNX Runtime use U8U8 kernels, which do not saturate on
    x86 CPUs without VNNI the way its U8S8 (VPMADDUBSW) kernels do. (The exporter only takes
    the (0, 255) range; it clamps nothing here.)
    """

    def __init__(self, w: torch.Tensor, spec: LayerSpec) -> None:
        super().__init__()
        _, scale = weight_levels(w, spec)
        self.register_buffer("scale", scale.to(torch.float32))
        self.register_buffer("zero", torch.full_like(scale, 128, dtype=torch.int32))

    scale: torch.Tensor
    zero: torch.Tensor

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero, 0, 0, 255)


class FloatActQuant(nn.Module):
    """An 8-bit :class:`ActQuant` for ONNX export as plain float ops (Mul, Round, Add, Clip,
    Sub, Mul) rather than a QuantizeLinear / DequantizeLinear pair: bit-exact with
    ``torch.fake_quantize_per_tensor_affine`` (it multiplies by the float32 reciprocal too).

    Used in front of layers with float (16 / 32-bit) weights: after a DequantizeLinear, ONNX
    Runtime's WeightBiasQuantization re-quantizes such weights to per-tensor int8 (and the bias
    to int32) and runs them as U8S8 QLinearConv, which is neither what PyTorch computes nor
    what the layer deploys as.
    """

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        self.scale = float(np.float32(act.scale))
        self.inv = float(np.float32(1.0) / np.float32(act.scale))
        self.zero_point, self.levels = float(act.zero_point), float(act.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x * self.inv) + self.zero_point, 0.0, self.levels)
        return (q - self.zero_point) * self.scale


class ActQuant(nn.Module):
    """Asymmetric per-tensor fake-quant of the activations entering a layer."""

    def __init__(self, bits: int, observer: Observer = "minmax") -> None:
        super().__init__()
        self.bits, self.observer = bits, observer
        self.levels = 2**bits - 1
        self.scale, self.zero_point = 1.0, 0
        self.calibrating, self.ready = False, False
        self._gen = torch.Generator().manual_seed(0)
        self._reset()

    def _reset(self) -> None:
        self._samples: list[torch.Tensor] = []
        self._lo, self._hi = float("inf"), float("-inf")

    def start_calibration(self) -> None:
        """Forget any earlier range; observe the batches that follow."""
        self._reset()
        self.calibrating, self.ready = True, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            flat = x.detach().flatten()
            self._lo, self._hi = min(self._lo, float(flat.min())), max(self._hi, float(flat.max()))
            if flat.numel() > 8192:  # a random sample: a fixed stride would alias with the layout
                flat = flat[torch.randint(flat.numel(), (8192,), generator=self._gen)]
            self._samples.append(flat.clone())
            return x
        if not self.ready:
            return x
        if self.bits == 8:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)
        q = torch.clamp(torch.round(x / self.scale) + self.zero_point, 0, self.levels)
        out = (q - self.zero_point) * self.scale
        return x + (out - x).detach()  # straight-through

    def finalize(self) -> None:
        """Set scale / zero point from the calibration sample."""
        if not self._samples:
            raise RuntimeError("ActQuant saw no calibration data")
        v = torch.cat(self._samples)
        if v.numel() > _SAMPLE:
            v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:_SAMPLE]]
        lo, hi = self._lo, self._hi  # exact extremes over all calibration data
        if self.observer == "percentile":
            lo, hi = (float(t) for t in torch.quantile(v, torch.tensor([1e-4, 1 - 1e-4])))
        elif self.observer == "mse":
            lo, hi = self._mse_range(v, lo, hi)
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be exact
        self.scale = max((hi - lo) / self.levels, 1e-8)
        self.zero_point = int(min(max(round(-lo / self.scale), 0), self.levels))
        self._reset()
        self.calibrating, self.ready = False, True

    def _mse_range(self, v: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        best, best_err = (lo, hi), float("inf")
        for ratio in torch.linspace(1.0, 0.3, 15).tolist():
            a, b = min(lo * ratio, 0.0), max(hi * ratio, 0.0)
            s = max((b - a) / self.levels, 1e-8)
            z = round(-a / s)
            q = (torch.clamp(torch.round(v / s) + z, 0, self.levels) - z) * s
            err = float(((q - v) ** 2).mean())
            if err < best_err:
                best, best_err = (a, b), err
        return best


class QuantInput(nn.Module):
    """``layer(act(x))``: an activation quantizer in front of a conv / linear."""

    def __init__(self, act: ActQuant, layer: nn.Module) -> None:
        super().__init__()
        self.act, self.layer = act, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(self.act(x))
        return out


def attach_act_quant(net: CompressibleNet, observer: Observer = "minmax") -> list[ActQuant]:
    """Put an :class:`ActQuant` before every layer whose ``hw.abits`` < 32, in place."""
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; known: {OBSERVERS}")
    quants = []
    for name, layer in weight_layers(net):
        bits = spec_of(layer).abits
        if bits < 32:
            q = ActQuant(bits, observer)
            set_module(net, name, QuantInput(q, layer))
            quants.append(q)
    return quants


@torch.no_grad()
def calibrate(net: CompressibleNet, batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` through ``net`` to set every ActQuant's range; returns their count."""
    quants = [m for m in net.modules() if isinstance(m, ActQuant)]
    for q in quants:
        q.start_calibration()
    net.eval()
    for x in batches:
        net(x)
    for q in quants:
        q.finalize()
    return len(quants)


def _coded_layer(spec: LayerSpec) -> bool:
    return spec.wformat != "kmeans" and not (spec.wformat == "float" and spec.wbits >= 32)


@torch.no_grad()
def quantize_weights(net: CompressibleNet, observer: str = "minmax") -> CompressibleNet:
    """PTQ of weights: round every layer below 32 bits to its code, in place (k-means layers
    are coded by their codebook, see :mod:`workers.compress.cluster`)."""
    for _, layer in weight_layers(net):
        spec = spec_of(layer)
        if _coded_layer(spec):
            layer.weight.copy_(coded(layer.weight, spec, observer))
    return net


def attach_fake_quant(net: CompressibleNet) -> CompressibleNet:
    """QAT: code every weight below 32 bits (``hw``) in the forward pass (STE backward),
    after any sparsity mask already attached."""
    for _, layer in weight_layers(net):
        spec = spec_of(layer)
        if _coded_layer(spec) and parametrization_of(layer, WeightFakeQuant) is None:
            parametrize.register_parametrization(layer, "weight", WeightFakeQuant(spec))
    return net


def weight_parametrizations(layer: nn.Module) -> parametrize.ParametrizationList | None:
    """The parametrizations on ``layer.weight`` (None when it is a plain parameter)."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    plist: parametrize.ParametrizationList = getattr(layer, "parametrizations")["weight"]  # noqa: B009
    return plist


P = TypeVar("P", bound=nn.Module)


def parametrization_of(layer: nn.Module, kind: type[P]) -> P | None:
    """The first parametrization of type ``kind`` on ``layer.weight``, if any."""
    return next((p for p in weight_parametrizations(layer) or [] if isinstance(p, kind)), None)


def bake(net: CompressibleNet) -> CompressibleNet:
    """Remove the parametrizations, keeping the quantized values as the plain weights."""
    for _, layer in weight_layers(net):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return net


def _int8_inputs(net: nn.Module) -> list[QuantInput]:
    """The conv / linear layers ONNX Runtime runs as int8: an 8-bit input quantizer and
    integer-coded weights (int, ternary, binary)."""
    out = []
    for m in net.modules():
        if isinstance(m, QuantInput) and m.act.ready and m.act.bits == 8:
            if spec_of(m.layer).int_coded:
                out.append(m)
    return out


def qdq_weights(net: CompressibleNet) -> CompressibleNet:
    """For ONNX export, in place: QDQ exactly where ONNX Runtime's int8 path computes what
    PyTorch does.

    - a layer behind an 8-bit ActQuant with integer-coded weights (int 2 / 4 / 8, ternary,
      binary): its weight through a QDQ pair in its own code (:class:`QDQWeight`), so ORT fuses
      it to a U8U8 QLinearConv on exactly the baked weights (snap its bias with
      :func:`snap_bias` first);
    - a layer behind an 8-bit ActQuant with float or k-means weights: the quantizer becomes
      :class:`FloatActQuant`, so ORT does not re-quantize those weights to per-tensor int8;
    - every other weight (8-bit ones behind a float or 16-bit input included) as its float
      values: a DequantizeLinear in front of a MatMul is fused by ORT into MatMulNBits, which
      quantizes the float input to int8 on the fly (2e-3 of the logit range off, measured).
    """
    qdq = {id(m.layer) for m in _int8_inputs(net)}
    for name, m in list(net.named_modules()):
        if isinstance(m, QuantInput) and m.act.ready and m.act.bits == 8:
            if id(m.layer) not in qdq:
                set_module(net, f"{name}.act", FloatActQuant(m.act))
    for _, layer in weight_layers(net):
        if id(layer) in qdq and not parametrize.is_parametrized(layer, "weight"):
            parametrize.register_parametrization(
                layer, "weight", QDQWeight(layer.weight.detach(), spec_of(layer))
            )
    return net


@torch.no_grad()
def snap_bias(net: CompressibleNet) -> CompressibleNet:
    """Put the bias of every layer ONNX Runtime runs as int8 on its int32 grid
    (``float32(x_scale) * w_scale[c]``), in place, so ORT's WeightBiasQuantization (which
    rounds a float bias to that grid) changes nothing. Moves each bias by at most half a step
    (~1e-4 here); PyTorch, TorchScript, TVM and ONNX then all add the same bias."""
    for m in _int8_inputs(net):
        layer = m.layer
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        if layer.bias is None:
            continue
        _, w_scale = weight_levels(layer.weight.detach(), spec_of(layer))
        step = torch.tensor(np.float32(m.act.scale)) * w_scale.float()
        layer.bias.copy_(torch.round(layer.bias / step) * step)
    return net


def without_act_quant(net: CompressibleNet) -> CompressibleNet:
    """A copy of ``net`` with the activation quantizers removed (the float graph of the same
    structure and weights), e.g. for a probe that lowers float ops."""
    import copy

    out = copy.deepcopy(net)
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantInput):
            set_module(out, name, m.layer)
    return out
