"""The point in the joint space: architecture x per-layer bits x prune ratio x rank."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
WEIGHT_BITS = (2, 4, 8, 16, 32)


class LayerChoice(BaseModel):
    """One hidden layer: its dense width and how it is compressed.

    Attributes:
        width: output channels (conv) or features (linear) of the dense layer.
        wbits: weight bit-width; 32 means float32, lower means symmetric per-channel integers.
        prune: fraction of output channels removed (structured, by the chosen criterion).
        rank: fraction of full rank kept by truncated SVD; 1.0 keeps the layer dense.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(ge=1, le=4096)
    wbits: int = 32
    prune: float = Field(default=0.0, ge=0.0, le=0.9)
    rank: float = Field(default=1.0, gt=0.0, le=1.0)

    @field_validator("wbits")
    @classmethod
    def _known_bits(cls, v: int) -> int:
        if v not in WEIGHT_BITS:
            raise ValueError(f"wbits must be one of {WEIGHT_BITS}, got {v}")
        return v


class Candidate(BaseModel):
    """A fully specified, compressible model: everything a worker needs to build it.

    The candidate is self-contained (input shape and class count included) so a probe can
    lower it without touching the dataset. ``structural_hash`` identifies it; ``arch_hash``
    identifies only the dense architecture, which is what a trained parent is cached by.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    space: str
    family: Literal["cnn", "mlp"]
    input_shape: tuple[Annotated[int, Field(ge=1, le=65_536)], ...] = Field(
        min_length=1, max_length=3
    )
    num_classes: int = Field(ge=2, le=10_000)
    kernel: int = Field(default=3, ge=1, le=7)
    layers: tuple[LayerChoice, ...] = Field(min_length=1, max_length=16)
    head_wbits: int = 8

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
    def _head_bits(cls, v: int) -> int:
        if v not in WEIGHT_BITS:
            raise ValueError(f"head_wbits must be one of {WEIGHT_BITS}, got {v}")
        return v

    @model_validator(mode="after")
    def _shape_matches_family(self) -> Candidate:
        if self.family == "cnn" and len(self.input_shape) != 3:
            raise ValueError(f"cnn needs a (C, H, W) input_shape, got {self.input_shape}")
        if self.family == "mlp" and len(self.input_shape) != 1:
            raise ValueError(f"mlp needs a (features,) input_shape, got {self.input_shape}")
        if self.family == "cnn" and self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        return self

    def arch_dict(self) -> dict[str, Any]:
        """The dense architecture only (what a trained parent is keyed by)."""
        return {
            "family": self.family,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "kernel": self.kernel if self.family == "cnn" else None,
            "widths": [layer.width for layer in self.layers],
        }

    def arch_hash(self) -> str:
        return _digest(self.arch_dict())

    def structural_hash(self) -> str:
        """Hash of everything that shapes the compressed model (not the space name).

        MLPs have no convolution, so their ``kernel`` field is left out.
        """
        exclude = {"space"} if self.family == "cnn" else {"space", "kernel"}
        return _digest(self.model_dump(mode="json", exclude=exclude))

    def summary(self) -> str:
        """One short line for tables: ``cnn k3 [32/8b/p.25/r.5, ...]``."""
        parts = [
            f"{layer.width}/{layer.wbits}b/p{layer.prune:g}/r{layer.rank:g}"
            for layer in self.layers
        ]
        head = f"k{self.kernel} " if self.family == "cnn" else ""
        return f"{self.family} {head}[{', '.join(parts)}] head {self.head_wbits}b"


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
