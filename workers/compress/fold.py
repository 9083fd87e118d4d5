"""Fold BatchNorm into the preceding convolution (what a deployed model computes)."""

from __future__ import annotations

import torch
from torch import nn

from workers.models import Net, conv_like


def fold_batchnorm(net: Net) -> Net:
    """Replace each block's ``conv -> bn`` by one biased conv, in place (eval-mode numerics)."""
    for block in net.block_list():
        bn = block.bn
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        conv = block.layer
        if not isinstance(conv, nn.Conv2d):
            raise TypeError("fold BatchNorm before factorizing")
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        fused = conv_like(conv, conv.in_channels, conv.out_channels, bias=True)
        assert fused.bias is not None and bn.weight is not None and bn.bias is not None
        with torch.no_grad():
            fused.weight.copy_(conv.weight.detach() * scale[:, None, None, None])
            b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
            fused.bias.copy_((b - bn.running_mean) * scale + bn.bias.detach())
        block.layer = fused
        block.bn = nn.Identity()
    return net
