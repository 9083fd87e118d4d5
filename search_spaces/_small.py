"""Small joint spaces: a plain CNN and an MLP, per-layer weight code x prune x rank x sparsity.

Sized for sklearn's digits and Fashion-MNIST on two cores. Each layer is a stage of depth 1.
Parameter names are ``<family>.depth``, ``<family>.layer<i>.width`` and so on, so the dashboard
groups them per family and layer.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from search_spaces._candidate import Candidate, Stage
from search_spaces._registry import register_space
from search_spaces._space import Dimension, SearchSpace, SpaceContext, TrialLike
from search_spaces._weights import (
    codebook_dim,
    kd_dims,
    sample_code,
    sample_distill,
    sparsity_dim,
    wbits_dim,
)

COMMON = [
    wbits_dim(
        ("ternary", 4, 8, 32),
        "weight code per layer: 32 / 16 = float, 8 / 4 / 2 = integers (2: 4 levels), ternary "
        "{-a, 0, a}, binary {-a, a} (per-channel a)",
    ),
    codebook_dim((0, 4)),
    Dimension(
        name="abits",
        allowed=(8, 16, 32),
        default=(8, 32),
        description="activation bits at the input of each layer with integer-coded weights "
        "(8 then runs as int8 x int8 -> int32 kernels); layers with float or codebook weights "
        "keep float activations",
    ),
    sparsity_dim((0.0, 0.5)),
    Dimension(
        name="prune",
        allowed=(0.0, 0.25, 0.5, 0.75),
        default=(0.0, 0.25, 0.5),
        description="structured prune ratio per layer (fraction of output channels removed)",
    ),
    Dimension(
        name="rank",
        allowed=(1.0, 0.5, 0.25, 0.125),
        default=(1.0, 0.5, 0.25),
        description="low-rank fraction of full rank per layer (1 = dense)",
    ),
    Dimension(name="head_wbits", allowed=(4, 8, 16, 32), default=(8, 32), description="head bits"),
    *kd_dims(),
]


def _sample_family(space: SearchSpace, trial: TrialLike, family: str, prefix: str) -> Candidate:
    c = space.choices
    depth = int(trial.suggest_categorical(f"{prefix}depth", c["depth"]))
    kernel = (
        int(trial.suggest_categorical(f"{prefix}kernel", c["kernel"])) if family == "cnn" else 3
    )
    size = min(space.context.input_shape[1:]) if family == "cnn" else 0
    stages = []
    for i in range(depth):
        p = f"{prefix}layer{i}."
        stride = 1
        if family == "cnn" and i < 2 and size >= 4:  # pool after the first two layers
            stride, size = 2, size // 2
        width = int(trial.suggest_categorical(p + "width", c["width"]))
        stages.append(
            Stage(
                width=width,
                kernel=kernel,
                stride=stride,
                **sample_code(trial, p, c),
                prune=float(trial.suggest_categorical(p + "prune", c["prune"])),
                rank=float(trial.suggest_categorical(p + "rank", c["rank"])),
            )
        )
    shape = space.context.input_shape
    if family == "mlp":
        shape = (math.prod(shape),)
    return Candidate(
        space=space.name,
        family=family,  # type: ignore[arg-type]
        input_shape=shape,
        num_classes=space.context.num_classes,
        stages=tuple(stages),
        head_wbits=int(trial.suggest_categorical(f"{prefix}head.wbits", c["head_wbits"])),
        distill=sample_distill(trial, c, prefix),
    )


def needs_image(name: str, context: SpaceContext) -> None:
    if len(context.input_shape) != 3:
        raise ValueError(
            f"space {name!r} needs image data (C, H, W); the dataset gives {context.input_shape}"
        )


@register_space("cnn_small")
class CnnSmall(SearchSpace):
    """Plain CNN: depth conv3x3/5x5 + BN + ReLU layers (pool after the first two), GAP, linear."""

    description: ClassVar[str] = __doc__ or ""

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            Dimension(
                name="depth", allowed=(1, 2, 3, 4), default=(2, 3), description="conv layers"
            ),
            Dimension(
                name="width",
                allowed=(8, 16, 24, 32, 48, 64, 96, 128),
                default=(16, 32, 64),
                description="output channels per layer",
            ),
            Dimension(name="kernel", allowed=(3, 5), default=(3,), description="conv kernel size"),
            *COMMON,
        ]

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        needs_image(cls.name, context)

    def sample(self, trial: TrialLike) -> Candidate:
        return _sample_family(self, trial, "cnn", "")


@register_space("mlp_small")
class MlpSmall(SearchSpace):
    """MLP on flattened inputs: depth linear + ReLU layers, linear head."""

    description: ClassVar[str] = __doc__ or ""

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return [
            Dimension(name="depth", allowed=(1, 2, 3, 4), default=(1, 2, 3), description="layers"),
            Dimension(
                name="width",
                allowed=(16, 32, 64, 128, 256, 512),
                default=(32, 64, 128, 256),
                description="features per hidden layer",
            ),
            *COMMON,
        ]

    def sample(self, trial: TrialLike) -> Candidate:
        return _sample_family(self, trial, "mlp", "")


@register_space("small_joint")
class SmallJoint(SearchSpace):
    """Both families in one study: ``family`` picks CNN or MLP, then that family's dimensions."""

    description: ClassVar[str] = __doc__ or ""

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        fam = Dimension(name="family", allowed=("cnn", "mlp"), default=("cnn", "mlp"))
        arch = [
            d.model_copy(update={"name": f"{fam_name}.{d.name}"})
            for fam_name, space in (("cnn", CnnSmall), ("mlp", MlpSmall))
            for d in space.dimensions()
            if d.name in ("depth", "width", "kernel")
        ]
        return [fam, *arch, *COMMON]

    @classmethod
    def check_context(cls, context: SpaceContext) -> None:
        needs_image(cls.name, context)

    def sample(self, trial: TrialLike) -> Candidate:
        family = str(trial.suggest_categorical("family", self.choices["family"]))
        return _sample_family(_FamilyView(self, family), trial, family, f"{family}.")


class _FamilyView(SearchSpace):
    """The choices of one family of :class:`SmallJoint`, under the unprefixed names."""

    def __init__(self, parent: SmallJoint, family: str) -> None:
        self.name = parent.name  # type: ignore[misc]
        self.context = parent.context
        self.choices = {
            k.split(".", 1)[1] if k.startswith(f"{family}.") else k: v
            for k, v in parent.choices.items()
        }

    @classmethod
    def dimensions(cls) -> list[Dimension]:
        return []

    def sample(self, trial: Any) -> Candidate:
        raise NotImplementedError
