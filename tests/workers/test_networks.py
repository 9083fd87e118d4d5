"""Uploaded networks in the worker: the reference architectures (residual adds, depthwise convs,
squeeze-and-excitation, concatenation, a custom forward) exported as a user would, lifted back
into layers that compute what the upload computes, grouped for a space, pruned by
torch-pruning's dependency graph, compressed and lowered to TVM; a transformer refused with
its ops named."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from search_spaces import GroupCompression, NetworkRef
from search_spaces._candidate import Candidate
from workers.networks import UnsupportedOpError, check_lifted, describe, lift, load_program, zoo
from workers.networks.parent import UploadedNet

NETS = {
    "resnet18-cifar": lambda: zoo.resnet18(10, 0.25, "cifar"),
    "resnet18-imagenet": lambda: zoo.resnet18(10, 0.25, "imagenet"),
    "mobilenet_v2": lambda: zoo.mobilenet_v2(10, 0.5),
    "efficientnet_b0": lambda: zoo.efficientnet_b0(10, 0.25),
    "concat": lambda: zoo.ConcatNet(10),
}


def _export(model: nn.Module, dynamic: bool) -> torch.export.ExportedProgram:
    torch.manual_seed(0)
    x = torch.randn(2 if dynamic else 1, 3, 32, 32)
    kw = {"dynamic_shapes": {"x": {0: torch.export.Dim("batch")}}} if dynamic else {}
    ep = torch.export.export(model.eval(), (x,), **kw)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return load_program(buf.getvalue(), max_bytes=1 << 30)  # the upload's own path


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "static-batch"])
@pytest.mark.parametrize("name", list(NETS))
def test_lifted_network_computes_what_was_uploaded(name: str, dynamic: bool) -> None:
    model = NETS[name]()
    ep = _export(model, dynamic)
    lifted = lift(ep)
    assert check_lifted(ep, lifted) < 1e-5
    assert lifted.input_shape == (3, 32, 32) and lifted.num_classes == 10
    x = torch.randn(5, 3, 32, 32)  # any batch, also after a static-batch export
    with torch.no_grad():
        assert torch.allclose(lifted.module(x), model.eval()(x), atol=1e-5)
    kinds = {type(m) for m in lifted.module.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear} <= kinds  # real layers to compress
    lifted.module.train()
    loss = lifted.module(x).sum()
    loss.backward()  # it trains
    assert all(p.grad is not None for p in lifted.module.parameters())


def test_a_transformer_is_refused_naming_op_node_and_module() -> None:
    ep = _export(zoo.TinyViT(10), True)
    with pytest.raises(UnsupportedOpError) as e:
        lift(ep)
    assert "aten.transpose.int (node 'transpose')" in str(e.value)
    assert any("in module 'encoder.layers.0" in op for op in e.value.ops)


def test_groups_follow_the_module_tree() -> None:
    groups = {
        name: [
            g.name
            for g in describe(
                lift(_export(NETS[name](), True)), name="user/n", digest="0" * 64
            ).groups
        ]
        for name in ("resnet18-cifar", "mobilenet_v2", "concat")
    }
    assert groups["resnet18-cifar"] == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert groups["concat"] == ["a", "b", "mix", "res", "head"]  # small: a group per layer
    mbv2 = groups["mobilenet_v2"]
    assert len(mbv2) == 8 and mbv2[0] == "features.0" and mbv2[-1] == "classifier"
    assert all(g.startswith("features.") for g in mbv2[1:-1])


@pytest.mark.parametrize("name", ["resnet18-cifar", "mobilenet_v2", "efficientnet_b0", "concat"])
def test_pruning_keeps_coupled_channels_consistent(name: str) -> None:
    lifted = lift(_export(NETS[name](), True))
    desc = describe(lifted, name="user/n", digest="0" * 64)
    net = UploadedNet(lifted)
    groups = [GroupCompression(name=g.name, prune=0.5 if g.prunable else 0.0) for g in desc.groups]
    net.annotate(groups, desc)
    before = sum(p.numel() for p in net.parameters())
    widths = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    net.prune_channels("l1")
    after = sum(p.numel() for p in net.parameters())
    assert after < 0.6 * before, (before, after)
    out = net(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)  # the classes are never pruned
    pruned = [
        m for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels < widths[n]
    ]
    assert pruned and all(m.out_channels % 8 == 0 for m in pruned)  # the channel multiple


def test_a_network_candidate_round_trips_and_hashes_by_digest() -> None:
    cand = Candidate(
        space="network",
        family="network",
        network=NetworkRef(name="user/r", digest="a" * 64),
        input_shape=(3, 32, 32),
        num_classes=10,
        groups=(GroupCompression(name="conv1", wbits=8, abits=8, prune=0.25),),
    )
    assert Candidate.model_validate(cand.model_dump(mode="json")) == cand
    other = cand.model_copy(update={"network": NetworkRef(name="user/r", digest="b" * 64)})
    assert cand.structural_hash() != other.structural_hash()
    assert cand.summary() == "net user/r [conv1 w8a8 p0.25 r1]"


def test_the_untrained_structure_of_a_pruned_candidate(tmp_path: Path) -> None:
    """What the pre-filter and the tuning grid lower (under no_grad): pruned by the dependency
    graph, coded, and the same channel counts as the trained candidate gets."""
    from search_spaces import NetworkSpace, SpaceContext
    from workers.networks import sha256
    from workers.probe.structure import structural_model
    from workers.records import NetworkSource

    torch.manual_seed(0)
    ep = torch.export.export(
        zoo.resnet18(10, 0.25).eval(),
        (torch.zeros(2, 3, 32, 32),),
        dynamic_shapes={"x": {0: torch.export.Dim("b")}},
    )
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    blob = buf.getvalue()
    (tmp_path / f"{sha256(blob)}.pt2").write_bytes(blob)
    desc = describe(lift(load_program(blob, max_bytes=1 << 30)), name="user/r", digest=sha256(blob))
    source = NetworkSource(store=str(tmp_path), description=desc)
    space = NetworkSpace(
        SpaceContext(input_shape=(3, 32, 32), num_classes=10),
        {"prune": [0.5], "wbits": [8], "abits": [8], "rank": [1.0]},
        network=desc,
    )

    class First:
        def suggest_categorical(self, name: str, choices: list[object]) -> object:
            return choices[0]

    cand = space.sample(First())
    net = structural_model(cand, network=source)
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 64  # 128 channels of layer4, half pruned
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
