"""Hardware profile schema: a TVM target, how to measure on it, what it supports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROFILE_SCHEMA_VERSION = 1


def check_address(value: str) -> str:
    """``value`` if it is ``host:port`` with a port in 1-65535.

    Raises:
        ValueError: anything else.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


class Measure(BaseModel):
    """Where and how latency is measured."""

    model_config = ConfigDict(extra="forbid")

    via: Literal["local", "rpc"] = "local"
    tracker: str | None = Field(default=None, description="host:port of a TVM RPC tracker")
    key: str | None = Field(default=None, description="device key at the tracker")
    host: str | None = Field(default=None, description="host:port of a direct TVM RPC server")
    session_timeout_s: int = Field(default=120, ge=1, le=3600)
    threads: int = Field(default=1, ge=1, le=256)
    warmup: int = Field(default=5, ge=0, le=1000)
    number: int = Field(default=20, ge=1, le=10_000, description="runs per sample (at least)")
    repeat: int = Field(default=15, ge=3, le=1000, description="samples (timing rounds)")
    min_repeat_ms: float = Field(
        default=10.0,
        ge=0,
        le=10_000,
        description="a sample lasts at least this long (more runs for fast models: a few-µs "
        "model is mostly timer noise at 20 runs)",
    )
    max_cv: float = Field(default=0.15, gt=0, le=10)
    emulated: bool = Field(
        default=False,
        description="the device is emulated (e.g. an aarch64 board under qemu-user): its "
        "timings check that code runs, they are not the board's latency",
    )

    @field_validator("tracker", "host")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v)

    @model_validator(mode="after")
    def _rpc_needs_address(self) -> Measure:
        if self.via == "rpc" and not (self.tracker and self.key) and not self.host:
            raise ValueError("measure.via = 'rpc' needs tracker + key, or host")
        return self


Int8Dot = Literal["auto", "none", "vnni", "amx", "sdot"]


class Supports(BaseModel):
    """Precisions the device computes natively (they decide each layer's deployed precision).

    ``int8_dot`` is the int8 dot-product instruction the int8 kernels are built for: ``auto``
    (what the probing CPU has, or for a board the target's ``mattr``), ``none``, ``vnni``
    (x86 AVX-512 VNNI), ``amx`` (x86 AMX-INT8) or ``sdot`` (ARMv8.2 dot product); see
    :mod:`hw_profiles.isa`. ``true`` / ``false`` from older profiles read as ``auto`` / ``none``.
    """

    model_config = ConfigDict(extra="forbid")

    int8_dot: Int8Dot = "none"
    fp16: bool = False

    @field_validator("int8_dot", mode="before")
    @classmethod
    def _legacy_bool(cls, v: object) -> object:
        if isinstance(v, bool):
            return "auto" if v else "none"
        return v


class Profile(BaseModel):
    """One deployment target, loaded from ``hw_profiles/<vendor>/<device>.toml``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = PROFILE_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9_-]+/[a-z0-9_.-]+$")
    description: str = ""
    target: dict[str, Any]
    measure: Measure = Measure()
    supports: Supports = Supports()
    cross_compiler: str | None = Field(default=None, description="cc used by export_library")
    requires: str = Field(
        default="", description="what measuring on this profile needs (shown to users)"
    )

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if self.schema_version != PROFILE_SCHEMA_VERSION:
            raise ValueError(
                f"profile schema_version {self.schema_version} is not supported "
                f"(expected {PROFILE_SCHEMA_VERSION})"
            )
        if "kind" not in self.target:
            raise ValueError("target.kind is required (e.g. 'llvm', 'cuda')")
        self._check_int8_dot()
        return self

    def _check_int8_dot(self) -> None:
        """An instruction the target cannot emit is a profile error, named."""
        dot = self.supports.int8_dot
        kind = str(self.target["kind"])
        triple = str(self.target.get("mtriple", ""))
        arm = triple.startswith(("aarch64", "arm64"))
        if dot in ("vnni", "amx") and (kind != "llvm" or arm):
            raise ValueError(f"supports.int8_dot = {dot!r} needs an x86 llvm target")
        if dot == "sdot" and not (arm and "+dotprod" in self.target.get("mattr", [])):
            raise ValueError(
                "supports.int8_dot = 'sdot' needs an aarch64 target with '+dotprod' in target.mattr"
            )

    @property
    def is_local(self) -> bool:
        return self.measure.via == "local"
