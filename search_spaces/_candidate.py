"""The point in the joint space: architecture x per-stage (or per-block) weight format x prune
x rank x unstructured sparsity, plus the candidate's distillation settings.

Weight formats (``wformat``, with ``wbits`` the bits stored per weight):

- ``float``: 32 = float32, 16 = float16;
- ``int``: symmetric per-channel integers, levels [-(2^(b-1) - 1), 2^(b-1) - 1] for 4 and 8 bits;
  2 bits is a true 4-level code, levels {-2, -1, 0, 1} (two's complement);
- ``ternary``: {-a, 0, +a} per output channel, threshold-based (TWN), stored at 2 bits;
- ``binary``: {-a, +a} per output channel (a = mean |w|), stored at 1 bit;
- ``kmeans``: a per-layer codebook of 2^wbits float centroids (weight sharing), indices stored at
  ``wbits`` bits; computes as dense float weights.

Schema 2 called ternary ``wbits: 2``; version-2 candidates are upgraded on load with their
2-bit layers as ``ternary`` (what they computed), so nothing stored changes meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 3
HEAD_WEIGHT_BITS = (4, 8, 16, 32)
WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 8, 16, 32)
ACT_BITS = (8, 16, 32)
WeightFormat = Literal["float", "int", "ternary", "binary", "kmeans"]
FORMAT_BITS: dict[str, tuple[int, ...]] = {
    "float": (16, 32),
    "int": (2, 4, 8),
    "ternary": (2,),
    "binary": (1,),
    "kmeans": (1, 2, 3, 4, 5, 6, 8),
}
INT_CODED = ("int", "ternary", "binary")  # integer levels x per-channel scale: int8 kernels fit
MAX_SPARSITY = 0.95


def default_format(wbits: int) -> str:
    """The format a bare ``wbits`` means: float at 16 / 32, binary at 1, integers otherwise."""
    return "float" if wbits >= 16 else "binary" if wbits == 1 else "int"


FAMILIES = ("cnn", "mlp", "mbv2", "resnet")  # built by hwnas; "network" is an upload
NETWORK_NAME = r"^user/[a-z0-9][a-z0-9_-]{0,63}$"
DIGEST = r"^[0-9a-f]{64}$"
GROUP_NAME = r"^[A-Za-z0-9_.\-]{1,100}$"


class Compression(BaseModel):
    """How one block (or every block of a stage) is compressed.

    Attributes:
        wbits: bits stored per weight (see the module docstring for each format's levels).
        wformat: weight format; inferred from ``wbits`` when not given (float at 16 / 32,
            binary at 1, int otherwise).
        abits: activation bits at the input of each conv/linear; 32 = float.
        prune: fraction of prunable channels removed (structured).
        rank: fraction of full rank kept by low-rank factorization; 1.0 keeps layers dense.
        sparsity: fraction of each layer's weights zeroed by magnitude (unstructured); stored
            as a bitmask plus the surviving values, computed dense.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    wformat: WeightFormat = "float"  # before wbits: wbits is checked against it
    wbits: int = 32
    abits: int = 32
    prune: float = Field(default=0.0, ge=0.0, le=0.9)
    rank: float = Field(default=1.0, gt=0.0, le=1.0)
    sparsity: float = Field(default=0.0, ge=0.0, le=MAX_SPARSITY)

    @model_validator(mode="before")
    @classmethod
    def _infer_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("wformat") is None:
            bits = data.get("wbits", 32)
            data = {**data, "wformat": default_format(bits) if isinstance(bits, int) else "float"}
        return data

    @field_validator("wbits")
    @classmethod
    def _wbits(cls, v: int, info: ValidationInfo) -> int:
        if v not in WEIGHT_BITS:
            raise ValueError(f"wbits must be one of {WEIGHT_BITS}, got {v}")
        fmt = info.data.get("wformat")
        if fmt in FORMAT_BITS and v not in FORMAT_BITS[fmt]:
            raise ValueError(
                f"wformat {fmt!r} stores {list(FORMAT_BITS[fmt])} bits per weight, got {v}"
            )
        return v

    @field_validator("abits")
    @classmethod
    def _abits(cls, v: int) -> int:
        if v not in ACT_BITS:
            raise ValueError(f"abits must be one of {ACT_BITS}, got {v}")
        return v

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float, info: ValidationInfo) -> float:
        if v > 0 and info.data.get("wformat") == "binary":
            raise ValueError("binary weights have no zero: sparsity must be 0 with wformat binary")
        return v


