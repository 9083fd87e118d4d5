"""Low-rank factorization: truncated SVD for linear / 1x1 conv, Tucker-2 for k x k conv.

- Linear (out, in) -> Linear(in, r, no bias) + Linear(r, out).
- 1x1 conv -> 1x1 conv (in -> r) + 1x1 conv (r -> out).
- k x k conv: Tucker-2 (1x1 in -> r_in, k x k r_in -> r_out, 1x1 r_out -> out; HOSVD refined by
  a few HOOI sweeps), or ``svd``: k x k conv (in -> r) + 1x1 (r -> out) on the (out, in*k*k)
  unfolding. Both are exact at full rank.

The rank is a fraction of full rank (``hw.rank`` of each layer), or chosen automatically as the
smallest rank keeping ``energy`` of the squared singular values; either is rounded to a
multiple of 8 (``workers.compress.rounding``; energy ranks round up). A layer is only split when
that saves parameters. Depthwise convs are never factorized.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from workers.compress.rounding import round_channels
from workers.models import CompressibleNet, conv_like, get_module, set_module, spec_of

ConvMethod = Literal["tucker2", "svd"]


def full_rank(layer: nn.Conv2d | nn.Linear) -> int:
    w = layer.weight
    return min(w.shape[0], w[0].numel())


def rank_for(layer: nn.Conv2d | nn.Linear, fraction: float) -> int:
    """``fraction`` of the layer's full rank, rounded to a multiple of the channel multiple."""
    return fraction_of(full_rank(layer), fraction)


def fraction_of(full: int, fraction: float) -> int:
    """``fraction`` of ``full`` (at least one), rounded to a multiple of the channel multiple."""
    return round_channels(max(1, round(fraction * full)), full)


def energy_rank(singular: torch.Tensor, energy: float) -> int:
    """Smallest r whose top-r singular values keep ``energy`` of the total squared energy."""
    e = torch.cumsum(singular**2, 0) / (singular**2).sum().clamp_min(1e-30)
    r = int(torch.searchsorted(e, torch.tensor(energy, dtype=e.dtype)).item()) + 1
    return min(r, singular.numel())  # float rounding can leave the total just below 1.0


def _copy_meta(src: nn.Module, *dst: nn.Module) -> None:
    for d in dst:
        if hasattr(src, "hw"):
            d.hw = src.hw
        d.train(src.training)


def factorize_layer(layer: nn.Module, rank: int) -> nn.Sequential:
    """Truncated SVD of ``layer``'s (out, fan_in) weight into two layers (sqrt(S) to each)."""
    if not isinstance(layer, nn.Conv2d | nn.Linear):
        raise TypeError(f"cannot factorize {type(layer).__name__}")
    w = layer.weight.detach()
    out = w.shape[0]
    u, s, vh = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)
    r = min(rank, s.numel())
    root = torch.sqrt(s[:r])
    first_w, second_w = root[:, None] * vh[:r], u[:, :r] * root[None, :]
    has_bias = layer.bias is not None
    first: nn.Linear | nn.Conv2d
    second: nn.Linear | nn.Conv2d
    if isinstance(layer, nn.Linear):
        first, second = (
            nn.Linear(layer.in_features, r, bias=False),
            nn.Linear(r, out, bias=has_bias),
        )
    else:
        first = conv_like(layer, layer.in_channels, r, bias=False)
        second = conv_like(layer, r, out, bias=has_bias, pointwise=True)
        first_w = first_w.reshape(r, *w.shape[1:])
        second_w = second_w[:, :, None, None]
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if layer.bias is not None and second.bias is not None:
            second.bias.copy_(layer.bias)
    _copy_meta(layer, first, second)
    return nn.Sequential(first, second)


def tucker2_conv(conv: nn.Conv2d, r_in: int, r_out: int, sweeps: int = 2) -> nn.Sequential:
    """Tucker-2 decomposition of a k x k conv: 1x1 (in -> r_in), k x k core, 1x1 (r_out -> out)."""
    w = conv.weight.detach()
    cout, cin = w.shape[:2]
    r_in, r_out = min(r_in, cin), min(r_out, cout)

    def leading(mat: torch.Tensor, r: int) -> torch.Tensor:
        u: torch.Tensor = torch.linalg.svd(mat, full_matrices=False)[0]
        return u[:, :r]

    u_out = leading(w.reshape(cout, -1), r_out)
    u_in = leading(w.transpose(0, 1).reshape(cin, -1), r_in)
    for _ in range(sweeps):  # HOOI: each factor given the other
        t = torch.einsum("oihw,ir->orhw", w, u_in)
        u_out = leading(t.reshape(cout, -1), r_out)
        t = torch.einsum("oihw,or->irhw", w, u_out)
        u_in = leading(t.reshape(cin, -1), r_in)
    core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)
    first = nn.Conv2d(cin, r_in, 1, bias=False)
    middle = conv_like(conv, r_in, r_out, bias=False)
    last = nn.Conv2d(r_out, cout, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None])
        middle.weight.copy_(core)
        last.weight.copy_(u_out[:, :, None, None])
        if conv.bias is not None and last.bias is not None:
            last.bias.copy_(conv.bias)
    _copy_meta(conv, first, middle, last)
    return nn.Sequential(first, middle, last)


def _choose(layer: nn.Conv2d | nn.Linear, fraction: float, energy: float | None) -> int:
    if energy is None:
        return rank_for(layer, fraction)
    s = torch.linalg.svdvals(layer.weight.detach().reshape(layer.weight.shape[0], -1))
    return round_channels(energy_rank(s, energy), full_rank(layer), up=True)


def factorize_model(
    net: CompressibleNet, *, conv_method: ConvMethod = "tucker2", energy: float | None = None
) -> CompressibleNet:
    """Factorize every conv / linear whose ``hw.rank`` < 1, in place (see module docstring)."""
    targets = [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
        and spec_of(m).rank < 1.0
        and not (isinstance(m, nn.Conv2d) and m.groups > 1)
    ]
    for name, layer in targets:
        frac = spec_of(layer).rank
        w = layer.weight
        out, fan_in = w.shape[0], w[0].numel()
        kxk = isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1)
        if kxk and conv_method == "tucker2":
            assert isinstance(layer, nn.Conv2d)
            k2 = fan_in // layer.in_channels
            if energy is None:
                r_in, r_out = fraction_of(layer.in_channels, frac), fraction_of(out, frac)
            else:
                r_out = energy_rank(torch.linalg.svdvals(w.detach().reshape(out, -1)), energy)
                r_in = energy_rank(
                    torch.linalg.svdvals(w.detach().transpose(0, 1).reshape(layer.in_channels, -1)),
                    energy,
                )
                r_out = round_channels(r_out, out, up=True)
                r_in = round_channels(r_in, layer.in_channels, up=True)
            if layer.in_channels * r_in + r_in * r_out * k2 + r_out * out < out * fan_in:
                set_module(net, name, tucker2_conv(layer, r_in, r_out))
            continue
        r = _choose(layer, frac, energy)
        if r * (out + fan_in) < out * fan_in:
            set_module(net, name, factorize_layer(get_module(net, name), r))
    return net
