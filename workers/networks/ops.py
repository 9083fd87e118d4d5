"""The ops an uploaded graph may hold (what hwnas can compress, lower to TVM and export), the
errors naming what it cannot take, and small readers of an fx node's arguments."""

from __future__ import annotations

from typing import Any

from torch import fx

from search_spaces import HwnasError

# ATen calls copied as they are: elementwise activations and arithmetic, pooling, concat /
# split, shape ops that keep the batch first. Each lowers through TVM's torch frontend and runs
# in torch.jit / ONNX export.
FUNCTIONS = frozenset(
    {
        "aten.relu.default",
        "aten.relu_.default",
        "aten.hardtanh.default",  # ReLU6
        "aten.hardtanh_.default",
        "aten.silu.default",
        "aten.silu_.default",
        "aten.hardswish.default",
        "aten.hardswish_.default",
        "aten.sigmoid.default",
        "aten.hardsigmoid.default",
        "aten.add.Tensor",
        "aten.add_.Tensor",
        "aten.mul.Tensor",
        "aten.mul_.Tensor",
        "aten.cat.default",
        "aten.split.Tensor",
        "aten.split_with_sizes.default",
        "aten.chunk.default",
        "aten.adaptive_avg_pool2d.default",
        "aten.mean.dim",
        "aten.max_pool2d.default",
        "aten.avg_pool2d.default",
        "aten.flatten.using_ints",
        "aten.view.default",
        "aten.reshape.default",
        "aten.dropout.default",
        "aten.clone.default",
        "aten.contiguous.default",
        "aten.alias.default",
        "aten.sym_size.int",
    }
)
CONV = ("aten.conv2d.default", "aten.convolution.default")
BN = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")
LINEAR = "aten.linear.default"
DROPPED = ("aten._assert_tensor_metadata.default",)  # export-time checks, no computation
RESHAPES = ("aten.view.default", "aten.reshape.default")
LAYER_OPS = frozenset({*CONV, *BN, LINEAR})


class NetworkError(HwnasError, ValueError):
    """An uploaded network hwnas cannot take (the message says why)."""


class UnsupportedOpError(NetworkError):
    """Ops of the graph hwnas cannot compress, lower and export; ``ops`` names each."""

    def __init__(self, ops: list[str]) -> None:
        shown = "; ".join(ops[:10]) + (f"; and {len(ops) - 10} more" if len(ops) > 10 else "")
        super().__init__(f"unsupported ops: {shown}")
        self.ops = ops


def op_name(target: Any) -> str:
    """``aten.conv2d.default`` for an ATen op; the qualified name of any other callable."""
    if hasattr(target, "_schema"):
        return str(target)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', repr(target))}"


def where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [p for p, _ in stack.values() if p]
    return f"node {node.name!r}" + (f" in module {paths[-1]!r}" if paths else "")


def arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    items = [int(x) for x in v]
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])