class Distill(BaseModel):
    """How a compressed candidate is fine-tuned from its dense parent (when the job's training
    recipe has KD on).

    Loss: ``(1 - alpha) * CE + alpha * T^2 * KL`` on logits at ``temperature``, plus
    ``relation`` times the similarity-preserving loss (batch Gram matrices of each stage's
    output, Tung & Mori 2019) summed over the stages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=4.0, gt=0.0, le=20.0)
    relation: float = Field(default=0.0, ge=0.0, le=100_000.0)


class GroupCompression(Compression):
    """The compression of one layer group of an uploaded network (see ``search_spaces``'
    network space)."""

    name: str = Field(pattern=GROUP_NAME)


class NetworkRef(BaseModel):
    """Which upload a candidate compresses: its name and the archive's SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NETWORK_NAME)
    digest: str = Field(pattern=DIGEST)


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
        return Compression(**self.model_dump(include=set(Compression.model_fields)))


class Candidate(BaseModel):
    """A fully specified, compressible model: everything a worker needs to build it.

    Self-contained (input shape and class count included) so a probe can lower it without the
    dataset. ``structural_hash`` identifies it; ``arch_hash`` only the dense architecture, which
    is what a trained parent is cached by. Stem and head use ``head_wbits`` / ``head_abits``
    (float or integer formats only: kept at higher precision). ``distill`` (None: the job's
    recipe decides) sets how the candidate is distilled from its parent.
    Version-1 candidates (``layers`` instead of ``stages``) and version-2 ones (ternary written
    ``wbits: 2``) are upgraded on load.

    Family ``network`` is an uploaded network: ``network`` names it and ``groups`` holds one
    compression per layer group of it (no ``stages``; ``head_wbits`` / ``head_abits`` unused:
    the head is a group like any other).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    space: str
    family: Literal["cnn", "mlp", "mbv2", "resnet", "network"]
    input_shape: tuple[Annotated[int, Field(ge=1, le=65_536)], ...] = Field(
        min_length=1, max_length=3
    )
    num_classes: int = Field(ge=2, le=10_000)
    stem_width: int | None = Field(default=None, ge=1, le=4096)
    stages: tuple[Stage, ...] = Field(default=(), max_length=16)
    network: NetworkRef | None = None
    groups: tuple[GroupCompression, ...] | None = Field(default=None, min_length=1, max_length=16)
    head_wbits: int = 8
    head_abits: int = 32
    distill: Distill | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema_version") == 1 and "layers" in data:
            data = _upgrade_v1(data)
        if isinstance(data, dict) and data.get("schema_version") == 2:
            data = _upgrade_v2(data)
        return data

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"candidate schema_version {v} is not supported (expected {SCHEMA_VERSION})"
            )
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: tuple[Stage, ...], info: ValidationInfo) -> tuple[Stage, ...]:
        if not v and info.data.get("family") != "network":
            raise ValueError("stages should have at least 1 item (every built-in family has)")
        return v

    @field_validator("head_wbits")
    @classmethod
    def _head_wbits(cls, v: int) -> int:
        if v not in HEAD_WEIGHT_BITS:
            raise ValueError(f"head_wbits must be one of {HEAD_WEIGHT_BITS}, got {v}")
        return v

    @field_validator("head_abits")
    @classmethod
    def _head_abits(cls, v: int) -> int:
        return Compression(abits=v).abits

    @model_validator(mode="after")
    def _shape_matches_family(self) -> Candidate:
        if self.family == "network":
            if self.network is None or not self.groups or self.stages:
                raise ValueError("a network candidate has network and groups, and no stages")
            if len({g.name for g in self.groups}) != len(self.groups):
                raise ValueError("group names must be unique")
            return self
        if self.network is not None or self.groups is not None:
            raise ValueError(f"{self.family} has stages: network and groups are for uploads")
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
        if self.network is not None:
            return {
                "family": "network",
                "network": self.network.digest,
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
            }
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
        per-block entries equal to their stage's are normalised away first, and so are the
        fields schema 3 added where they hold what schema 2 meant (the format a bare ``wbits``
        implies, no sparsity, no candidate-level distillation), so hashes stored before stay
        valid.
        """
        body = self.arch_dict()
        if self.groups is not None:
            body["groups"] = [{"name": g.name, **_hashed(g)} for g in self.groups]
            if self.distill is not None:
                body["distill"] = self.distill.model_dump()
            return _digest(body)
        body["stages"] = [
            {**a, "blocks": [_hashed(s.block(i)) for i in range(s.depth)]}
            for a, s in zip(body["stages"], self.stages, strict=True)
        ]
        body["head"] = [self.head_wbits, self.head_abits]
        if self.distill is not None:
            body["distill"] = self.distill.model_dump()
        return _digest(body)

    def block_count(self) -> int:
        return len(self.groups) if self.groups is not None else sum(s.depth for s in self.stages)

    def summary(self) -> str:
        """One short line for tables: ``mbv2 [2x24 k3 e4 w8a8 p.25 r.5, ...]``; for an upload
        ``net user/r18 [layer1 w8a8 p0.25 r0.5, ...]``."""
        if self.network is not None and self.groups is not None:
            comps = [f"{g.name} {_code(g)}" for g in self.groups]
            return f"net {self.network.name} [{', '.join(comps)}]"
        parts = []
        for s in self.stages:
            arch = f"{s.depth}x{s.width}" if s.depth > 1 else f"{s.width}"
            if self.family != "mlp":
                arch += f" k{s.kernel}"
            if self.family == "mbv2":
                arch += f" e{s.expand}"
            parts.append(f"{arch} {'mixed' if s.blocks else _code(s)}")
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
    out["schema_version"] = 2  # then upgraded as any version-2 candidate
    return out


