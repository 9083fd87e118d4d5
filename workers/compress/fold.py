"""Fold BatchNorm into the convolution before it (what a deployed model computes)."""

from __future__ import annotations

import torch
from torch import nn

from workers.models import CompressibleNet, get_module, set_module


def _last_conv(module: nn.Module) -> nn.Conv2d:
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and isinstance(module[-1], nn.Conv2d):
        return module[-1]  # a factorized conv: the BN scales its last factor's outputs
    raise TypeError(f"cannot fold BatchNorm into {type(module).__name__}")


def fold_batchnorm(net: CompressibleNet) -> CompressibleNet:
    """Replace each recorded ``conv -> bn`` pair by one biased conv (eval numerics), in place."""
    for conv_path, bn_path in net.conv_bn:
        bn = get_module(net, bn_path)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        conv = _last_conv(get_module(net, conv_path))
        assert bn.running_mean is not None and bn.running_var is not None
        assert bn.weight is not None and bn.bias is not None
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
            new_bias = (b - bn.running_mean) * scale + bn.bias.detach()
            conv.bias = nn.Parameter(new_bias)
        set_module(net, bn_path, nn.Identity())
    return net
