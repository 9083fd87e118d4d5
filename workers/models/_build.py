"""Build the dense network of a Candidate and record its channel groups and (conv, BN) pairs."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces import Candidate, Compression
from workers.models._blocks import (
    BasicBlock,
    ConvBNAct,
    DenseBlock,
    InvertedResidual,
    Net,
    annotate,
)
from workers.models._spec import ChannelGroup, LayerSpec, spec_of


class _Recorder:
    def __init__(self) -> None:
        self.groups: list[ChannelGroup] = []
        self.conv_bn: list[tuple[str, str]] = []

    def group(self, name: str, ratio: float) -> ChannelGroup:
        g = ChannelGroup(name, ratio)
        self.groups.append(g)
        return g

    def cba(
        self, path: str, g_out: ChannelGroup | None, g_in: ChannelGroup | None, dw: bool = False
    ) -> None:
        """A ConvBNAct at ``path``: its outputs join ``g_out``, its inputs ``g_in``."""
        self.conv_bn.append((f"{path}.conv", f"{path}.bn"))
        if dw:
            assert g_out is not None
            g_out.add(f"{path}.conv", "channelwise")
        else:
            if g_out is not None:
                g_out.add(f"{path}.conv", "out")
            if g_in is not None:
                g_in.add(f"{path}.conv", "in")
        if g_out is not None:
            g_out.add(f"{path}.bn", "channelwise")


def build_model(candidate: Candidate) -> Net:
    """The dense (uncompressed) network of ``candidate``, freshly initialised, annotated."""
    builders = {"cnn": _plain, "mlp": _plain, "mbv2": _mbv2, "resnet": _resnet}
    torch.manual_seed(0)
    net, rec = builders[candidate.family](candidate)
    net.groups = [g for g in rec.groups if g.ratio > 0 and g.members]
    net.conv_bn = rec.conv_bn
    return net


def _spec(comp: Compression) -> LayerSpec:
    return LayerSpec(comp.wbits, comp.abits, comp.rank, comp.wformat, comp.sparsity)


def _edge(c: Candidate) -> LayerSpec:
    return LayerSpec(wbits=c.head_wbits, abits=c.head_abits)


def _head(
    c: Candidate, fin: int, net_stages: list[nn.Sequential], stem: nn.Module, family: str
) -> Net:
    head = nn.Linear(fin, c.num_classes)
    annotate(head, _edge(c))
    return Net(family, stem, net_stages, head)


def _plain(c: Candidate) -> tuple[Net, _Recorder]:
    """Plain CNN (conv + BN + ReLU, max-pool after stride-2 stages) or MLP (linear + ReLU);
    each layer's outputs are one channel group, read by the next layer or the head."""
    rec = _Recorder()
    image = c.family == "cnn"
    cin, stages, prev = c.input_shape[0], [], None
    for si, st in enumerate(c.stages):
        blocks: list[nn.Module] = []
        for bi in range(st.depth):
            comp, path = st.block(bi), f"stages.{si}.{bi}"
            g = rec.group(f"stage{si}.block{bi}.out", comp.prune)
            blk: nn.Module
            if image:
                blk = ConvBNAct(cin, st.width, st.kernel)
                rec.cba(path, g, prev)
            else:
                blk = DenseBlock(cin, st.width)
                g.add(f"{path}.fc", "out")
                if prev is not None:
                    prev.add(f"{path}.fc", "in")
            annotate(blk, _spec(comp))
            blocks.append(blk)
            cin, prev = st.width, g
        if image and st.stride == 2:
            blocks.append(nn.MaxPool2d(2))
        stages.append(nn.Sequential(*blocks))
    net = _head(c, cin, stages, nn.Identity(), c.family)
    assert prev is not None
    prev.add("head", "in")
    return net, rec


