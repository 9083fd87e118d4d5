"""Weight quantization: symmetric per-output-channel fake-quant with a straight-through estimator.

QAT attaches a parametrization to each weight, so the forward pass sees quantized weights while
gradients flow to the float shadow weights. ``bake`` makes the quantized values permanent; the
deployable model then holds exactly the values that :mod:`workers.compress.pack` stores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from workers.models import Net


def qmax(bits: int) -> int:
    return int(2 ** (bits - 1) - 1)


def channel_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale so that max |w| maps to the largest integer level."""
    amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    return amax / qmax(bits)


def quantize_int(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (int32 tensor, in [-qmax, qmax]) and per-channel float scales."""
    scale = channel_scales(w, bits)
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -qmax(bits), qmax(bits))
    return q.to(torch.int32), scale


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """What a ``bits``-bit weight computes as: int levels x scale (16 bits = float16)."""
    if bits >= 32:
        return w
    if bits == 16:
        return w.to(torch.float16).to(w.dtype)
    q, scale = quantize_int(w, bits)
    return q.to(w.dtype) * scale.view((-1,) + (1,) * (w.dim() - 1))


class _STEQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, w: torch.Tensor, bits: int
    ) -> torch.Tensor:
        return fake_quant(w, bits)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return grad, None


class WeightFakeQuant(nn.Module):
    """Parametrization: forward returns the fake-quantized weight, gradients pass straight."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _STEQuant.apply(w, self.bits)
        return out


def weight_layers(module: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def layer_bits(net: Net, block_bits: list[int], head_bits: int) -> dict[nn.Conv2d | nn.Linear, int]:
    """Bits of every weight layer (both factors of a factorized layer share their block's)."""
    bits: dict[nn.Conv2d | nn.Linear, int] = {}
    for block, b in zip(net.block_list(), block_bits, strict=True):
        for layer in weight_layers(block):
            bits[layer] = b
    bits[net.head] = head_bits
    return bits


def attach_fake_quant(net: Net, block_bits: list[int], head_bits: int) -> Net:
    """Register weight fake-quant on every layer below 32 bits (QAT), in place."""
    for layer, bits in layer_bits(net, block_bits, head_bits).items():
        if bits < 32:
            parametrize.register_parametrization(layer, "weight", WeightFakeQuant(bits))
    return net


def bake(net: Net) -> Net:
    """Remove the parametrizations, keeping the quantized values as the plain weights."""
    for layer in weight_layers(net):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return net
