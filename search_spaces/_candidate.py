"""The point in the joint space: architecture x per-stage (or per-block) bits x prune x rank."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2
WEIGHT_BITS = (2, 4, 8, 16, 32)
ACT_BITS = (8, 16, 32)
FAMILIES = ("cnn", "mlp", "mbv2", "resnet")


class Compression(BaseModel):
    """How one block (or every block of a stage) is compressed.

    Attributes:
        wbits: weight bits; 32 = float32, 16 = float16, lower = symmetric per-channel integers.
        abits: activation bits at the input of each conv/linear; 32 = float.
        prune: fraction of prunable channels removed (structured).
        rank: fraction of full rank kept by low-rank factorization; 1.0 keeps layers dense.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    wbits: int = 32
    abits: int = 32
    prune: float = Field(default=0.0, ge=0.0, le=0.9)
    rank: float = Field(default=1.0, gt=0.0, le=1.0)

    @field_validator("wbits")
    @classmethod
    def _wbits(cls, v: int) -> int:
        if v not in WEIGHT_BITS:
            raise ValueError(f"wbits must be one of {WEIGHT_BITS}, got {v}")
        return v

    @field_validator("abits")
    @classmethod
    def _abits(cls, v: int) -> int:
        if v not in ACT_BITS:
            raise ValueError(f"abits must be one of {ACT_BITS}, got {v}")
        return v


class Stage(Compression):
    """``depth`` blocks of one width; compression per stage, or per block via ``blocks``.

    ``kernel`` is the spatial kernel (CNN families), ``expand`` the inverted-residual expansion
    ratio (``mbv2``), ``stride`` 2 halves the resolution at the stage's first block (max-pool
    after the stage for the plain ``cnn`` family).
    """

    depth: int = Field(default=1, ge=1, le=8)
    width: int = Field(ge=1, le=4096)
    kernel: int = Field(default=3, ge=1, le=7)
    expand: int = Field(default=1, ge=1, le=8)
    stride: int = Field(default=1, ge=1, le=2)
    blocks: tuple[Compression, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Stage:
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        if self.blocks is not None and len(self.blocks) != self.depth:
            raise ValueError(f"blocks has {len(self.blocks)} entries for depth {self.depth}")
        return self

    def block(self, i: int) -> Compression:
        """Compression of block ``i`` (the stage's own when not set per block)."""
        if self.blocks is not None:
            return self.blocks[i]
        return Compression(wbits=self.wbits, abits=self.abits, prune=self.prune, rank=self.rank)


class Candidate(BaseModel):
    """A fully specified, compressible model: everything a worker needs to build it.

    Self-contained (input shape and class count included) so a probe can lower it without the
    dataset. ``structural_hash`` identifies it; ``arch_hash`` only the dense architecture, which
    is what a trained parent is cached by. Stem and head use ``head_wbits`` / ``head_abits``.
    Version-1 candidates (``layers`` instead of ``stages``) are upgraded on load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    space: str
    family: Literal["cnn", "mlp", "mbv2", "resnet"]
    input_shape: tuple[Annotated[int, Field(ge=1, le=65_536)], ...] = Field(
        min_length=1, max_length=3
    )
    num_classes: int = Field(ge=2, le=10_000)
    stem_width: int | None = Field(default=None, ge=1, le=4096)
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=16)
    head_wbits: int = 8
    head_abits: int = 32

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema_version") == 1 and "layers" in data:
            return _upgrade_v1(data)
        return data

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"candidate schema_version {v} is not supported (expected {SCHEMA_VERSION})"
            )
        return v

    @field_validator("head_wbits")
    @classmethod
    def _head_wbits(cls, v: int) -> int:
        return Compression(wbits=v).wbits

    @field_validator("head_abits")
    @classmethod
    def _head_abits(cls, v: int) -> int:
        return Compression(abits=v).abits

    @model_validator(mode="after")
    def _shape_matches_family(self) -> Candidate:
        image = self.family != "mlp"
        if image and len(self.input_shape) != 3:
            raise ValueError(f"{self.family} needs a (C, H, W) input_shape, got {self.input_shape}")
        if not image and len(self.input_shape) != 1:
            raise ValueError(f"mlp needs a (features,) input_shape, got {self.input_shape}")
        if self.family in ("mbv2", "resnet") and self.stem_width is None:
            raise ValueError(f"{self.family} needs stem_width")
        return self

    def arch_dict(self) -> dict[str, Any]:
        """The dense architecture only (what a trained parent is keyed by)."""
        keys = {"depth", "width"}
        if self.family != "mlp":
            keys |= {"kernel", "stride"}
        if self.family == "mbv2":
            keys.add("expand")
        return {
            "family": self.family,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem_width": self.stem_width if self.family in ("mbv2", "resnet") else None,
            "stages": [s.model_dump(include=keys) for s in self.stages],
        }

    def arch_hash(self) -> str:
        return _digest(self.arch_dict())

    def structural_hash(self) -> str:
        """Hash of everything that shapes the compressed model (not the space name).

        Fields a family does not use (``kernel`` for MLPs, ``expand`` outside ``mbv2``) and
        per-block entries equal to their stage's are normalised away first.
        """
        body = self.arch_dict()
        body["stages"] = [
            {**a, "blocks": [s.block(i).model_dump() for i in range(s.depth)]}
            for a, s in zip(body["stages"], self.stages, strict=True)
        ]
        body["head"] = [self.head_wbits, self.head_abits]
        return _digest(body)

    def block_count(self) -> int:
        return sum(s.depth for s in self.stages)

    def summary(self) -> str:
        """One short line for tables: ``mbv2 [2x24 k3 e4 w8a8 p.25 r.5, ...]``."""
        parts = []
        for s in self.stages:
            arch = f"{s.depth}x{s.width}" if s.depth > 1 else f"{s.width}"
            if self.family != "mlp":
                arch += f" k{s.kernel}"
            if self.family == "mbv2":
                arch += f" e{s.expand}"
            comp = "mixed" if s.blocks else f"w{s.wbits}a{s.abits} p{s.prune:g} r{s.rank:g}"
            parts.append(f"{arch} {comp}")
        return f"{self.family} [{', '.join(parts)}] head w{self.head_wbits}a{self.head_abits}"


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 (one layer per entry, pooling after the first two CNN layers) -> v2 stages."""
    out = {k: v for k, v in data.items() if k not in ("layers", "kernel", "schema_version")}
    size = min(data["input_shape"][1:]) if data.get("family") == "cnn" else 0
    stages = []
    for i, layer in enumerate(data["layers"]):
        stage = {**layer}
        if data.get("family") == "cnn":
            stage["kernel"] = data.get("kernel", 3)
            if i < 2 and size >= 4:
                stage["stride"], size = 2, size // 2
        stages.append(stage)
    out["stages"] = stages
    out["schema_version"] = SCHEMA_VERSION
    return out


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def conv_out_size(size: int, stride: int) -> int:
    return math.ceil(size / stride)
