"""The space of an uploaded network: its compressible layer groups x weight code x prune x rank
x sparsity, plus distillation.

An upload is described once (:class:`NetworkDescription`, made by the worker that checks it):
its input, classes, and its weight layers gathered into at most :data:`MAX_GROUPS` groups that
follow the module tree (``conv1``, ``layer1`` ... ``layer4``, ``fc`` for a ResNet-18; runs of
consecutive blocks for a MobileNetV2). Each group draws ``<group>.wbits`` (or
``<group>.codebook_bits``), ``<group>.abits``, ``<group>.sparsity``, ``<group>.prune`` (where the
group owns prunable channels: channels coupled by residual adds, concatenations and depthwise
convolutions are pruned together, wherever their layers sit) and ``<group>.rank`` (where it has
a layer low-rank factorization can shrink). The dimensions are the built-in spaces' own, so
``space_overrides`` narrow them the same way for every group, and ``fixed_params`` pins one
group's choice (``{"layer4.prune": 0.5}``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from search_spaces._candidate import (
    DIGEST,
    GROUP_NAME,
    NETWORK_NAME,
    Candidate,
    GroupCompression,
    NetworkRef,
)
from search_spaces._registry import register_space
from search_spaces._space import Dimension, SearchSpace, SpaceContext, TrialLike
from search_spaces._weights import (
    WBITS_ALLOWED,
    codebook_dim,
    kd_dims,
    sample_code,
    sample_distill,
    sparsity_dim,
    wbits_dim,
)

MAX_GROUPS = 8
# what each layer group draws (prune where it is prunable, rank where it is factorizable)
GROUP_DIMENSIONS = ("codebook_bits", "wbits", "abits", "sparsity", "prune", "rank")


class LayerGroup(BaseModel):
    """Weight layers of an uploaded network that share their compression choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=GROUP_NAME, examples=["layer1"])
    layers: tuple[str, ...] = Field(min_length=1, description="module paths of its layers")
    params: int = Field(ge=0, description="weights in its layers")
    prunable: bool = Field(description="owns channels structured pruning can remove")
    factorizable: bool = Field(description="has a layer low-rank factorization can shrink")


class Normalization(BaseModel):
    """What the uploaded model expects of its input, from images stored in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["unit", "mean_std"] = Field(
        default="unit",
        description="unit: pixels / 255, in [0, 1] (what hwnas datasets hold); mean_std: "
        "(pixels / 255 - mean) / std per channel",
    )
    mean: tuple[float, ...] | None = None
    std: tuple[Annotated[float, Field(gt=0)], ...] | None = None

    def describe(self) -> str:
        if self.kind == "unit":
            return "pixels / 255 (inputs in [0, 1])"
        mean, std = list(self.mean or ()), list(self.std or ())
        return f"(pixels / 255 - mean) / std with mean {mean}, std {std}"


class NetworkDescription(BaseModel):
    """An uploaded network as a space sees it (the worker derives it from the graph)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NETWORK_NAME)
    digest: str = Field(pattern=DIGEST, description="SHA-256 of the uploaded archive")
    input_shape: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1, max_length=3)
    num_classes: int = Field(ge=2)
    normalization: Normalization = Normalization()
    groups: tuple[LayerGroup, ...] = Field(min_length=1, max_length=MAX_GROUPS + 2)
    layers: int = Field(ge=1, description="conv / linear layers")
    params: int = Field(ge=0)
    ops: dict[str, int] = Field(default_factory=dict, description="ATen ops and their counts")


@register_space("network", per_upload=True)
class NetworkSpace(SearchSpace):
    """An uploaded network's layer groups (``user/<name>``, the job's ``network``), each with a
    weight code, activation bits, structured prune ratio, low-rank fraction and sparsity; the
    uploaded weights are the parent (no parent training) and its teacher."""

    description: ClassVar[str] = __doc__ or ""

    def __init__(
        self,
        context: SpaceContext,
        overrides: Any = None,
        granularity: Literal["stage", "block"] = "stage",
        network: NetworkDescription | None = None,
    ) -> None:
        if network is None:
            raise ValueError("space 'network' needs the job's network (user/<name>)")
        self.network = network
        super().__init__(context, overrides, granularity)

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            wbits_dim(
                (8, 32),
                "weight code per group: float (32 / 16), integers (8 / 4 / 2), ternary, binary",
            ),
            codebook_dim((0,)),
            Dimension(
                name="abits",
                allowed=(8, 16, 32),
                default=(8, 32),
                description="activation bits at each layer with integer-coded weights (8: int8 "
                "kernels)",
            ),
            sparsity_dim((0.0, 0.5)),
            Dimension(
                name="prune",
                allowed=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75),
                default=(0.0, 0.25, 0.5, 0.75),
                description="structured prune ratio of the group's channels (coupled channels "
                "pruned together by dependency analysis)",
            ),
            Dimension(
                name="rank",
                allowed=(1.0, 0.5, 0.25, 0.125),
                default=(1.0, 0.5, 0.25),
                description="low-rank fraction of full rank for the group's factorizable layers",
            ),
            *kd_dims(relation=(0.0,)),
        ]

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        return None  # the network's own input and classes are checked against the dataset

    def sample(self, trial: TrialLike) -> Candidate:
        c = self.choices
        groups = []
        for g in self.network.groups:
            p = f"{g.name}."
            code = sample_code(trial, p, c)
            prune = float(trial.suggest_categorical(p + "prune", c["prune"])) if g.prunable else 0.0
            rank = (
                float(trial.suggest_categorical(p + "rank", c["rank"])) if g.factorizable else 1.0
            )
            groups.append(GroupCompression(name=g.name, **code, prune=prune, rank=rank))
        return Candidate(
            space=self.name,
            family="network",
            network=NetworkRef(name=self.network.name, digest=self.network.digest),
            input_shape=self.network.input_shape,
            num_classes=self.network.num_classes,
            groups=tuple(groups),
            stages=(),
            head_wbits=32,
            head_abits=32,
            distill=sample_distill(trial, c),
        )


__all__ = [
    "GROUP_DIMENSIONS",
    "MAX_GROUPS",
    "WBITS_ALLOWED",
    "LayerGroup",
    "NetworkDescription",
    "NetworkSpace",
    "Normalization",
]