def _stem(c: Candidate, act: str) -> tuple[ConvBNAct, int]:
    """The 3x3 stem conv of the residual families (edge bits) and its output width."""
    assert c.stem_width is not None
    stem = ConvBNAct(c.input_shape[0], c.stem_width, 3, act=act)
    annotate(stem, _edge(c))
    return stem, c.stem_width


def _mbv2(c: Candidate) -> tuple[Net, _Recorder]:
    """Stem 3x3 conv, inverted-residual stages; the expanded (hidden) channels are pruned."""
    rec = _Recorder()
    stem, cin = _stem(c, "relu6")
    rec.cba("stem", None, None)
    stages = []
    for si, st in enumerate(c.stages):
        blocks: list[nn.Module] = []
        for bi in range(st.depth):
            comp = st.block(bi)
            stride = st.stride if bi == 0 else 1
            blk = InvertedResidual(cin, st.width, st.kernel, stride, st.expand)
            annotate(blk, _spec(comp))
            p = f"stages.{si}.{bi}"
            hidden = rec.group(f"stage{si}.block{bi}.hidden", comp.prune if st.expand > 1 else 0.0)
            if st.expand > 1:
                rec.cba(f"{p}.expand", hidden, None)
                rec.cba(f"{p}.dw", hidden, None, dw=True)
            else:
                rec.conv_bn.append((f"{p}.dw.conv", f"{p}.dw.bn"))
            rec.cba(f"{p}.project", None, hidden if st.expand > 1 else None)
            blocks.append(blk)
            cin = st.width
        stages.append(nn.Sequential(*blocks))
    return _head(c, cin, stages, stem, "mbv2"), rec


def _resnet(c: Candidate) -> tuple[Net, _Recorder]:
    """Stem 3x3 conv, basic-block stages; inner channels and whole residual streams are pruned.

    A residual stream is every tensor added together by identity shortcuts: the stem's (or a
    projecting block's) outputs and each later block's second conv. Its channels are pruned
    as one group, with every conv that reads the stream resized.
    """
    rec = _Recorder()
    stem, cin = _stem(c, "relu")
    stream = rec.group("stream.stem", c.stages[0].block(0).prune)
    rec.cba("stem", stream, None)
    stages = []
    for si, st in enumerate(c.stages):
        blocks: list[nn.Module] = []
        for bi in range(st.depth):
            comp = st.block(bi)
            stride = st.stride if bi == 0 else 1
            blk = BasicBlock(cin, st.width, st.kernel, stride)
            annotate(blk, _spec(comp))
            p = f"stages.{si}.{bi}"
            inner = rec.group(f"stage{si}.block{bi}.inner", comp.prune)
            rec.cba(f"{p}.c1", inner, stream)
            if isinstance(blk.down, ConvBNAct):
                new_stream = rec.group(f"stream.stage{si}", comp.prune)
                rec.cba(f"{p}.down", new_stream, stream)
                stream = new_stream
            rec.cba(f"{p}.c2", stream, inner)
            blocks.append(blk)
            cin = st.width
        stages.append(nn.Sequential(*blocks))
    net = _head(c, cin, stages, stem, "resnet")
    stream.add("head", "in")
    return net, rec


def example_input(candidate: Candidate, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *candidate.input_shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assign_bits(net: Net, candidate: Candidate) -> Net:
    """Re-annotate ``net`` (built from an architecture-equal candidate, maybe since pruned or
    factorized) with ``candidate``'s weight format / bits and activation bits, keeping each
    layer's rank and sparsity (already applied: the structure's, not the precision's)."""
    for name, m in net.named_modules():
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        parts = name.split(".")
        old = spec_of(m)
        if parts[0] == "stages":
            comp = candidate.stages[int(parts[1])].block(int(parts[2]))
            new = LayerSpec(comp.wbits, comp.abits, old.rank, comp.wformat, old.sparsity)
        else:
            new = LayerSpec(candidate.head_wbits, candidate.head_abits, old.rank, "", old.sparsity)
        setattr(m, "hw", new)  # noqa: B010 - not a Module attr
    return net
