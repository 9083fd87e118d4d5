"""The joint spaces: inverted-residual CNN, ResNet and MLP x per-stage (or per-block) compression.

Parameters are named ``stage<i>.<dim>`` (``stage1.width``, ``stage1.wbits``), or with
``granularity="block"`` ``stage<i>.block<j>.<dim>`` for the compression dimensions, so the
Optuna dashboard's parameter views group them by stage.
"""

from __future__ import annotations

import math
from typing import ClassVar

from search_spaces._candidate import Candidate, Compression, Stage
from search_spaces._registry import register_space
from search_spaces._small import needs_image
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

COMPRESSION = [
    wbits_dim(
        WBITS_ALLOWED,
        "weight code: 32 / 16 = float, 8 / 4 / 2 = per-channel integers (2: 4 levels), "
        "ternary {-a, 0, a}, binary {-a, a}",
    ),
    codebook_dim((0, 2, 4)),
    Dimension(
        name="abits",
        allowed=(8, 16, 32),
        default=(8, 16, 32),
        description="activation bits at each conv / linear input with integer-coded weights "
        "(32 = float)",
    ),
    sparsity_dim((0.0, 0.5, 0.75)),
    Dimension(
        name="prune",
        allowed=(0.0, 0.25, 0.5, 0.75),
        default=(0.0, 0.25, 0.5, 0.75),
        description="structured prune ratio (fraction of prunable channels removed)",
    ),
    Dimension(
        name="rank",
        allowed=(1.0, 0.5, 0.25, 0.125),
        default=(1.0, 0.5, 0.25, 0.125),
        description="low-rank fraction of full rank (1 = dense)",
    ),
    Dimension(
        name="head_wbits",
        allowed=(4, 8, 16, 32),
        default=(8, 32),
        description="stem and head weight bits",
    ),
    Dimension(
        name="head_abits",
        allowed=(8, 16, 32),
        default=(8, 32),
        description="stem and head activation bits",
    ),
    *kd_dims(),
]


class _StagedSpace(SearchSpace):
    """Shared sampling: ``num_stages`` stages, each with architecture + compression choices."""

    family: ClassVar[str]
    arch_dims: ClassVar[tuple[str, ...]]

    def _compression(self, trial: TrialLike, prefix: str) -> Compression:
        c = self.choices
        return Compression(
            **sample_code(trial, prefix, c),
            prune=float(trial.suggest_categorical(f"{prefix}prune", c["prune"])),
            rank=float(trial.suggest_categorical(f"{prefix}rank", c["rank"])),
        )

    def sample(self, trial: TrialLike) -> Candidate:
        c = self.choices
        n = int(trial.suggest_categorical("num_stages", c["num_stages"]))
        image = self.family != "mlp"
        size = min(self.context.input_shape[1:]) if image else 0
        stages = []
        for i in range(n):
            p = f"stage{i}."
            arch = {d: int(trial.suggest_categorical(p + d, c[d])) for d in self.arch_dims}
            stride = 1
            if image and i > 0 and size > 4:  # halve the resolution from the second stage on
                stride, size = 2, math.ceil(size / 2)
            depth = arch.pop("depth")
            if self.granularity == "block":
                blocks = tuple(self._compression(trial, f"{p}block{j}.") for j in range(depth))
                comp = blocks[0]
            else:
                blocks, comp = None, self._compression(trial, p)
            fields = {"depth": depth, "stride": stride, "blocks": blocks, **arch}
            stages.append(Stage.model_validate({**fields, **comp.model_dump()}))
        shape = self.context.input_shape if image else (math.prod(self.context.input_shape),)
        return Candidate(
            space=self.name,
            family=self.family,  # type: ignore[arg-type]
            input_shape=shape,
            num_classes=self.context.num_classes,
            stem_width=int(trial.suggest_categorical("stem_width", c["stem_width"]))
            if image
            else None,
            stages=tuple(stages),
            head_wbits=int(trial.suggest_categorical("head.wbits", c["head_wbits"])),
            head_abits=int(trial.suggest_categorical("head.abits", c["head_abits"])),
            distill=sample_distill(trial, c),
        )


@register_space("cnn_joint")
class CnnJoint(_StagedSpace):
    """MobileNetV2-style CNN: stem, stages of inverted-residual blocks (depth, width, expansion
    ratio, kernel 3/5), global pooling, linear head; for 1- or 3-channel images of any size."""

    description: ClassVar[str] = __doc__ or ""
    family = "mbv2"
    arch_dims = ("depth", "width", "expand", "kernel")

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            Dimension(
                name="num_stages", allowed=(1, 2, 3, 4, 5), default=(2, 3), description="stages"
            ),
            Dimension(name="stem_width", allowed=(8, 16, 24, 32), default=(8, 16)),
            Dimension(
                name="depth",
                allowed=(1, 2, 3, 4),
                default=(1, 2, 3),
                description="blocks per stage",
            ),
            Dimension(
                name="width", allowed=(8, 16, 24, 32, 48, 64, 96, 128), default=(16, 24, 32, 48, 64)
            ),
            Dimension(
                name="expand",
                allowed=(1, 2, 3, 4, 6),
                default=(1, 3, 6),
                description="expansion ratio",
            ),
            Dimension(
                name="kernel", allowed=(3, 5, 7), default=(3, 5), description="depthwise kernel"
            ),
            *COMPRESSION,
        ]

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        needs_image(cls.name, context)


@register_space("resnet_joint")
class ResnetJoint(_StagedSpace):
    """ResNet with basic blocks: stem, stages of two-conv residual blocks, pooling, linear head;
    pruning removes inner channels and whole residual streams consistently."""

    description: ClassVar[str] = __doc__ or ""
    family = "resnet"
    arch_dims = ("depth", "width", "kernel")

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            Dimension(
                name="num_stages", allowed=(1, 2, 3, 4), default=(2, 3), description="stages"
            ),
            Dimension(name="stem_width", allowed=(8, 16, 32), default=(16,)),
            Dimension(
                name="depth", allowed=(1, 2, 3), default=(1, 2), description="blocks per stage"
            ),
            Dimension(name="width", allowed=(16, 24, 32, 48, 64, 96, 128), default=(16, 32, 64)),
            Dimension(name="kernel", allowed=(3, 5), default=(3,), description="conv kernel"),
            *COMPRESSION,
        ]

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        needs_image(cls.name, context)


@register_space("mlp_joint")
class MlpJoint(_StagedSpace):
    """MLP on flattened features: stages of linear + ReLU layers, linear head."""

    description: ClassVar[str] = __doc__ or ""
    family = "mlp"
    arch_dims = ("depth", "width")

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            Dimension(
                name="num_stages", allowed=(1, 2, 3, 4), default=(1, 2, 3), description="stages"
            ),
            Dimension(name="depth", allowed=(1, 2), default=(1,), description="layers per stage"),
            Dimension(
                name="width", allowed=(32, 64, 128, 256, 512, 1024), default=(64, 128, 256, 512)
            ),
            *[d for d in COMPRESSION if d.name != "head_abits"],
            Dimension(name="head_abits", allowed=(8, 16, 32), default=(8, 32)),
        ]
