"""Export a compressed model as a bundle: TorchScript, ONNX, packed weights and a model card."""

from __future__ import annotations

import copy
import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

CARD_SCHEMA_VERSION = 2


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), example)
    traced.save(str(path))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX (opset 17) with a dynamic batch dimension; input ``input``, output ``logits``.

    Layers that deploy as int8 (an 8-bit activation quantizer, weights <= 8 bits) appear as
    QuantizeLinear / DequantizeLinear pairs (QDQ) on exactly their baked weights, so runtimes
    that fuse QDQ run them as int8 (ONNX Runtime: U8U8 QLinearConv, biases already on their
    int32 grid, see :func:`~workers.compress.quantize.snap_bias`); other 8-bit weights are QDQ
    too. An 8-bit activation quantizer in front of float (16 / 32-bit) weights is written as
    float ops, and other bit-widths as their float values; see
    :func:`~workers.compress.quantize.qdq_weights`.
    """
    from workers.compress.quantize import qdq_weights

    qdq = qdq_weights(copy.deepcopy(model)).eval()  # type: ignore[arg-type]
    torch.onnx.export(
        qdq,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def versions() -> dict[str, str]:
    import onnx

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    try:
        import tvm

        out["tvm"] = tvm.__version__
    except ImportError:  # pragma: no cover - tvm is a core dependency
        pass
    return out


def write_card(path: Path, card: dict[str, Any]) -> None:
    body = {"schema_version": CARD_SCHEMA_VERSION, **card, "versions": versions()}
    path.write_text(json.dumps(body, indent=2, sort_keys=True))
