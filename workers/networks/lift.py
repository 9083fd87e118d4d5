"""An uploaded ``ExportedProgram`` raised back into a trainable module with real layers.

An exported graph holds its weights as inputs of ATen calls (``aten.conv2d(x, p_conv_weight,
...)``); ``ep.module()`` runs but neither trains (``.train()`` is refused) nor has an
``nn.Conv2d`` for compression passes and torch-pruning to act on, and ``torch.export.unflatten``
gives interpreter modules. :func:`lift` rebuilds the graph as a :class:`torch.fx.GraphModule`
whose convolutions, batch norms and linear layers are ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
``nn.Linear`` modules at the user's own module paths (``layer1.0.conv1``), with the uploaded
weights, and every other op kept as the same ATen call. Nothing is re-traced from Python: the
graph is the one uploaded, op for op.

Only ops hwnas can compress, lower to TVM and export are taken (:data:`FUNCTIONS` and the layer
ops); anything else is an :class:`UnsupportedOpError` naming the op, the node and the module it
sits in. A graph exported with a static batch size has that size baked into its reshapes
(``view(x, [1, -1])``); those are rewritten to take any batch (``[-1, 512]``), and the lifted
module is checked against the uploaded program, batch by batch (:func:`check_lifted`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from workers.networks.ops import (
    BN,
    CONV,
    DROPPED,
    FUNCTIONS,
    LINEAR,
    RESHAPES,
    NetworkError,
    UnsupportedOpError,
    arg,
    op_name,
    pair,
    where,
)


@dataclass
class Lifted:
    """The lifted module and what was learnt on the way."""

    module: fx.GraphModule
    input_shape: tuple[int, ...]  # one sample's shape
    num_classes: int
    static_batch: int | None  # the batch size the graph was exported with, when not dynamic
    layers: dict[str, str] = field(default_factory=dict)  # module path -> conv / bn / linear
    conv_bn: list[tuple[str, str]] = field(default_factory=list)


class _Lifter:
    def __init__(self, ep: torch.export.ExportedProgram) -> None:
        self.ep = ep
        sig = ep.graph_signature
        self.params: dict[str, str] = dict(sig.inputs_to_parameters)
        self.buffers: dict[str, str] = dict(sig.inputs_to_buffers)
        self.consts: dict[str, str] = dict(sig.inputs_to_lifted_tensor_constants)
        self.user_inputs = list(sig.user_inputs)
        self.state = {**ep.state_dict, **ep.constants}
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[str, Any] = {}
        self.free: dict[str, fx.Node] = {}
        self.layers: dict[str, str] = {}
        self.bad: list[str] = []
        self.batch: int | None = None

    # ------------------------------------------------------------------ tensors
    def _fqn(self, node: Any) -> str | None:
        if not isinstance(node, fx.Node):
            return None
        return (
            self.params.get(node.name) or self.buffers.get(node.name) or self.consts.get(node.name)
        )

    def _tensor(self, node: Any) -> torch.Tensor | None:
        fqn = self._fqn(node)
        return None if fqn is None else self.state[fqn].detach()

    def _free_tensor(self, node: fx.Node) -> fx.Node:
        """A weight used by an op that is not a layer: an attribute of the root."""
        if node.name not in self.free:
            fqn = self._fqn(node)
            assert fqn is not None
            attr = "_lifted_" + fqn.replace(".", "_")
            value = self.state[fqn].detach().clone()
            if node.name in self.params:
                self.root.register_parameter(attr, nn.Parameter(value))
            else:
                self.root.register_buffer(attr, value)
            self.free[node.name] = self.graph.get_attr(attr)
        return self.free[node.name]

    def _map(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a.name in self.env:
                return self.env[a.name]
            if self._fqn(a) is not None:
                return self._free_tensor(a)
            raise NetworkError(f"{where(a)} is used before it is computed")
        if isinstance(a, list | tuple):
            return type(a)(self._map(x) for x in a)
        if isinstance(a, dict):
            return {k: self._map(v) for k, v in a.items()}
        return a

    def _add_module(self, path: str, module: nn.Module, kind: str) -> str:
        if path in self.layers:
            return path  # the same layer called again (shared weights)
        parent_path, _, leaf = path.rpartition(".")
        parent = self.root
        for part in parent_path.split(".") if parent_path else []:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)
        self.layers[path] = kind
        return path

    # ------------------------------------------------------------------- layers
    def _conv(self, node: fx.Node, name: str) -> fx.Node | None:
        w = self._tensor(node.args[1])
        fqn = self._fqn(node.args[1])
        if w is None or fqn is None or w.dim() != 4:
            self.bad.append(
                f"{name} with a weight that is not a 2-D conv parameter ({where(node)})"
            )
            return None
        bias = self._tensor(arg(node, 2, "bias", None))
        stride = pair(arg(node, 3, "stride", [1, 1]))
        padding = arg(node, 4, "padding", [0, 0])
        dilation = pair(arg(node, 5, "dilation", [1, 1]))
        if name == "aten.convolution.default":
            if arg(node, 6, "transposed", False):
                self.bad.append(f"{name} (transposed) ({where(node)})")
                return None
            groups = int(arg(node, 8, "groups", 1))
        else:
            groups = int(arg(node, 6, "groups", 1))
        if isinstance(padding, str):
            self.bad.append(f"{name} with padding={padding!r} ({where(node)}): use numbers")
            return None
        conv = nn.Conv2d(
            w.shape[1] * groups,
            w.shape[0],
            (w.shape[2], w.shape[3]),
            stride,
            pair(padding),
            dilation,
            groups,
            bias=bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(w)
            if bias is not None:
                conv.bias.copy_(bias)  # type: ignore[union-attr]
        path = self._add_module(fqn.removesuffix(".weight"), conv, "conv")
        return self.graph.call_module(path, (self._map(node.args[0]),))

    def _bn(self, node: fx.Node, name: str) -> fx.Node | None:
        legit = name.endswith("no_training.default")
        weight, bias, mean, var = (self._tensor(node.args[i]) for i in range(1, 5))
        eps = float(arg(node, 6 if legit else 7, "eps", 1e-5))
        momentum = float(arg(node, 5 if legit else 6, "momentum", 0.1))
        owner = self._fqn(node.args[1]) or self._fqn(node.args[3])
        if mean is None or var is None or owner is None:
            self.bad.append(f"{name} without running statistics ({where(node)})")
            return None
        bn = nn.BatchNorm2d(mean.numel(), eps=eps, momentum=momentum, affine=weight is not None)
        with torch.no_grad():
            bn.running_mean.copy_(mean)  # type: ignore[union-attr]
            bn.running_var.copy_(var)  # type: ignore[union-attr]
            if weight is not None:
                bn.weight.copy_(weight)
                bn.bias.copy_(bias if bias is not None else torch.zeros_like(weight))
        path = owner.rsplit(".", 1)[0]
        return self.graph.call_module(self._add_module(path, bn, "bn"), (self._map(node.args[0]),))

    def _linear(self, node: fx.Node, name: str) -> fx.Node | None:
        w = self._tensor(node.args[1])
        fqn = self._fqn(node.args[1])
        if w is None or fqn is None or w.dim() != 2:
            self.bad.append(f"{name} with a weight that is not a parameter ({where(node)})")
            return None
        bias = self._tensor(arg(node, 2, "bias", None))
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if bias is not None:
                lin.bias.copy_(bias)
        path = self._add_module(fqn.removesuffix(".weight"), lin, "linear")
        return self.graph.call_module(path, (self._map(node.args[0]),))

    # -------------------------------------------------------------------- graph
    def _reshape_args(self, node: fx.Node) -> tuple[Any, ...]:
        """``view(x, [B, ...])`` with the exported static batch ``B`` -> ``[-1, ...]``."""
        args = list(node.args)
        src, shape = node.args[0], node.args[1]
        src_val = src.meta.get("val") if isinstance(src, fx.Node) else None
        out_val = node.meta.get("val")
        if (
            self.batch is not None
            and isinstance(shape, list | tuple)
            and src_val is not None
            and out_val is not None
            and int(src_val.shape[0]) == self.batch
            and int(out_val.shape[0]) == self.batch
        ):
            args[1] = [-1, *(int(d) for d in out_val.shape[1:])]
        return tuple(args)

    def run(self) -> Lifted:
        handlers: dict[str, Callable[[fx.Node, str], fx.Node | None]] = {
            **dict.fromkeys(CONV, self._conv),
            **dict.fromkeys(BN, self._bn),
            LINEAR: self._linear,
        }
        out_val: Any = None
        in_val: Any = None
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in self.user_inputs:
                    if in_val is not None:
                        self.bad.append("a second input: one image tensor is taken")
                        continue
                    in_val = node.meta.get("val")
                    self.env[node.name] = self.graph.placeholder("x")
                continue
            if node.op == "output":
                outs = node.args[0]
                if not isinstance(outs, list | tuple) or len(outs) != 1:
                    self.bad.append(f"{len(outs)} outputs: one tensor of class scores is taken")
                    continue
                out_val = outs[0].meta.get("val")
                self.graph.output(self._map(outs[0]))
                continue
            if node.op != "call_function":
                self.bad.append(f"{node.op} {node.target} ({where(node)})")
                continue
            name = op_name(node.target)
            if name in DROPPED:
                continue
            if name in handlers:
                self.env[node.name] = handlers[name](node, name)
                continue
            if node.target is operator.getitem:
                src = node.args[0]
                if isinstance(src, fx.Node) and op_name(src.target) in BN:
                    if node.args[1] == 0:
                        self.env[node.name] = self.env.get(src.name)
                    continue  # the legit op's saved mean / var: unused in eval
                self.env[node.name] = self.graph.call_function(
                    operator.getitem, self._map(node.args), {}
                )
                continue
            if name not in FUNCTIONS:
                self.bad.append(f"{name} ({where(node)})")
                self.env[node.name] = None  # refused: what reads it is judged on its own
                continue
            args = self._reshape_args(node) if name in RESHAPES else node.args
            self.env[node.name] = self.graph.call_function(
                node.target, self._map(args), self._map(node.kwargs)
            )
        if self.bad:
            raise UnsupportedOpError(self.bad)
        if in_val is None or out_val is None:
            raise NetworkError("the graph has no image input or no output")
        if out_val.dim() != 2:
            raise NetworkError(
                f"the output has shape {tuple(out_val.shape)}: a classifier gives (batch, classes)"
            )
        gm = fx.GraphModule(self.root, self.graph, class_name="Uploaded")
        gm.graph.lint()
        return Lifted(
            module=gm,
            input_shape=tuple(int(d) for d in in_val.shape[1:]),
            num_classes=int(out_val.shape[1]),
            static_batch=self.batch,
            layers=dict(self.layers),
            conv_bn=_conv_bn(gm),
        )


def _conv_bn(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(conv, BatchNorm) module pairs where the BN reads only that conv's output."""
    kinds = dict(gm.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(kinds[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(kinds[src.target], nn.Conv2d)
            and len(src.users) == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _static_batch(ep: torch.export.ExportedProgram) -> int | None:
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if val is not None and isinstance(val.shape[0], int):
                return int(val.shape[0])
            return None
    return None


def lift(ep: torch.export.ExportedProgram) -> Lifted:
    """Raise ``ep`` into a trainable GraphModule with real layers (see the module doc).

    Raises:
        UnsupportedOpError: ops outside what hwnas compresses, lowers and exports (each named
            with its node and module).
        NetworkError: not a one-image-in, class-scores-out graph.
    """
    lifter = _Lifter(ep)
    lifter.batch = _static_batch(ep)
    return lifter.run()


def check_lifted(
    ep: torch.export.ExportedProgram, lifted: Lifted, *, samples: int = 4, tol: float = 1e-4
) -> float:
    """Largest difference between the lifted module and ``ep`` on random inputs (each sample
    alone when the export had a static batch; a batch of ``samples`` otherwise), relative to
    the outputs' scale.

    Raises:
        NetworkError: the two differ beyond ``tol``.
    """
    torch.manual_seed(0)
    if lifted.static_batch is not None:  # whole exported batches of it
        b = lifted.static_batch
        samples = b * max(1, -(-samples // b))
    x = torch.randn(samples, *lifted.input_shape)
    lifted.module.eval()
    with torch.no_grad():
        got = lifted.module(x)
        ref_module = ep.module()
        if lifted.static_batch is not None:
            b = lifted.static_batch
            ref = torch.cat([ref_module(x[i : i + b]) for i in range(0, samples - b + 1, b)])
            got = got[: len(ref)]
        else:
            ref = ref_module(x)
    scale = float(ref.abs().max().clamp_min(1e-6))
    diff = float((got - ref).abs().max()) / scale
    if diff > tol:
        raise NetworkError(
            f"the graph raised into layers computes differently from the upload "
            f"(relative difference {diff:.2e}): please report this network"
        )
    return diff
