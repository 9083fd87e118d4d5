"""Networks built from Candidates, annotated for compression."""

from workers.models._blocks import (
    BasicBlock,
    CompressibleNet,
    ConvBNAct,
    DenseBlock,
    InvertedResidual,
    Net,
    annotate,
)
from workers.models._build import assign_bits, build_model, count_params, example_input
from workers.models._spec import (
    ChannelGroup,
    LayerSpec,
    Member,
    conv_like,
    get_module,
    set_module,
    spec_of,
    weight_layers,
)

__all__ = [
    "BasicBlock",
    "ChannelGroup",
    "CompressibleNet",
    "ConvBNAct",
    "DenseBlock",
    "InvertedResidual",
    "LayerSpec",
    "Member",
    "Net",
    "annotate",
    "assign_bits",
    "build_model",
    "conv_like",
    "count_params",
    "example_input",
    "get_module",
    "set_module",
    "spec_of",
    "weight_layers",
]