def _upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v3: a 2-bit layer was ternary ({-1, 0, 1} x scale); say so by name."""

    def comp(c: dict[str, Any]) -> dict[str, Any]:
        if c.get("wbits") == 2 and c.get("wformat") is None:
            return {**c, "wformat": "ternary"}
        return c

    stages = []
    for st in data.get("stages", []):
        if isinstance(st, dict):
            st = comp(st)
            if isinstance(st.get("blocks"), list | tuple):
                st = {**st, "blocks": [comp(b) if isinstance(b, dict) else b for b in st["blocks"]]}
        stages.append(st)
    if data.get("head_wbits") == 2:
        raise ValueError(
            "candidate schema 2 with head_wbits 2 (ternary head) cannot be upgraded: schema 3 "
            f"keeps stem and head at {HEAD_WEIGHT_BITS} bits"
        )
    return {**data, "stages": stages, "schema_version": SCHEMA_VERSION}


def _hashed(c: Compression) -> dict[str, Any]:
    d = c.model_dump()
    if d["wformat"] == default_format(d["wbits"]):
        del d["wformat"]
    if not d["sparsity"]:
        del d["sparsity"]
    return d


def _code(c: Compression) -> str:
    """``w8a8 p0.25 r0.5`` (and `` s0.5`` when sparse)."""
    out = f"{_wname(c)}a{c.abits} p{c.prune:g} r{c.rank:g}"
    return out + (f" s{c.sparsity:g}" if c.sparsity else "")


def _wname(c: Compression) -> str:
    if c.wformat in ("ternary", "binary"):
        return f"{c.wformat} "
    if c.wformat == "kmeans":
        return f"km{c.wbits} "
    return f"w{c.wbits}"


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def conv_out_size(size: int, stride: int) -> int:
    return math.ceil(size / stride)
